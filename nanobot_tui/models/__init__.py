"""Which GGUF files nanobot knows, whether one fits this machine, and fetching it."""
