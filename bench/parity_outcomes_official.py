"""The official side's evaluation for `python -m bench.parity_outcomes`: runs inside the official code's environment.

Started as `<official python> bench/parity_outcomes_official.py --checkout=<checkout> --run=<official run dir>
--epoch=30000 --weights=0,0.04,... --episodes=30 --envs=10 --out=<dir>`. It imports only the official checkout's
modules (its agent, its environment maker, its evaluation loop) and that environment's packages, never this project:

- the agent: the official registry's class for the run's `flags.json` agent config, created on zero example arrays
  of the environment's shapes and then restored from the run's `params_<epoch>.pkl` with the official
  `restore_agent` (parameters, optimiser states and the agent's key all come from the checkpoint);
- the environments: the official `make_env_and_datasets(..., eval_env_only=True)`, `--envs` of them in a gymnasium
  `AsyncVectorEnv`, as the official main.py builds its evaluation envs (its `--eval_vecenv_size`); that maker reads
  OGBench's standard file from `~/.ogbench/data`, so the driver points `HOME` at a folder whose `.ogbench/data` holds
  the generated dataset (nothing is downloaded);
- the loop: the official `eval_standard` at each guidance weight, `--episodes` episodes per weight (its resets
  unseeded, as released); per episode the success is the last step's `success` info and the return the sum of its
  rewards.

With `--export=<file.npz>` it only writes the checkpoint's network parameters (policy, critic, target_critic,
value; '/'-separated names, e.g. `policy/MLP_0/Dense_0/kernel`) for `python -m bench.parity_crosseval`, and exits.

One JSON file per weight (`<out>/w<weight>.json`: weight, per-episode success / return / length, seconds), written
when that weight is done; a weight whose file exists is skipped, so a killed evaluation resumes where it stopped.
NumPy's global generator (which the official loop draws the policy's key from) is seeded per weight from the run's
seed and the weight's position, so rerunning one weight repeats its policy keys (the environments' resets are not
seeded by the official loop).
"""

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", required=True)
    parser.add_argument("--run", required=True, help="the official run's save dir (flags.json, params_<epoch>.pkl)")
    parser.add_argument("--epoch", type=int, required=True)
    parser.add_argument("--weights", required=True, help="comma-separated guidance weights")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--envs", type=int, default=10, help="vectorised envs (the official --eval_vecenv_size)")
    parser.add_argument("--out", default="")
    parser.add_argument("--export", default="", help="only write the checkpoint's network parameters to this .npz")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.checkout))
    if args.export:
        return export(args)
    import gymnasium as gym
    import ml_collections
    import numpy as np
    from envs.env_utils import make_env_and_datasets

    with open(os.path.join(args.run, "flags.json")) as f:
        flags = json.load(f)
    config = ml_collections.ConfigDict(flags["agent"])
    env_name, seed = flags["env_name"], int(flags["seed"])
    clip = config.get("dataset_action_clip_eps", 1e-5)
    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    todo = [(i, w) for i, w in enumerate(weights) if not os.path.exists(os.path.join(args.out, f"w{w:g}.json"))]
    if not todo:
        print("every weight already evaluated")
        return 0
    os.makedirs(args.out, exist_ok=True)

    def one_env():
        return make_env_and_datasets(env_name, action_clip_eps=clip, eval_env_only=True)

    # The env processes are forked before the agent is built (jax itself is already imported by the official envs
    # module, as in the official main.py, which forks its evaluation envs at the same point).
    vec_env = gym.vector.AsyncVectorEnv([one_env for _ in range(args.envs)])
    from utils.evaluation import eval_standard
    from utils.flax_utils import restore_agent

    from agents import agents

    observation_shape = vec_env.single_observation_space.shape
    action_shape = vec_env.single_action_space.shape
    agent = agents[config["agent_name"]].create(
        seed, np.zeros((1, *observation_shape), np.float32), np.zeros((1, *action_shape), np.float32), config
    )
    agent = restore_agent(agent, args.run, args.epoch)
    try:
        for index, weight in todo:
            np.random.seed(1000 * seed + index)
            start = time.time()
            _, trajectories, _ = eval_standard(
                agent,
                None,
                vec_eval_env=vec_env,
                num_eval_episodes=args.episodes,
                guidance_weight=weight,
            )
            episodes = [
                {
                    "success": float(t["info"][-1].get("success", float("nan"))),
                    "return": float(np.sum(t["reward"])),
                    "length": len(t["reward"]),
                }
                for t in trajectories
            ]
            record = {"weight": weight, "epoch": args.epoch, "episodes": episodes, "seconds": time.time() - start}
            path = os.path.join(args.out, f"w{weight:g}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.replace(path + ".tmp", path)
            mean = np.mean([e["success"] for e in episodes])
            seconds = record["seconds"]
            print(f"w={weight:g}: success {mean:.3f} over {len(episodes)} episodes, {seconds:.0f} s", flush=True)
    finally:
        for process in vec_env.processes:
            if process.is_alive():
                process.kill()
        for process in vec_env.processes:
            process.join(timeout=5)
        vec_env.closed = True
    return 0


def export(args) -> int:
    import pickle

    import numpy as np

    with open(os.path.join(args.run, f"params_{args.epoch}.pkl"), "rb") as f:
        state = pickle.load(f)["agent"]
    arrays = {}

    def walk(tree, prefix):
        for key, value in tree.items():
            if hasattr(value, "items"):
                walk(value, f"{prefix}/{key}")
            else:
                arrays[f"{prefix}/{key}"] = np.asarray(value)

    for network in ("policy", "critic", "target_critic", "value"):
        walk(state[network]["params"], network)
    np.savez(args.export, **arrays)
    print(f"wrote {len(arrays)} arrays to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
