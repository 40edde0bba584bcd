"""Benchmarks: ``python -m bench.run`` measures the gateway against a direct upstream (see BENCHMARKS.md)."""
