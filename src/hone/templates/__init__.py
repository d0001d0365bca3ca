"""Chat templates: declarative built-ins, user-registered ones, and `auto` (the tokenizer's own)."""
from .base import TEMPLATES, Template, TemplateError, get_template, register_template

__all__ = ["TEMPLATES", "Template", "TemplateError", "get_template", "register_template"]
