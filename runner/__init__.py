"""The run machinery `main.py` is built from: flags' values → a resolved run (`config`), the train loop
(`train_loop`), evaluation of a saved run (`eval_only`), and what they use: run directories, data for a run,
checkpoints, evaluation sweeps, FLOPs, reports and device placement. Nothing here reads flags; `scripts/`
(launchers) sit above it.

`runner.train(plan)` and `runner.evaluate(plan)` (plan = `runner.config.resolve(runner.config.Options(...))`)
are imported on first use, so light users of a submodule (scripts.table reads run dirs) import no JAX.
"""


def __getattr__(name):
    if name == "train":
        from runner.train_loop import train

        return train
    if name == "evaluate":
        from runner.eval_only import evaluate

        return evaluate
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
