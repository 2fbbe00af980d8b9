"""Samplers: where a step's samples come from (a model, a simulation, a seeded simulation)."""
