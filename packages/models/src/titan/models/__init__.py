"""titan.models: Llama 2 and Llama 3, registered with titan through the `llama` plugin."""
