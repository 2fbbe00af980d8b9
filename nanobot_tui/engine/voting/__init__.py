"""MAKER voting: the maths, first-to-ahead-by-k, samplers, calibration, domains, and the
in-memory runner."""
