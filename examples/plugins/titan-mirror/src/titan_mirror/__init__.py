"""Example third-party titan plugins, written from docs/plugins.md alone."""
