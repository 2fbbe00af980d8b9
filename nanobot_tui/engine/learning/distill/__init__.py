"""Distillation: LoRA adapters trained on nanobot's own verified work, served by the same
llama.cpp server and kept only when an A/B test on held-out steps says they help."""
