"""Using a model: the generation engine (shared by chat, batch inference and the server) and chat."""
