"""The plan behind `nanobot setup` and `nanobot doctor`: hardware, a model per slot, checks.
No UI."""
