"""Textual screens and widgets. Talks to the engine through its async API and messages."""
