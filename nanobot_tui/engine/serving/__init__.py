"""Model serving: llama.cpp hosts, the server manager, slots resolved to servers, providers."""
