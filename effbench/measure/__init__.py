"""Measurement: timing loops and statistics, memory, energy, work counts and quality."""
