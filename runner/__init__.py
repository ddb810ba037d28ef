"""The run machinery `main.py` is built from: run directories, data for a run, checkpoints, evaluation
sweeps, reports and device placement. Nothing here reads flags; `scripts/` (launchers) sit above it."""
