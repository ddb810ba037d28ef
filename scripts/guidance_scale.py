"""How hard each guidance weight pushes a trained run's actions: `python -m scripts.guidance_scale --run=<run dir>`.

A weight's number says little by itself: the same w moves the actions further under a critic whose gradient in
the action is steeper, and the size of Q does not tell how steep that is (on the study's puzzle task, Q at
γ = 0.999 is about 4× Q at 0.99, and the same w moves the actions about as far under both). This measures the
push directly. It draws actions for observations of the run's validation file with every weight of the run's
grid from the same noise, and prints per weight

- the root-mean-square move of an action coordinate from the unguided action (w = 0) of the same noise,
- the share of action coordinates at the bounds ±1 (where the sampler's clip holds them),
- the critic's mean gain, Q(s, a_w) − Q(s, a_0), under the critic that guides.

Two runs' weights push equally hard where they move the actions equally far (docs/study.md compares the study's
grid at γ = 0.99 with the paper's at 0.999 so). A qgf run only; `--estimator` measures another sampler on it.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import agents
from agents.qgf import guiding_critic
from envs.datasets import dataset_paths
from runner.checkpoints import Checkpoints
from runner.devices import placement
from runner.run_data import device_dataset, make_sampler, placeholder_dataset

AT_BOUND = 1.0 - 1e-6  # |a| at or above this counts as held at the bound by the sampler's clip


def push(act, critic, observations, weights, key) -> list[dict]:
    """Per weight, 0 first: {"weight", "rms_move", "at_bound", "q_gain"} of `act(observations, key, weights [B])
    -> [B, D]` against its unguided draw (weight 0), `critic(observations, actions) -> [B]` scoring both. Every
    weight draws with the same key, so each observation's actions start from the same noise at every weight."""
    count = len(observations)
    grid = jnp.asarray([0.0, *weights], jnp.float32)
    actions = jax.vmap(lambda w: act(observations, key, jnp.full((count,), w)))(grid)  # [W + 1, B, D]
    q = jax.vmap(lambda a: critic(observations, a))(actions)
    moves = jnp.sqrt(jnp.mean((actions - actions[0]) ** 2, axis=(1, 2)))
    bound = jnp.mean(jnp.abs(actions) >= AT_BOUND, axis=(1, 2))
    gains = jnp.mean(q - q[0], axis=1)
    moves, bound, gains = jax.device_get((moves, bound, gains))
    return [
        {"weight": float(w), "rms_move": float(m), "at_bound": float(b), "q_gain": float(g)}
        for w, m, b, g in zip([0.0, *weights], moves, bound, gains, strict=True)
    ]


def load_run(run_dir: str, estimator: str | None = None):
    """(saved config.json, agent, state at the latest checkpoint, step) of a qgf training run."""
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    if saved["agent"] != "qgf":
        raise SystemExit(
            f"{run_dir} trained {saved['agent']!r}; guidance_scale measures qgf runs (a flow and a critic)"
        )
    config = ml_collections.ConfigDict(saved["agent_config"])
    if estimator is not None:
        config.estimator = estimator
    checkpoints = Checkpoints(os.path.join(run_dir, "checkpoints"), read_only=True)
    step = checkpoints.latest_step()
    if step is None:
        raise SystemExit(f"{run_dir} has no checkpoint; train it first")
    agent = agents.make("qgf", config)
    dataset = device_dataset(placeholder_dataset(saved["env"], config), config, placement(1, config.batch_size))
    sample = make_sampler(config, saved["env"])
    key = jax.random.PRNGKey(0)
    template = jax.jit(lambda k: agent.init(k, sample(dataset, k)))(key)
    state = checkpoints.restore(step, template)
    checkpoints.close()
    return saved, agent, state, step


def validation_observations(saved: dict, count: int, seed: int) -> np.ndarray:
    """`count` observations drawn without replacement from the run's validation file."""
    path = dataset_paths(saved["env"], saved["run"]["dataset_dir"] or None)[1]
    with np.load(os.path.expanduser(path)) as data:
        observations = data["observations"]
    rows = np.random.default_rng(seed).choice(len(observations), size=min(count, len(observations)), replace=False)
    return observations[np.sort(rows)].astype(np.float32)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a qgf training run dir (its config.json and checkpoints)")
    parser.add_argument("--observations", type=int, default=512, help="validation observations measured")
    parser.add_argument("--weights", default=None, help="comma-separated weights; default: the run's grid")
    parser.add_argument("--estimator", default=None, help="another gradient estimator (jacobian, noisy, ...)")
    parser.add_argument("--seed", type=int, default=0, help="which observations, and the noise")
    args = parser.parse_args(argv)
    saved, agent, state, step = load_run(args.run, args.estimator)
    config = ml_collections.ConfigDict(saved["agent_config"])
    grid = args.weights.split(",") if args.weights else saved["guidance_weights"]
    weights = [float(w) for w in grid if float(w) != 0]  # weight 0 is push's first row, what the others move from
    observations = jnp.asarray(validation_observations(saved, args.observations, args.seed))

    def act(observations, key, weights):
        return agent.act(state, observations, key, guidance_weight=weights).reshape(observations.shape[0], -1)

    def critic(observations, actions):
        context, q = guiding_critic(config, state, observations)
        return q(context, actions)

    rows = push(jax.jit(act), jax.jit(critic), observations, weights, jax.random.PRNGKey(args.seed))
    estimator = args.estimator or config.estimator
    print(
        f"{args.run}: step {step}, γ = {config.discount}, estimator {estimator}, {len(observations)} validation "
        "observations; per weight, against the unguided action of the same noise:\n"
    )
    print("| weight | RMS move per coordinate | coordinates at ±1 | Q gain |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['weight']:g} | {r['rms_move']:.3f} | {100 * r['at_bound']:.1f} % | {r['q_gain']:+.2f} |")


if __name__ == "__main__":
    main()
