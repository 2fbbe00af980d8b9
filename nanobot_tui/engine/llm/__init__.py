"""Talking to models: the OpenAI-compatible and Anthropic clients."""
