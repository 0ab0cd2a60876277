"""Research over many runs: sweeps of task combinations (``sweep``)."""
