"""Wall time of one whole evaluation sweep (weights × episodes as one batch), split into env and policy time.

    python -m bench.eval_sweep                                   # 9 weights × 30 episodes, 512×4 networks
    python -m bench.eval_sweep --weights=0,0.1 --episodes=2 --hidden-dims=16   # a smoke run

The agent is freshly initialised (its actions are noise-like, so episodes rarely end early: the worst case
for env time); the sweep runs through `runner.evaluation.make_sweep_evaluator`, as in `main.py`, with at
most `--max-envs` environments alive at once. The first (compiling) decision counts in the policy time.
"""

import argparse
import sys

import jax
import numpy as np

from bench.output import write_json


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="cube-single-play-singletask-task1-v0")
    parser.add_argument("--weights", default="0,0.004,0.008,0.01,0.02,0.04,0.06,0.08,0.1")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--hidden-dims", default="512,512,512,512")
    parser.add_argument("--max-envs", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=None, help="cut episodes to this many env steps")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import agents
    import configs
    import envs
    from runner.evaluation import make_sweep_evaluator

    env = envs.make_env(args.env)
    obs_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
    config = configs.get_config("qgf")
    dims = tuple(int(d) for d in args.hidden_dims.split(","))
    config.update(actor_hidden_dims=dims, critic_hidden_dims=dims)
    agent = agents.make("qgf", config)
    batch = {
        "observations": np.zeros((1, obs_dim), np.float32),
        "actions": np.zeros((1, config.horizon, action_dim), np.float32),
    }
    states = jax.jit(jax.vmap(agent.init, in_axes=(0, None)))(jax.random.split(jax.random.key(0), 1), batch)
    weights = [float(w) for w in args.weights.split(",")]

    def act(state, observations, key, guidance_weight, goals, unroll=False):
        return agent.act(state, observations, key, guidance_weight=guidance_weight, goals=goals, unroll=unroll)

    evaluate = make_sweep_evaluator(act, args.env, weights, args.episodes, args.max_envs, args.max_steps)
    result = evaluate(states, jax.random.split(jax.random.key(1), 1), [0])
    rows, timing = result.rows_per_seed, result.timing
    result = {
        "command": "python -m bench.eval_sweep " + " ".join(sys.argv[1:] if argv is None else argv),
        "env": args.env,
        "weights": len(weights),
        "episodes_per_weight": args.episodes,
        "hidden_dims": list(dims),
        "mean_episode_length": float(np.mean([r["length"] for r in rows[0]])),
        **timing,
    }
    print(
        f"{len(weights)} weights × {args.episodes} episodes on {args.env}: {timing['eval_seconds']:.1f} s, "
        f"of which policy {timing['policy_seconds']:.1f} s and envs {timing['env_seconds']:.1f} s "
        f"(mean length {result['mean_episode_length']:.0f} steps)"
    )
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
