"""Benchmarks and load, chaos and soak runs (scripts; the always-on subsets live in tests/bench)."""
