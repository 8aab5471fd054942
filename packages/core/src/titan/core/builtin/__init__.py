"""Core's own optional pieces, shipped as plugins through the same entry-point door."""
