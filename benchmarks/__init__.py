"""Ratio benchmarks against the torch reference; run with ``python -m benchmarks``."""
