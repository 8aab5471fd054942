"""titan-example-zloss: the z-loss regulariser as a titan plugin (see plugin.py)."""
