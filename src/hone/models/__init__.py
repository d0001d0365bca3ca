"""Models: built-in names, GGUF conversion, loading, and making them trainable."""
