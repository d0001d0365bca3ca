"""Built-in declarative templates (register_template calls only)."""
