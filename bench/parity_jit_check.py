"""Does a jitted forward pass of the official critic compute what the critic's parameters say? (issue 27, level 2)

    <python> bench/parity_jit_check.py --checkout=<official checkout> --params=<exported .npz> --flags=<flags.json>
        --data=<dataset .npz> [--out=<result.json>]

Runs in any environment that imports the official code: the official one (jax 0.4.30), or this project's with
distrax and wandb stubbed (`PYTHONPATH=<out>/pins/stubs`, jax 0.10). It builds the official qgf agent from the run's
flags.json, puts in the parameters that `bench/parity_outcomes_official.py --export` wrote (plain arrays, so the
same file loads under both jax versions), draws one batch of 256 chunks from the dataset file, and compares, per
ensemble member, the critic's and the target critic's Q from

- a float64 NumPy forward pass written here from the parameters (Dense → LayerNorm → tanh-GELU, the official `Value`
  MLP's layers) — the reference;
- the official module called eagerly (op by op);
- the same call under `jax.jit`, as the official `total_loss` (its validation losses) and the value loss inside its
  `update` call it;

and the value loss computed eagerly, under `jax.jit`, and inside the official jitted `update`, and the guided actions
of `sample_actions` (w = 0.4) with and without jit.
"""

import argparse
import json
import sys

import numpy as np


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * scale + bias


def reference_q(arrays: dict, prefix: str, inputs: np.ndarray) -> np.ndarray:
    """[members, B] Q of the official ensemble critic `prefix` ('critic' or 'target_critic'), in float64."""
    layers = sorted({k.split("/")[2] for k in arrays if k.startswith(f"{prefix}/value_net/Dense_")})
    members = arrays[f"{prefix}/value_net/Dense_0/kernel"].shape[0]
    out = []
    for m in range(members):
        x = inputs.astype(np.float64)
        for i in range(len(layers)):
            x = x @ arrays[f"{prefix}/value_net/Dense_{i}/kernel"][m] + arrays[f"{prefix}/value_net/Dense_{i}/bias"][m]
            if i + 1 < len(layers):
                scale = arrays[f"{prefix}/value_net/LayerNorm_{i}/scale"][m]
                x = gelu(layer_norm(x, scale, arrays[f"{prefix}/value_net/LayerNorm_{i}/bias"][m]))
        out.append(x[:, 0])
    return np.stack(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", required=True)
    parser.add_argument("--params", required=True)
    parser.add_argument("--flags", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.checkout)
    import jax
    import jax.numpy as jnp
    import ml_collections

    from agents import agents

    with open(args.flags) as f:
        config = ml_collections.ConfigDict(json.load(f)["agent"])
    arrays = {k: np.asarray(v) for k, v in np.load(args.params).items()}
    data = np.load(args.data)
    horizon = int(config["horizon_length"])
    rows = np.random.default_rng(0).integers(0, len(data["terminals"]) - horizon, 256)
    observations = data["observations"][rows].astype(np.float32)
    chunk = np.concatenate([data["actions"][rows + i] for i in range(horizon)], -1).astype(np.float32)
    chunk = np.clip(chunk, -1 + 1e-5, 1 - 1e-5)

    agent = agents[config["agent_name"]].create(0, observations[:1], chunk[:1, : chunk.shape[1] // horizon], config)

    def tree(prefix):
        out = {}
        for name, value in arrays.items():
            if name.startswith(prefix + "/"):
                node = out
                *path, last = name[len(prefix) + 1 :].split("/")
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = jnp.asarray(value)
        return out

    for network in ("policy", "critic", "target_critic", "value"):
        agent = agent.replace(**{network: getattr(agent, network).replace(params=tree(network))})
    obs, act = jnp.asarray(observations), jnp.asarray(chunk)
    result = {"jax": jax.__version__}
    for network in ("critic", "target_critic"):
        reference = reference_q(arrays, network, np.concatenate([observations, chunk], -1))
        eager = np.asarray(getattr(agent, network)(obs, act))
        jitted = np.asarray(jax.jit(lambda a, o, x, n=network: getattr(a, n)(o, x))(agent, obs, act))
        result[network] = {
            "reference_member_means": reference.mean(1).tolist(),
            "eager_max_abs_error": float(np.abs(eager - reference).max(axis=1).max()),
            "jit_max_abs_error_per_member": np.abs(jitted - reference).max(axis=1).tolist(),
        }
    # The value loss on one batch (its targets: the target critic's min over members), three ways.
    batch = {
        "observations": obs,
        "actions": act.reshape(len(rows), horizon, -1),
        "next_observations": jnp.asarray(np.stack([data["observations"][rows + i + 1] for i in range(horizon)], 1)),
        "rewards": jnp.zeros((len(rows), horizon)),
        "masks": jnp.ones((len(rows), horizon)),
        "valid": jnp.ones((len(rows), horizon)),
        "terminals": jnp.zeros((len(rows), horizon)),
    }
    result["value_loss"] = {
        "eager": float(agent.value_loss(batch)[0]),
        "jit": float(jax.jit(lambda a, b: a.value_loss(b)[0])(agent, batch)),
        "inside_update": float(agent.update(batch)[1]["value_loss"]),
    }
    key = jax.random.PRNGKey(3)
    guided = agent.sample_actions(obs[:64], seed=key, guidance_weight=0.4)
    with jax.disable_jit():
        unjitted = agent.sample_actions(obs[:64], seed=key, guidance_weight=0.4)
    result["sample_actions_w0.4_jit_vs_no_jit_max_abs_diff"] = float(jnp.abs(guided - unjitted).max())
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
