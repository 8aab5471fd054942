"""titan.optims: optimizations as plugins, one module each, applied in a fixed phase order."""
