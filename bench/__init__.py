"""Side-by-side benchmarks for testbed: `make bench` (python -m bench)."""
