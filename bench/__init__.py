"""Benchmarks: `python -m bench` prints the figures (speed and memory targets)."""
