"""Benchmarks (`make bench`): every `*_bench.py` here is a script `run_all.py` runs."""
