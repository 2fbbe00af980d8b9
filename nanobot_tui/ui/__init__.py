"""The Textual app: screens/, panes/ and widgets/ over the engine, which they call directly
(in workers) and hear from through messages."""
