"""Chat templates: declarative built-ins, user-registered ones, and `auto` (the tokenizer's own)."""
from .base import AUTO_NAMES, TEMPLATES, Template, TemplateError, get_template, register_template
from .declarative import DeclarativeTemplate, ToolFormat

__all__ = ["AUTO_NAMES", "TEMPLATES", "DeclarativeTemplate", "Template", "TemplateError", "ToolFormat", "get_template",
           "register_template"]
