"""Benchmarks: side-by-side timings that print a comparison table (``python -m tools.bench.<name>``)."""
