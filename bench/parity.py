"""Numerical parity with the official code: `python -m bench.parity --official=<checkout of zhouzypaul/qgf@bc44a67>`.

Runs the official modules in the official code's own environment (bench/parity_official.py, started with
`--official_python`, or with a venv this command makes from the checkout's pinned requirements, CPU wheels) and ours
here; the two processes exchange parameters, batches and keys through files in a temporary directory. For every
method it checks: the official initial parameters transplanted into ours (forward passes), actions from the same keys
(hence the same noise) at several guidance weights and best-of-N, every loss term of an update on fixed batches
(one of whole-episode chunks, one with chunks that cross an episode's end), and the parameters of every network
(targets included) after three consecutive updates. Besides: the PRNG draws of one key in both environments, the
chunk sampler against the official `sample_sequence` at every start of a small multi-trajectory dataset, and
parameter counts at paper size (4×1024). A documented difference (docs/differences.md)
shows as its own `documented` row with its size; what the official code cannot run as released shows as a failed
row, and the same check with the smallest fix applied (at run time, by bench/parity_official.py) beside it.

Methods: qgf with the estimators qgf / jacobian / noisy / none, best-of-N, GradStep, EDP, FQL, CFGRL, Robust-Q, QAM,
DAC and QSM (NOT_COMPARED says what is not compared).

Prints one table and writes it with the command, both environments' versions and the date to `--out`
(docs/parity.md). Float32 and `jax_default_matmul_precision="highest"` on both sides.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

jax.config.update("jax_default_matmul_precision", "highest")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import agents  # noqa: E402
import configs  # noqa: E402
from agents import fql as our_fql  # noqa: E402
from agents.losses import flow_interpolation  # noqa: E402
from bench.parity_outcomes import keep_section  # noqa: E402
from bench.parity_pieces import (  # noqa: E402
    Row,
    compare,
    counts,
    failure,
    leaves,
    max_abs_difference,
    overall,
    table,
    transplant,
    transplant_by_name,
    unflatten,
)
from envs.chunks import chunks_at, to_device_dataset  # noqa: E402

OFFICIAL_COMMIT = "bc44a67"
# Methods of the paper this harness does not compare yet, written into docs/parity.md.
NOT_COMPARED = "BPTT (no official implementation runs: it is unregistered and calls an undefined `_bc_flow_from`)"
ACTION_TOLERANCE = 1e-4  # The issue's: actions within 1e-4.
PARAM_TOLERANCE = 1e-5  # Parameters after three updates within 1e-5.
# Network outputs on the same parameters. Not 1e-5: the sinusoidal time embedding's frequencies are 10⁴^(−k/8) here
# and exp(−k/8 · ln 10⁴) there, and the factor 10⁴ on t amplifies their float32 rounding (up to ~2e-5 seen).
FORWARD_TOLERANCE = 1e-4
# Relative to max(1, |loss|): losses that embed a continuous t ~ U(0, 1) (Robust-Q's Q_ρ) meet the same amplified
# rounding as the forward passes (1.7e-5 relative seen there; 1e-7 elsewhere).
LOSS_TOLERANCE = 1e-4
SAMPLER_TOLERANCE = 1e-6  # float32 chunks against the official float64 ones.
UPDATE_STEPS = 3

OBS, ACTION, HORIZON, BATCH, ACT_BATCH = 6, 2, 4, 8, 3
SIZES = {"default": (64, 64, 64, 64), "fast": (32, 32)}
PAPER_SIZE = dict(hidden=(1024, 1024, 1024, 1024), obs_dim=28, action_dim=5, horizon=5)  # cube-single's dims.

# Packages the official driver imports, installed at the checkout's pinned versions (CPU wheels only).
OFFICIAL_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "chex",
    "distrax",
    "numpy",
    "ml-collections",
    "tensorflow-probability",
    "absl-py",
)
UNWANTED_REQUIREMENTS = ("jax-cuda", "nvidia-", "mujoco-py")  # GPU plugins; mujoco-py needs a MuJoCo 2.1 install.

DIFFERENCE_BC = (
    "differences: BC loss of the qgf base (and EDP) weighted by each action's validity (official: unweighted)"
)
DIFFERENCE_FQL = "differences: FQL's L_flow and L_distill weighted per action (official: per chunk, w_b)"
DIFFERENCE_ROBUST_Q = "differences: Robust-Q's guidance per sample (official: ∇ of the batch mean, i.e. divided by B)"
DIFFERENCE_PADDING = (
    "differences: chunk actions past an episode's end repeat its last action (official: the next "
    "trajectory's actions); they matter only in losses that ignore `valid`"
)


# ---------------------------------------------------------------------------------------------------------------
# The official environment.
# ---------------------------------------------------------------------------------------------------------------


def official_constraints(requirements: str) -> str:
    """The checkout's requirements without GPU plugins and mujoco-py (pip constraints: pinned versions)."""
    kept = [
        line
        for line in requirements.splitlines()
        if line.strip()
        and not line.startswith("#")
        and not line.startswith((" ", "\t"))
        and not line.startswith(UNWANTED_REQUIREMENTS)
    ]
    return "\n".join(kept) + "\n"


def make_official_python(checkout: Path, venv: Path) -> Path:
    """A venv with the checkout's pins of OFFICIAL_PACKAGES (made once; reused when its python exists)."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    requirements = checkout / "requirements.txt"
    if not requirements.exists():
        sys.exit(f"error: {requirements} not found; --official must be a checkout of zhouzypaul/qgf@{OFFICIAL_COMMIT}")
    constraints = venv.parent / f"{venv.name}-constraints.txt"
    venv.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text(official_constraints(requirements.read_text()))
    print(f"making the official environment in {venv} (pins of {requirements}, CPU wheels)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *OFFICIAL_PACKAGES], check=True)
    return python


# ---------------------------------------------------------------------------------------------------------------
# Inputs shared by every method: batches, acting observations, forward inputs.
# ---------------------------------------------------------------------------------------------------------------


def fixed_batches(rng: np.random.Generator) -> dict:
    """Two batches in the layout of the official `sample_sequence` (cumulative rewards and masks, `valid`).

    'whole': every chunk inside its episode (one ends on its episode's last step: mask 0, weight 1).
    'crossing': chunks 1, 3, 5 run past their episode's end (valid 0 after it), where the documented differences show.
    """

    def batch(valid):
        step_rewards = rng.uniform(-1, 0, (BATCH, HORIZON)) * valid
        discounts = 0.999 ** np.arange(HORIZON)
        masks = np.ones((BATCH, HORIZON))
        masks[0, -1] = 0.0  # Chunk 0 ends exactly on its episode's last step.
        for b in range(BATCH):  # The mask stays 0 from the terminal on (the official m_k).
            ended = np.flatnonzero(valid[b] == 0)
            if ended.size:
                masks[b, ended[0] - 1 :] = 0.0
        return {
            "observations": rng.normal(size=(BATCH, OBS)),
            "actions": rng.uniform(-0.95, 0.95, (BATCH, HORIZON, ACTION)),
            "rewards": np.cumsum(step_rewards * discounts, axis=1),
            "masks": masks,
            "valid": valid,
            "terminals": 1.0 - masks,
            "next_observations": rng.normal(size=(BATCH, HORIZON, OBS)),
        }

    crossing = np.ones((BATCH, HORIZON))
    crossing[1, 2:] = 0.0
    crossing[3, 1:] = 0.0
    crossing[5, 3:] = 0.0
    batches = {"whole": batch(np.ones((BATCH, HORIZON))), "crossing": batch(crossing)}
    return {name: {k: v.astype(np.float32) for k, v in b.items()} for name, b in batches.items()}


def sampler_dataset(rng: np.random.Generator) -> dict:
    """Three trajectories (4, 7 and 5 transitions) in OGBench's layout, masks 1 − terminals (the 100M loader's)."""
    lengths = (4, 7, 5)
    n = sum(lengths)
    terminals = np.zeros(n, np.float32)
    terminals[np.cumsum(lengths) - 1] = 1.0
    return {
        "observations": rng.normal(size=(n, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
        "rewards": rng.uniform(-2, 0, n).astype(np.float32),
        "terminals": terminals,
        "masks": 1.0 - terminals,
    }


# ---------------------------------------------------------------------------------------------------------------
# Methods: our agent and config, the official agent and config, and how their networks and losses correspond.
# ---------------------------------------------------------------------------------------------------------------

# The paper's largest weight, and larger ones: the untrained critic's gradients are small, so that guidance must visibly
# move the actions (a `guidance moves actions` row checks it) for the comparison to mean anything.
WEIGHTS = (0.0, 0.12, 1.0, 3.0)
CFGRL_THRESHOLD = -1.5
GUIDANCE_EFFECT = 1e-3  # The least max |a(w) − a(0)| for the comparison at w to test the guidance term.
QGF_NETWORKS = {"policy": "policy", "critic": "critic", "target_critic": "target_critic", "value": "value"}
QGF_FORWARD = {
    "policy": {"network": "policy", "kind": "velocity"},
    "critic": {"network": "critic", "kind": "q"},
    "value": {"network": "value", "kind": "v"},
}
# Our update's metric names and the official ones (keys of its update's info).
QGF_LOSSES = {
    "policy/bc_loss": "bc_loss",
    "critic/loss": "critic_loss",
    "value/loss": "value_loss",
    "value/v_mean": "v",
}


def official_qgf_config(hidden, **extra) -> dict:
    return {
        "actor_hidden_dims": list(hidden),
        "value_network_kwargs.hidden_dims": list(hidden),
        "horizon_length": HORIZON,
        "action_chunking": True,
        "discount": 0.999,
        "expectile": 0.9,
        "denoise_steps": 10,
        "num_qs": 2,
        **extra,
    }


def our_config(agent: str, hidden, **extra):
    config = configs.get_config(agent, "paper")
    config.update(actor_hidden_dims=hidden, critic_hidden_dims=hidden, horizon=HORIZON, batch_size=BATCH, **extra)
    return config


def methods(hidden) -> list[dict]:
    """Every compared method (see the module docstring); `documented` maps a check's prefix to its note."""
    qgf_like = dict(
        store="separate",
        networks=QGF_NETWORKS,
        forward=QGF_FORWARD,
        losses=QGF_LOSSES,
        documented={"crossing/policy": DIFFERENCE_BC, "loss crossing/policy/bc_loss": DIFFERENCE_BC},
    )
    out = []
    for estimator, approx, jac in (
        ("qgf", "one_euler_step_approx", False),
        ("jacobian", "one_euler_step_approx", True),
        ("noisy", "noisy", False),
    ):
        out.append(
            dict(
                qgf_like,
                name=f"qgf-{estimator}",
                ours=("qgf", dict(estimator=estimator)),
                official=(
                    "agents.qgf",
                    "QGFAgent",
                    official_qgf_config(hidden, denoised_action_approx=approx, apply_jacobian=jac),
                ),
                act=dict(weights=WEIGHTS, best_of_n=(1,)),
                update=estimator == "qgf",
            )
        )
    out.append(
        dict(
            qgf_like,
            name="qgf-none",
            ours=("qgf", dict(estimator="none")),
            official=("agents.qgf", "QGFAgent", official_qgf_config(hidden)),
            act=dict(weights=(0.0,), best_of_n=(1,)),
            update=False,
            note="estimator none = the official sampler at weight 0",
        )
    )
    out.append(
        dict(
            qgf_like,
            name="best-of-n",
            ours=("qgf", dict(estimator="qgf")),
            official=("agents.qgf", "QGFAgent", official_qgf_config(hidden)),
            act=dict(weights=(0.0, 1.0), best_of_n=(4,)),
            update=False,
        )
    )
    out.append(
        dict(
            qgf_like,
            name="gradstep",
            ours=("qgf", dict(estimator="none", grad_steps=3, grad_step_size=0.5)),
            official=(
                "agents.grad_step",
                "GradStepAgent",
                official_qgf_config(hidden, qgrad_step_size=0.5, qgrad_steps=3),
            ),
            act=dict(weights=(0.0,), best_of_n=(1, 4), guidance=False),
            update=False,
        )
    )
    out.append(
        dict(
            qgf_like,
            name="edp",
            ours=("edp", dict(bc_weight=3.0)),
            official=("agents.edp", "EDPAgent", official_qgf_config(hidden, bc_weight=3.0)),
            act=dict(weights=(0.0,), best_of_n=(1,), guidance=False),
            update=True,
            losses={**QGF_LOSSES, "actor/q_mean": "actor_q"},
        )
    )
    fql_networks = {
        "policy": "actor_bc_flow",
        "one_step": "actor_onestep_flow",
        "critic": "critic",
        "target_critic": "target_critic",
        "value": "value",
    }
    out.append(
        dict(
            name="fql",
            ours=("fql", dict(alpha=10.0)),
            store="module_dict",
            networks=fql_networks,
            official=(
                "agents.fql",
                "FQLAgent",
                {
                    "actor_hidden_dims": list(hidden),
                    "value_network_kwargs.hidden_dims": list(hidden),
                    "horizon_length": HORIZON,
                    "action_chunking": True,
                    "discount": 0.999,
                    "expectile": 0.9,
                    "critic_loss_type": "iql",
                    "alpha": 10.0,
                    "flow_steps": 10,
                },
            ),
            forward={
                "policy": {"network": "actor_bc_flow", "kind": "velocity", "time_shape": "column"},
                "one_step": {"network": "actor_onestep_flow", "kind": "one_step"},
                "critic": {"network": "critic", "kind": "q"},
                "value": {"network": "value", "kind": "v"},
            },
            act=dict(weights=(0.0,), best_of_n=(1,), guidance=False, draws=[("normal", "noise")]),
            update=True,
            # The official FQL threads its keys differently: its draws are replaced, in call order, by ours.
            draws=[("normal", "flow_noise"), ("uniform", "flow_times"), ("normal", "actor_noise"), ("normal", None)],
            draw_fn=fql_draws,
            losses={
                "critic/loss": "critic/critic_loss",
                "value/loss": "value/value_loss",
                "policy/bc_loss": "actor/bc_flow_loss",
                "actor/distill_loss": "actor/distill_loss",
                "actor/q_loss": "actor/q_loss",
                "actor/q_mean": "actor/q",
                "actor/loss": "actor/actor_loss",
            },
            documented={
                "crossing/policy": DIFFERENCE_FQL,
                "crossing/one_step": DIFFERENCE_FQL,
                "loss crossing/policy/bc_loss": DIFFERENCE_FQL,
                "loss crossing/actor/distill_loss": DIFFERENCE_FQL,
                "loss crossing/actor/loss": DIFFERENCE_FQL,
            },
        )
    )
    out.append(
        dict(
            # A threshold below 0 so that the untrained networks' advantages label some chunks positive (at 0 none is,
            # and the label-1 loss would go untested).
            name="cfgrl",
            ours=("cfgrl", {"advantage_threshold": CFGRL_THRESHOLD}),
            store="separate",
            networks={"policy": "actor", "critic": "critic", "target_critic": "target_critic", "value": "value"},
            official=(
                "agents.cfgrl",
                "CFGRLAgent",
                official_qgf_config(hidden, actor_layer_norm=True, adv_threshold=CFGRL_THRESHOLD),
            ),
            forward={
                "policy label 0": {"network": "actor", "kind": "labelled_velocity", "label": 0, "ours": "policy"},
                "policy label 1": {"network": "actor", "kind": "labelled_velocity", "label": 1, "ours": "policy"},
                "critic": {"network": "critic", "kind": "q"},
                "value": {"network": "value", "kind": "v"},
            },
            act=dict(weights=(0.0, 1.0, 3.0, 15.0), best_of_n=(1, 4)),
            update=True,
            losses={
                "policy/loss": "actor_loss",
                "policy/positive_fraction": "actor_positive_ratio",
                "critic/loss": "critic_loss",
                "value/loss": "value_loss",
                "value/v_mean": "v",
            },
        )
    )
    out.append(
        dict(
            name="robust_q",
            ours=("robust_q", {}),
            store="separate",
            networks={
                "base.policy": "policy",
                "base.critic": "critic",
                "base.target_critic": "target_critic",
                "base.value": "value",
                "robust_critic": "robust_critic",
            },
            official=("agents.robust_q", "RobustQAgent", official_qgf_config(hidden)),
            forward={
                "policy": {"network": "policy", "kind": "velocity", "ours": "base.policy"},
                "critic": {"network": "critic", "kind": "q", "ours": "base.critic"},
                "value": {"network": "value", "kind": "v", "ours": "base.value"},
                "robust_critic": {"network": "robust_critic", "kind": "noise_critic"},
            },
            act=dict(weights=WEIGHTS, best_of_n=(1,), official_scale=ACT_BATCH),
            update=True,
            # Ours keeps qgf's and Q_ρ's keys apart; the official draws (in qgf's policy loss, then Q_ρ's) are ours.
            draws=[
                ("normal", "policy_noise"),
                ("randint", "policy_steps"),
                ("normal", "robust_noise"),
                ("uniform", "robust_times"),
            ],
            draw_modules=["agents.qgf", "agents.robust_q"],
            draw_fn=robust_q_draws,
            losses={**QGF_LOSSES, "robust_critic/loss": "robust_critic_loss", "robust_critic/q_mean": "robust_q_mean"},
            documented={"crossing/base.policy": DIFFERENCE_BC, "loss crossing/policy/bc_loss": DIFFERENCE_BC},
        )
    )
    qam_networks = {
        "slow": "actor_slow",
        "target_slow": "target_actor_slow",
        "fast": "actor_fast",
        "critic": "critic",
        "target_critic": "target_critic",
        "value": "value",
    }
    out.append(
        dict(
            name="qam",
            ours=("qam", {}),
            store="module_dict",
            networks=qam_networks,
            official=(
                "agents.qam",
                "QAMAgent",
                {
                    "actor_hidden_dims": list(hidden),
                    "value_hidden_dims": list(hidden),
                    "horizon_length": HORIZON,
                    "action_chunking": True,
                    "discount": 0.999,
                    "expectile": 0.9,
                    "critic_loss_type": "iql",
                    "num_qs": 2,
                    "rho": 0.0,
                    "inv_temp": 0.1,
                    "flow_steps": 10,
                },
            ),
            forward={
                "slow": {"network": "actor_slow", "kind": "velocity", "time_shape": "column"},
                "fast": {"network": "actor_fast", "kind": "velocity", "time_shape": "column"},
                "critic": {"network": "critic", "kind": "q"},
                "value": {"network": "value", "kind": "v"},
            },
            act=dict(weights=(0.0,), best_of_n=(1,), guidance=False, draws=[("normal", "noise_with_candidates")]),
            update=True,
            # Flow matching's (a_0, t), then the memoryless rollout's start and its K noises (the last unused there).
            draws=[("normal", "flow_noise"), ("uniform", "flow_times"), ("normal", "start")]
            + [("normal", f"noise/{i}") for i in range(9)]
            + [("normal", None)],
            draw_fn=qam_draws,
            losses={
                "policy/bc_loss": "actor/flow_loss",
                "actor/adjoint_loss": "actor/fast_loss",
                "critic/loss": "critic/critic_loss",
                "value/loss": "value/value_loss",
            },
        )
    )
    for loss_type in ("dac", "qsm"):
        out.append(
            dict(
                name=loss_type,
                ours=(loss_type, {"alpha": 3.0}),
                store="module_dict",
                by_name=("policy",),
                networks={"policy": "actor", "critic": "critic", "target_critic": "target_critic", "value": "value"},
                official=(
                    "agents.dcgql",
                    "DCGQLAgent",
                    {
                        "actor_hidden_dims": list(hidden),
                        "value_hidden_dims": list(hidden),
                        "horizon_length": HORIZON,
                        "action_chunking": True,
                        "discount": 0.999,
                        "expectile": 0.9,
                        "critic_loss_type": "iql",
                        "num_qs": 2,
                        "rho": 0.0,
                        "actor_loss_type": loss_type,
                        "alpha": 3.0,
                        "inv_temp": 0.1,
                    },
                ),
                forward={
                    "policy": {"network": "actor", "kind": "noise_predictor"},
                    "critic": {"network": "critic", "kind": "q"},
                    "value": {"network": "value", "kind": "v"},
                },
                # x_K, then one re-noising draw per step k = K..1 (the last is multiplied by 0 there, absent here).
                act=dict(
                    weights=(0.0,),
                    best_of_n=(1,),
                    guidance=False,
                    clip_official=True,
                    draws=[("normal", f"noise/{k}") for k in range(10)] + [("normal", None)],
                ),
                update=True,
                draws=[("randint", "steps"), ("normal", "noise")],
                draw_fn=ddpm_draws,
                losses={
                    "policy/bc_loss": "actor/bc_loss",
                    "actor/q_loss": "actor/actor_loss",
                    "critic/loss": "critic/critic_loss",
                    "value/loss": "value/value_loss",
                },
            )
        )
    return out


def with_best_of_n(config, n: int):
    config = config.copy_and_resolve_references()
    config.best_of_n = n
    return config


def released_failure(check: str, report: dict, label: str) -> Row:
    """The official code failing a step: `documented` when the driver had a fix for it (docs/differences.md lists
    Robust-Q's and QAM's failures as released), `fail` otherwise."""
    error = report["errors"][label]
    if label in report["fixed"]:
        return Row(f"{check} (as released)", None, None, "documented", f"differences: fails as released: {error}")
    return failure(f"{check} (as released)", error)


def field_of(state, dotted: str):
    """`state.a.b` for 'a.b' (Robust-Q keeps qgf's networks in `state.base`)."""
    for part in dotted.split("."):
        state = getattr(state, part)
    return state


def with_field(state, dotted: str, value):
    head, _, rest = dotted.partition(".")
    return state.replace(**{head: with_field(getattr(state, head), rest, value) if rest else value})


def documented_note(method: dict, check: str) -> str:
    for prefix, note in method.get("documented", {}).items():
        if check.startswith(prefix):
            return note
    return ""


def flow_draws(key, clean, steps):
    """(a_0, t) of agents.losses.flow_interpolation(key, clean, steps)."""
    _, times, target = flow_interpolation(key, clean, steps)
    return np.asarray(clean - target), np.asarray(times)


def robust_q_draws(state, batch, config) -> dict:
    """The random inputs of our Robust-Q update: qgf's flow-matching (a_0, t) from the base state's key, then Q_ρ's
    (a_0, t ~ U(0, 1)) from the Robust-Q state's own key."""
    clean = batch["actions"].reshape(BATCH, -1)
    policy_noise, policy_times = flow_draws(jax.random.split(state.base.rng)[1], clean, config.denoising_steps)
    robust_noise, robust_times = flow_draws(jax.random.split(state.rng)[1], clean, None)
    return {
        "policy_noise": policy_noise,
        "policy_steps": np.rint(policy_times * config.denoising_steps).astype(np.int32),
        "robust_noise": robust_noise,
        "robust_times": robust_times,
    }


def ddpm_draws(state, batch, config) -> dict:
    """The denoising steps k and noise ε our DAC / QSM update draws (agents/ddpm.py's policy loss)."""
    step_key, noise_key = jax.random.split(jax.random.split(state.rng)[1])
    clean = batch["actions"].reshape(BATCH, -1)
    return {
        "steps": np.asarray(jax.random.randint(step_key, (BATCH,), 1, config.denoising_steps + 1)),
        "noise": np.asarray(jax.random.normal(noise_key, clean.shape, clean.dtype)),
    }


def qam_draws(state, batch, config) -> dict:
    """Our QAM update's draws (agents/qam.py): flow matching's (a_0, t ~ U(0, 1)), the rollout's x_0 and noises."""
    flow_key, adjoint_key = jax.random.split(jax.random.split(state.rng)[1])
    clean = batch["actions"].reshape(BATCH, -1)
    flow_noise, flow_times = flow_draws(flow_key, clean, None)
    start_key, noise_key = jax.random.split(adjoint_key)
    noises = jax.random.normal(noise_key, (config.denoising_steps - 1, BATCH, clean.shape[1]))
    return {
        "flow_noise": flow_noise,
        "flow_times": flow_times.reshape(BATCH, 1),
        "start": np.asarray(jax.random.normal(start_key, clean.shape)),
        **{f"noise/{i}": np.asarray(n) for i, n in enumerate(noises)},
    }


def fql_draws(state, batch, config) -> dict:
    """The random inputs our FQL update draws from `state.rng` (its flow noise a_0, times t, one-step noise z)."""
    _, key = jax.random.split(state.rng)
    draws = our_fql.draw(key, batch, config)
    clean = batch["actions"].reshape(BATCH, -1)
    return {
        "flow_noise": np.asarray(clean - draws.velocity_target),
        "flow_times": np.asarray(draws.times).reshape(BATCH, 1),
        "actor_noise": np.asarray(draws.actor_noise),
    }


# ---------------------------------------------------------------------------------------------------------------
# One method on our side: before the official run (inputs) and after it (comparison rows).
# ---------------------------------------------------------------------------------------------------------------


class OurMethod:
    def __init__(self, method: dict, hidden, batches: dict, rng: np.random.Generator):
        self.method, self.hidden, self.batches = method, hidden, batches
        agent_name, overrides = method["ours"]
        self.config = our_config(agent_name, hidden, **overrides)
        self.agent_name = agent_name
        self.agent = agents.make(agent_name, self.config)
        self.state = self.agent.init(jax.random.PRNGKey(0), self.batch("whole"))
        self.update_key = jax.random.PRNGKey(11)
        if not method.get("draws"):  # Both sides update from this key (the official agent's is set to it too).
            self.state = self.state.replace(rng=self.update_key)
        self.inputs = {
            "example/observations": batches["whole"]["observations"][:1],
            "example/actions": batches["whole"]["actions"][:1, 0],
            "forward/observations": rng.normal(size=(BATCH, OBS)).astype(np.float32),
            "forward/actions": rng.uniform(-1, 1, (BATCH, HORIZON * ACTION)).astype(np.float32),
            "forward/times": (np.arange(BATCH) % 11 / 10).astype(np.float32),
            "forward/steps": (np.arange(BATCH) % 10 + 1).astype(np.int32),
            "act/observations": rng.normal(size=(ACT_BATCH, OBS)).astype(np.float32),
            "act/key": np.asarray(jax.random.PRNGKey(5)),
            # The noise our act draws from act/key (replayed where the official sampler threads its key otherwise).
            "act/noise": np.asarray(jax.random.normal(jax.random.PRNGKey(5), (ACT_BATCH, HORIZON * ACTION))),
            "update/rng": np.asarray(self.update_key),
        }
        # DAC / QSM's act draws x_K and every re-noising draw at once, [K, B, D].
        ddpm_noise = jax.random.normal(jax.random.PRNGKey(5), (10, ACT_BATCH, HORIZON * ACTION))
        self.inputs.update({f"act/noise/{k}": np.asarray(ddpm_noise[k]) for k in range(10)})
        # QAM's sampler draws [B, best_of_n = 1, D].
        self.inputs["act/noise_with_candidates"] = self.inputs["act/noise"][:, None]
        for name, batch in batches.items():
            self.inputs.update({f"batch/{name}/{k}": v for k, v in batch.items()})
        if method.get("draws"):
            self.add_draws()

    def batch(self, name):
        return {k: jnp.asarray(v) for k, v in self.batches[name].items() if k != "terminals"}

    def add_draws(self):
        update = jax.jit(self.agent.update)
        for name in self.batches:
            state = self.state
            for step in range(UPDATE_STEPS):
                draws = self.method["draw_fn"](state, self.batch(name), self.config)
                self.inputs.update({f"draws/{name}/{step}/{k}": v for k, v in draws.items()})
                state, _ = update(state, self.batch(name))

    def official_weights(self) -> list:
        scale = self.method["act"].get("official_scale")
        weights = list(self.method["act"]["weights"])
        return weights + [w * scale for w in weights if w] if scale else weights

    def case(self) -> dict:
        module, cls, config = self.method["official"]
        act = {k: list(v) if isinstance(v, tuple) else v for k, v in self.method["act"].items()}
        act["weights"] = self.official_weights()
        return {
            "name": self.method["name"],
            "module": module,
            "class": cls,
            "config": config,
            "seed": 0,
            "store": self.method["store"],
            "networks": sorted(set(self.method["networks"].values())),
            "forward": self.method["forward"],
            "act": act,
            "update": {
                "batches": list(self.batches) if self.method["update"] else [],
                "steps": UPDATE_STEPS,
                "draws": self.method.get("draws"),
                "draw_modules": self.method.get("draw_modules"),
            },
        }

    def transplant(self, official: dict, template: dict, field: str) -> dict:
        if field in self.method.get("by_name", ()):
            return transplant_by_name(official, template)
        return transplant(official, template)

    def transplanted(self, official: dict):
        """Our state holding the official initial parameters."""
        state = self.state
        for ours, theirs in self.method["networks"].items():
            train_state = field_of(state, ours)
            params = self.transplant(unflatten(official, f"init/{theirs}"), train_state.params, ours)
            state = with_field(state, ours, train_state.replace(params=jax.tree_util.tree_map(jnp.asarray, params)))
        return state

    def rows(self, official: dict, report: dict) -> list[Row]:
        name = self.method["name"]
        if "case" in report["errors"]:
            return [failure(f"{name}: official run", report["errors"]["case"])]
        try:
            state = self.transplanted(official)
        except ValueError as error:
            return [failure(f"{name}: parameter transplant", str(error))]
        rows = self.forward_rows(state, official)
        rows += self.act_rows(state, official, report)
        if self.method["update"]:
            rows += self.update_rows(state, official, report)
        return rows

    def forward_rows(self, state, official) -> list[Row]:
        obs = jnp.asarray(self.inputs["forward/observations"])
        chunk = jnp.asarray(self.inputs["forward/actions"])
        times = jnp.asarray(self.inputs["forward/times"])
        rows = []
        for ours_field, call in self.method["forward"].items():
            train_state = field_of(state, call.get("ours", ours_field))
            apply, params = train_state.apply_fn, train_state.params
            kind = call["kind"]
            if kind == "q":
                out = apply(params, obs, chunk)
            elif kind == "v":
                out = apply(params, obs)
            elif kind in ("velocity", "noise_critic"):
                out = apply(params, obs, chunk, times)
            elif kind == "one_step":
                out = apply(params, jnp.concatenate([obs, chunk], -1))
            elif kind == "labelled_velocity":
                out = apply(params, obs, jnp.full(obs.shape[:1], call["label"], jnp.int32), chunk, times)
            elif kind == "noise_predictor":
                out = apply(params, obs, chunk, jnp.asarray(self.inputs["forward/steps"]))
            else:
                raise ValueError(kind)
            rows.append(
                compare(
                    f"{self.method['name']}: forward {ours_field}",
                    out,
                    official[f"forward/{ours_field}"],
                    FORWARD_TOLERANCE,
                )
            )
        return rows

    def act_rows(self, state, official, report) -> list[Row]:
        rows, name = [], self.method["name"]
        obs, key = jnp.asarray(self.inputs["act/observations"]), jnp.asarray(self.inputs["act/key"])
        scale = self.method["act"].get("official_scale")
        for n in self.method["act"]["best_of_n"]:
            agent = self.agent if n == 1 else agents.make(self.agent_name, with_best_of_n(self.config, n))
            act = jax.jit(agent.act)
            actions = {}
            for weight in self.method["act"]["weights"]:
                label = f"act/w{weight}_n{n}"
                check = f"{name}: actions w={weight:g}" + (f" best-of-{n}" if n > 1 else "")
                if label in report["errors"]:
                    rows.append(released_failure(check, report, label))
                    if label not in report["fixed"]:
                        continue
                    check += f" (fixed: {report['fixed'][label]})"
                actions[weight] = act(state, obs, key, guidance_weight=weight).reshape(ACT_BATCH, -1)
                if scale and weight:
                    rows.append(
                        compare(
                            f"{check}, official weight × {scale} (the batch mean's 1/B undone)",
                            actions[weight],
                            official[f"act/w{weight * scale}_n{n}"],
                            ACTION_TOLERANCE,
                        )
                    )
                    rows.append(
                        compare(
                            f"{check}, official at the same weight",
                            actions[weight],
                            official[label],
                            ACTION_TOLERANCE,
                            DIFFERENCE_ROBUST_Q,
                        )
                    )
                else:
                    theirs = official[label]
                    if self.method["act"].get("clip_official"):  # Its evaluation loop clips what the sampler returns.
                        theirs = np.clip(theirs, -1.0, 1.0)
                    rows.append(
                        compare(check, actions[weight], theirs, ACTION_TOLERANCE, documented_note(self.method, check))
                    )
            guided = [w for w in actions if w]
            if 0.0 in actions and guided and self.method["act"].get("guidance", True):
                effect = max_abs_difference(actions[max(guided)], actions[0.0])
                rows.append(
                    Row(
                        f"{name}: guidance moves actions (w={max(guided):g} against w=0, n={n})",
                        effect,
                        GUIDANCE_EFFECT,
                        "pass" if effect > GUIDANCE_EFFECT else "fail",
                        "must exceed the tolerance, or the rows above test no guidance",
                    )
                )
        return rows

    def update_rows(self, state, official, report) -> list[Row]:
        rows, name = [], self.method["name"]
        update = jax.jit(self.agent.update)
        for batch_name in self.batches:
            if f"update/{batch_name}" in report["errors"]:
                rows.append(released_failure(f"{name}: update on {batch_name} chunks", report, f"update/{batch_name}"))
                if f"update/{batch_name}" not in report["fixed"]:
                    continue
            fixed = report["fixed"].get(f"update/{batch_name}")
            suffix = f" (fixed: {fixed})" if fixed else ""
            current = state
            for step in range(UPDATE_STEPS):
                current, metrics = update(current, self.batch(batch_name))
                if step == 0:
                    rows += self.loss_rows(batch_name, metrics, report["losses"][f"update/{batch_name}/0"], suffix)
            for ours_field, theirs in self.method["networks"].items():
                mine = field_of(current, ours_field).params
                theirs_tree = unflatten(official, f"update/{batch_name}/{UPDATE_STEPS - 1}/{theirs}")
                mapped = leaves(self.transplant(theirs_tree, mine, ours_field))
                mine = leaves(jax.device_get(mine))
                deltas = {p: max_abs_difference(mine[p], mapped[p]) for p in mine}
                worst = max(deltas, key=deltas.get)
                check = f"{name}: {batch_name}/{ours_field} params after {UPDATE_STEPS} updates{suffix}"
                row = compare(
                    check,
                    [deltas[worst]],
                    [0.0],
                    PARAM_TOLERANCE,
                    documented_note(self.method, f"{batch_name}/{ours_field}"),
                )
                rows.append(row._replace(note=row.note or f"largest at {worst}" if row.verdict != "pass" else row.note))
        return rows

    def loss_rows(self, batch_name, metrics, official_losses, suffix) -> list[Row]:
        rows = []
        for ours_name, theirs in self.method["losses"].items():
            check = f"{self.method['name']}: loss {batch_name}/{ours_name}{suffix}"
            if theirs not in official_losses:
                rows.append(failure(check, f"the official update reports no {theirs!r}"))
                continue
            value = official_losses[theirs]
            rows.append(
                compare(
                    check,
                    float(metrics[ours_name]),
                    value,
                    LOSS_TOLERANCE * max(1.0, abs(value)),
                    documented_note(self.method, f"loss {batch_name}/{ours_name}"),
                )
            )
        return rows


# ---------------------------------------------------------------------------------------------------------------
# Checks outside the methods.
# ---------------------------------------------------------------------------------------------------------------


def prng_rows(shared_in: dict, shared_out: dict) -> list[Row]:
    key = jnp.asarray(shared_in["prng/key"])
    first, second = jax.random.split(key)
    ours = {
        "normal": jax.random.normal(first, (4, 7)),
        "uniform": jax.random.uniform(second, (5, 1)),
        "randint": jax.random.randint(second, (9,), 0, 11),
    }
    return [
        compare(f"PRNG: jax.random.{k} of one key in both environments", v, shared_out[f"prng/{k}"], 0.0)
        for k, v in ours.items()
    ]


def sampler_rows(dataset: dict, shared_out: dict, horizon: int, discount: float) -> list[Row]:
    starts = jnp.arange(len(dataset["observations"]) - horizon + 1)
    ours = jax.device_get(chunks_at(to_device_dataset(dataset), starts, horizon, discount))
    theirs = {k.split("/", 1)[1]: v for k, v in shared_out.items() if k.startswith("sampler/")}
    valid = theirs["valid"]
    rows = []
    for field in ("observations", "valid", "rewards", "masks", "next_observations"):
        rows.append(compare(f"chunk sampler: {field} at every start", ours[field], theirs[field], SAMPLER_TOLERANCE))
    inside = valid[..., None] > 0
    rows.append(
        compare(
            "chunk sampler: actions inside the episode",
            np.where(inside, ours["actions"], 0),
            np.where(inside, theirs["actions"], 0),
            SAMPLER_TOLERANCE,
        )
    )
    rows.append(
        compare(
            "chunk sampler: actions past the episode's end",
            ours["actions"],
            theirs["actions"],
            SAMPLER_TOLERANCE,
            DIFFERENCE_PADDING,
        )
    )
    return rows


def paper_size_cases() -> list[dict]:
    hidden = list(PAPER_SIZE["hidden"])
    base = {
        "actor_hidden_dims": hidden,
        "value_network_kwargs.hidden_dims": hidden,
        "horizon_length": PAPER_SIZE["horizon"],
        "action_chunking": True,
    }
    common = {"obs_dim": PAPER_SIZE["obs_dim"], "action_dim": PAPER_SIZE["action_dim"]}
    return [
        {
            "name": "qgf",
            "module": "agents.qgf",
            "class": "QGFAgent",
            "config": base,
            "store": "separate",
            "networks": ["policy", "critic", "value"],
            "ours": "qgf",
            "map": {"policy": "policy", "critic": "critic", "value": "value"},
            **common,
        },
        {
            "name": "edp",
            "module": "agents.edp",
            "class": "EDPAgent",
            "config": base,
            "store": "separate",
            "networks": ["policy", "critic", "value"],
            "ours": "edp",
            "map": {"policy": "policy", "critic": "critic", "value": "value"},
            **common,
        },
        {
            "name": "fql",
            "module": "agents.fql",
            "class": "FQLAgent",
            "config": {**base, "critic_loss_type": "iql"},
            "store": "module_dict",
            "networks": ["actor_bc_flow", "actor_onestep_flow", "critic", "value"],
            "ours": "fql",
            "map": {"policy": "actor_bc_flow", "one_step": "actor_onestep_flow", "critic": "critic", "value": "value"},
            **common,
        },
        {
            "name": "cfgrl",
            "module": "agents.cfgrl",
            "class": "CFGRLAgent",
            "config": base,
            "store": "separate",
            "networks": ["actor", "critic", "value"],
            "ours": "cfgrl",
            "map": {"policy": "actor", "critic": "critic", "value": "value"},
            **common,
        },
        {
            "name": "robust_q",
            "module": "agents.robust_q",
            "class": "RobustQAgent",
            "config": base,
            "store": "separate",
            "networks": ["policy", "critic", "value", "robust_critic"],
            "ours": "robust_q",
            "map": {
                "base.policy": "policy",
                "base.critic": "critic",
                "base.value": "value",
                "robust_critic": "robust_critic",
            },
            **common,
        },
    ]


def our_paper_size_counts(case: dict) -> dict:
    config = configs.get_config(case["ours"], "paper")
    config.update(horizon=PAPER_SIZE["horizon"])
    example = {
        "observations": jnp.zeros((1, case["obs_dim"])),
        "actions": jnp.zeros((1, PAPER_SIZE["horizon"], case["action_dim"])),
    }
    shapes = jax.eval_shape(lambda: agents.make(case["ours"], config).init(jax.random.PRNGKey(0), example))
    return {
        theirs: int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(field_of(shapes, ours).params)))
        for ours, theirs in case["map"].items()
    }


def count_rows(official_counts: dict) -> list[Row]:
    rows = []
    for case in paper_size_cases():
        ours = our_paper_size_counts(case)
        theirs = official_counts.get(case["name"], {})
        for network, count in ours.items():
            row = compare(
                f"paper size (4×1024): {case['name']} {network} parameter count",
                count,
                theirs.get(network, np.nan),
                0.0,
            )
            rows.append(row._replace(note=f"{count:,} here, {theirs.get(network, 0):,} official"))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Running both sides and writing the document.
# ---------------------------------------------------------------------------------------------------------------


def our_versions() -> dict:
    return {
        "python": sys.version.split()[0],
        **{m: importlib.metadata.version(m) for m in ("jax", "flax", "optax", "numpy")},
    }


def run(checkout: Path, official_python: Path, size: str, workdir: Path, names=()) -> tuple[list[Row], dict]:
    rng = np.random.default_rng(0)
    hidden = SIZES[size]
    batches = fixed_batches(rng)
    chosen = [m for m in methods(hidden) if not names or m["name"] in names]
    ours = [OurMethod(m, hidden, batches, np.random.default_rng(1)) for m in chosen]
    for method in ours:
        np.savez(workdir / f"{method.method['name']}.in.npz", **method.inputs)
    (workdir / "cases.json").write_text(json.dumps([m.case() for m in ours]))
    (workdir / "paper_size.json").write_text(json.dumps(paper_size_cases()))
    dataset = sampler_dataset(rng)
    shared = {
        "prng/key": np.asarray(jax.random.PRNGKey(7)),
        "sampler/horizon": np.asarray(HORIZON),
        "sampler/discount": np.asarray(0.999),
        **{f"dataset/{k}": v for k, v in dataset.items()},
    }
    np.savez(workdir / "shared.in.npz", **shared)

    driver = Path(__file__).with_name("parity_official.py")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(JAX_PLATFORMS="cpu", OGBENCH_DATASET_URL="http://127.0.0.1:9/")
    done = subprocess.run(
        [str(official_python), str(driver), str(checkout), str(workdir)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0 or not (workdir / "official.json").exists():
        sys.exit(
            f"error: the official side failed (exit {done.returncode}):\n{done.stderr[-3000:]}\n"
            f"check --official (a checkout of zhouzypaul/qgf@{OFFICIAL_COMMIT}) and --official_python"
        )
    report = json.loads((workdir / "official.json").read_text())
    shared_out = dict(np.load(workdir / "shared.out.npz"))
    rows = prng_rows(shared, shared_out)
    rows += sampler_rows(dataset, shared_out, HORIZON, 0.999)
    rows += count_rows(report["paper_size_counts"])
    for method in ours:
        official = dict(np.load(workdir / f"{method.method['name']}.out.npz"))
        rows += method.rows(official, report["cases"][method.method["name"]])
    return rows, report["versions"]


def under_our_pins(checkout: Path, workdir: Path) -> str:
    """What happens when this project's python (its jax / flax) imports the official qgf agent and runs one update."""
    driver = Path(__file__).with_name("parity_official.py")
    done = subprocess.run(
        [sys.executable, str(driver), str(checkout), str(workdir), "--probe"],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    if done.returncode != 0:
        return f"The probe itself failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
    probe = json.loads((workdir / "probe.json").read_text())
    versions = ", ".join(f"{k} {v}" for k, v in probe["versions"].items())
    return (
        f"Run by this project's python ({versions}) with the checkout on `sys.path`: importing the official "
        f"`agents.qgf`: {probe['import']}; creating it and running one `update` and one `sample_actions` (tiny "
        f"networks): {probe['run']}. `distrax` is imported only for the official Gaussian actors, which no compared "
        f"method uses. With the official pins of distrax (0.1.5) and tensorflow-probability (0.25.0) added to this "
        f"environment, the import fails inside tensorflow-probability's jax backend instead "
        f"(`AttributeError: module 'jax.interpreters.xla' has no attribute 'pytype_aval_mappings'`, checked by hand "
        f"on 2026-12-06): under jax 0.10 the official code runs only with distrax left out (or stubbed, as here)."
    )


def document(rows: list[Row], command: str, versions: dict, official_versions: dict, pins_section: str) -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    names = ("python", "jax", "flax", "optax", "numpy")
    versions_line = lambda v: ", ".join(f"{k} {v[k]}" for k in names)  # noqa: E731
    return f"""# Numerical parity with the official code

Written by `python -m bench.parity` on {today}: ours against zhouzypaul/qgf at commit {OFFICIAL_COMMIT}, each in its
own environment, float32 with matmul precision `highest` on both sides (CPU). Regenerate with:

    {command}

- this project: {versions_line(versions)}
- official code (its pins, CPU wheels): {versions_line(official_versions)}

What each check does is in bench/parity.py's docstring. `documented`: a difference listed in docs/differences.md (the
differences from the official code), shown with its size. Rows marked "(as released)" record where the official code
fails as it was released (differences.md lists these failures too); the same check with the smallest fix, said in the
row and applied at run time, follows them. Result: {counts(rows)}. Not compared yet:
{NOT_COMPARED}.

{table(rows)}

## The official code under this project's pins

{pins_section}
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, type=Path, help="a checkout of zhouzypaul/qgf@bc44a67")
    parser.add_argument(
        "--official_python",
        type=Path,
        default=None,
        help="python of an environment with the official pins (default: make ./.official-venv)",
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="default", help="hidden sizes of the networks")
    parser.add_argument("--methods", default="", help="comma-separated method names to compare (default: all)")
    parser.add_argument("--out", default="docs/parity.md", help="the document written ('' for none)")
    args = parser.parse_args(argv)
    checkout = args.official.resolve()
    if not (checkout / "agents" / "qgf.py").exists():
        print(
            f"error: {checkout} has no agents/qgf.py; --official must be a checkout of zhouzypaul/qgf@{OFFICIAL_COMMIT}"
        )
        return 2
    python = args.official_python or make_official_python(checkout, Path(".official-venv").resolve())
    with tempfile.TemporaryDirectory(prefix="parity-") as workdir:
        known = [m["name"] for m in methods(SIZES["fast"])]
        names = [n for n in args.methods.split(",") if n]
        unknown = [n for n in names if n not in known]
        if unknown:
            print(f"error: unknown --methods {unknown}; choose from {known}")
            return 2
        rows, official_versions = run(checkout, Path(python), args.size, Path(workdir), names)
        pins = under_our_pins(checkout, Path(workdir))
    print(table(rows))
    print(f"\n{counts(rows)}: {overall(rows)}\n\n{pins}")
    if args.out:
        command = "python -m bench.parity --official=<checkout> " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith(("--official", "--out"))
        )
        text = document(rows, command.strip(), our_versions(), official_versions, pins)
        previous = Path(args.out).read_text() if Path(args.out).exists() else ""
        Path(args.out).write_text(keep_section(previous, text))  # The Outcomes section (level 2) is kept.
        print(f"wrote {args.out}")
    return 0 if overall(rows) == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
