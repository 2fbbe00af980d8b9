"""nanobot: a local-first AI workbench in the terminal."""

__version__ = "0.1.0"
