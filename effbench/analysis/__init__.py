"""Looking inside a model: per-layer profiles, precision sensitivity and the mixed-precision advisor."""
