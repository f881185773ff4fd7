"""Benchmarks (run with `python -m benchmarks.run`); ratios are measured within one run."""
