"""Run machinery used by `main.py` (run directory, checkpoints, evaluation sweeps, reports) and the table runner."""
