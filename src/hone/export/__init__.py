"""`hone export`: a run's weights as a plain Hugging Face directory, a GGUF file and an Ollama Modelfile."""
