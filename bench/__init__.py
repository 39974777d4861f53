"""Benchmarks: they measure and print numbers; tests assert behaviour."""
