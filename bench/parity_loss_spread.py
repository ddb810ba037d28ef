"""Per-batch spread of a trained run's losses: how one batch's loss compares with a mean over many batches.

    python -m bench.parity_loss_spread --run_dir=<run dir> [--batches=500] [--step=<checkpoint step>] [--out=<json>]

Our train.csv logs each loss as the mean over a chunk of 500 updates; the official code logs one batch's. This
rebuilds the run's agent from its config.json as `main.py --eval_only` does (runner.config.resolve), restores a
checkpoint (default: the latest), loads the run's training dataset as main.py does (runner.run_data) and draws
`--batches` independent batches with the run's own sampler and batch size. For each batch it computes the losses
with the agent's `validate` (the training losses at that state, without an update; the flow-matching noise drawn
anew per batch). It prints, and with `--out` writes, as JSON per loss (critic/loss, value/loss, policy/bc_loss):
mean, median, std, quantiles, max, the fraction of batches below the mean, the distribution of the mean of 10
and of 30 randomly chosen batches (as 10 or 30 single-batch logged values averaged; 2000 resamples; `--out` also
holds every batch's values), and for comparison the run's own logged training values (train.csv) over steps
21k-30k.
"""

import argparse
import json
import os
import time

import jax
import numpy as np

import agents
from runner.checkpoints import Checkpoints
from runner.config import Options, resolve
from runner.devices import placement
from runner.run_data import check_data_fits, device_dataset, load_data, make_sampler
from runner.run_dir import read_csv

LOSSES = ("critic/loss", "value/loss", "policy/bc_loss")
QUANTILES = (5, 25, 50, 75, 95, 99)
GROUPS = (10, 30)  # 10 logged values per seed over 21k-30k; 30 over three seeds (docs/parity.md)


def restored_run(run_dir: str, step: int | None):
    """(agent, its config, state at `step` or the latest checkpoint, step, device dataset, sampler) of a saved run."""
    with open(os.path.join(run_dir, "config.json")) as f:
        agent_name = json.load(f)["agent"]
    plan = resolve(Options(agent=agent_name, eval_only=True, restore=run_dir, data="local", progress=False))
    env, train_data, _ = load_data(plan.env_name, plan.run, plan.data, plan.progress)
    env.close()
    check_data_fits(train_data, plan.config)
    dataset = device_dataset(train_data, plan.config, placement(1, plan.config.batch_size))
    sample = make_sampler(plan.config, plan.env_name)
    agent = agents.make(plan.agent_name, plan.config)
    # Only the template's structure matters: the restore replaces every value.
    init_key, data_key = jax.random.split(jax.random.PRNGKey(0))
    template = jax.jit(agent.init)(init_key, sample(dataset, data_key))
    checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"), read_only=True)
    step = checkpoints.latest_step() if step is None else step
    state = checkpoints.restore(step, template)
    checkpoints.close()
    return agent, plan.config, state, step, dataset, sample


def per_batch_losses(agent, state, dataset, sample, batches: int, seed: int) -> dict:
    """{metric: [batches] array}: `agent.validate` on independent batches, each with its own flow noise."""

    def one(key):
        batch_key, rng = jax.random.split(key)
        return agent.validate(state.replace(rng=rng), sample(dataset, batch_key))

    keys = jax.random.split(jax.random.PRNGKey(seed), batches)
    return jax.device_get(jax.jit(lambda keys: jax.lax.map(one, keys))(keys))


def means_of(values: np.ndarray, group: int, rng: np.random.Generator, resamples: int = 2000) -> dict:
    """The distribution of the mean of `group` values chosen at random (as `group` single-batch logged values)."""
    means = np.array([rng.choice(values, group, replace=False).mean() for _ in range(resamples)])
    return {
        "median": float(np.median(means)),
        "5%": float(np.percentile(means, 5)),
        "95%": float(np.percentile(means, 95)),
    }


def spread(values: np.ndarray, rng: np.random.Generator) -> dict:
    mean = float(values.mean())
    return {
        "mean": mean,
        "median": float(np.median(values)),
        "std": float(values.std(ddof=1)),
        "quantiles": {f"{q}%": float(np.percentile(values, q)) for q in QUANTILES},
        "max": float(values.max()),
        "fraction_below_mean": float((values < mean).mean()),
        **{f"mean_of_{group}": means_of(values, group, rng) for group in GROUPS},
    }


def logged(run_dir: str, name: str, first: int = 21000, last: int = 30000) -> dict | None:
    """The run's train.csv values of `train/<name>` at steps first..last (each a 500-update chunk's mean)."""
    rows = [r for r in read_csv(os.path.join(run_dir, "train.csv")) if first <= int(r["step"]) <= last]
    values = np.array([float(r[f"train/{name}"]) for r in rows if r.get(f"train/{name}")])
    if not len(values):
        return None
    return {"steps": f"{first}-{last}", "count": len(values), "mean": values.mean(), "median": np.median(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step; default: the latest")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batches drawn (not the run's)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    start = time.perf_counter()
    agent, config, state, step, dataset, sample = restored_run(args.run_dir, args.step)
    losses = per_batch_losses(agent, state, dataset, sample, args.batches, args.seed)
    rng = np.random.default_rng(args.seed)
    result = {
        "run_dir": args.run_dir,
        "step": int(step),
        "batches": args.batches,
        "batch_size": config.batch_size,
        "losses": {
            name: {"per_batch": spread(np.asarray(losses[name], np.float64), rng), "logged": logged(args.run_dir, name)}
            for name in LOSSES
            if name in losses
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(result, indent=2, default=float))
    if args.out:  # with every batch's values, to pool seeds
        values = {name: np.asarray(losses[name]).tolist() for name in result["losses"]}
        with open(args.out, "w") as f:
            json.dump({**result, "values": values}, f, indent=2, default=float)


if __name__ == "__main__":
    main()
