"""titan.backends: where a job runs. One module per backend, registered as a plugin."""
