"""resc's benchmark: `python -m bench` (full) or `python -m bench --quick` (a few seconds,
checks correctness only)."""
