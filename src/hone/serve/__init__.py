"""`hone serve`: an OpenAI-compatible HTTP server for a base model and its adapters, picked per request by name."""
