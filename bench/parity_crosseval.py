"""The official run's final parameters evaluated by OUR evaluation loop (issue 27, level 2's diagnosis).

    python -m bench.parity_crosseval --official=<checkout> --official_python=<python> --out=<dir> --seed=0

`<dir>` is bench.parity_outcomes' output folder. The official seed's `params_<steps>.pkl` is exported to arrays by
bench/parity_outcomes_official.py (`--export`, in the official environment), transplanted into our qgf agent built
with the study preset (bench.parity_pieces.transplant, the mapping level 1 checks), and evaluated by our sweep
evaluator (runner.evaluation.make_sweep_evaluator, as main.py) at every weight on our run's reported episodes (reset
seeds 1000 · seed + e). So beside each weight's success there are three numbers:

- ours: our parameters, our loop (bench.parity_outcomes' `ours` side);
- official: the official parameters, the official loop (its `official` side);
- crossed: the official parameters, our loop (this module), on the same reset seeds as `ours`.

crossed ≈ official says the two evaluation loops agree (so a difference between ours and official comes from the
trained parameters: training, or training-seed variation); crossed ≈ ours says the difference is in the loops.
Writes `<dir>/crosseval/seed<S>.json` (per weight, every episode) and prints the table.
"""

import argparse
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bench import parity_outcomes as po
from bench.parity_pieces import transplant, unflatten

NETWORKS = ("policy", "critic", "target_critic", "value")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True)
    parser.add_argument("--official_python", required=True)
    parser.add_argument("--out", required=True, help="bench.parity_outcomes' --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_envs", type=int, default=32)
    args = parser.parse_args(argv)
    import agents
    import configs
    import envs
    from runner.evaluation import make_sweep_evaluator

    s = po.study_settings()
    out = os.path.abspath(args.out)
    run = po.official_run_dir(os.path.join(out, "official", f"seed{args.seed}"), args.seed)
    if run is None or s["train_steps"] not in po.checkpoints(run):
        raise SystemExit(f"error: no official checkpoint of step {s['train_steps']} for seed {args.seed} under {out}")
    where = os.path.join(out, "crosseval")
    os.makedirs(where, exist_ok=True)
    exported = os.path.join(where, f"official-seed{args.seed}.npz")
    if not os.path.exists(exported):
        subprocess.run(
            [
                args.official_python,
                str(po.ROOT / "bench" / "parity_outcomes_official.py"),
                f"--checkout={os.path.abspath(args.official)}",
                f"--run={run}",
                f"--epoch={s['train_steps']}",
                "--weights=0",
                f"--export={exported}",
            ],
            check=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
    arrays = dict(np.load(exported))

    config = configs.get_config("qgf", po.PRESET)
    agent = agents.make("qgf", config)
    env = envs.make_env(po.TASK)
    batch = {
        "observations": np.zeros((1, env.observation_space.shape[0]), np.float32),
        "actions": np.zeros((1, config.horizon, env.action_space.shape[0]), np.float32),
    }
    env.close()
    state = agent.init(jax.random.key(0), batch)
    for network in NETWORKS:
        train_state = getattr(state, network)
        params = transplant(unflatten(arrays, network), train_state.params)
        state = state.replace(**{network: train_state.replace(params=jax.tree_util.tree_map(jnp.asarray, params))})
    states = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], state)  # a seed axis of one

    def act(st, observations, key, guidance_weight, goals, unroll=False):
        return agent.act(st, observations, key, guidance_weight=guidance_weight, goals=goals, unroll=unroll)

    weights = list(s["weights"])
    evaluate = make_sweep_evaluator(act, po.TASK, weights, s["episodes"], args.max_envs)
    result = evaluate(states, jax.random.split(jax.random.key(1000 + args.seed), 1), [1000 * args.seed])
    crossed = {}
    for row in result.episodes_per_seed[0]:
        episode = {"success": float(row["success"]), "return": float(row["return"]), "length": float(row["length"])}
        crossed.setdefault(round(float(row["guidance_weight"]), 6), []).append(episode)
    with open(os.path.join(where, f"seed{args.seed}.json"), "w") as f:
        json.dump({f"{w:g}": e for w, e in crossed.items()}, f)

    ours = po.our_episodes(os.path.join(out, "ours", f"seed{args.seed}"), s["train_steps"])
    official = po.official_episodes(os.path.join(out, "official", f"seed{args.seed}", "eval"))
    print(f"seed {args.seed}: success (%) ± s.e. per weight")
    print("| w | ours (our params, our loop) | crossed (official params, our loop) | official (its params, its loop) |")
    print("|---|---|---|---|")
    for w in weights:
        w = round(w, 6)
        sides = (ours, crossed, official)
        cells = [po.fmt(*po.mean_se([e["success"] for e in side.get(w, [])]), 100) for side in sides]
        print(f"| {w:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
