"""Analytic FLOP counts of qgf's update step and of one guided action, from the config's network shapes.

Only the Dense layers are counted: a layer of fan-in n and fan-out m costs n·m multiply-adds, i.e.
2·n·m FLOPs per sample, forward. A backward pass is taken as 2× its forward (the weight gradient and
the input gradient each cost one forward's multiply-adds). LayerNorm, GELU, the losses, Adam and the
Polyak update are left out: they are O(width) per sample, against O(width²) for the Dense layers, and
XLA's own count (`cost_analysis`, reported beside this one) includes them.

Two approximations, both small for these shapes: the first layer's backward also pays for the input
gradient, which XLA drops when the input is data (~2% of the update's count at 512×4); and a
backward pass "w.r.t. the input only" (guidance) is counted as exactly 1× forward.
"""

from collections.abc import Sequence

import ml_collections


def dense_flops(input_dim: int, hidden_dims: Sequence[int], output_dim: int) -> int:
    """Forward FLOPs of one sample through an MLP: 2 Σ fan_in · fan_out over its Dense layers."""
    dims = (input_dim, *hidden_dims, output_dim)
    return 2 * sum(n * m for n, m in zip(dims[:-1], dims[1:], strict=False))


def forward_flops(config: ml_collections.ConfigDict, obs_dim: int, action_dim: int, goal_dim: int = 0) -> dict:
    """Forward FLOPs per sample of the velocity field, the whole critic ensemble and the value.

    Input sizes follow `networks/`: the velocity field sees (s, g, a_t, t), each critic (s, g, a),
    the value (s, g); the action is the flattened chunk of H·A.
    """
    flat_action_dim = config.horizon * action_dim
    state_dim = obs_dim + goal_dim
    return {
        "velocity": dense_flops(state_dim + flat_action_dim + 1, config.actor_hidden_dims, flat_action_dim),
        "critic_ensemble": config.num_critics * dense_flops(state_dim + flat_action_dim, config.critic_hidden_dims, 1),
        "value": dense_flops(state_dim, config.critic_hidden_dims, 1),
    }


def update_flops(config: ml_collections.ConfigDict, obs_dim: int, action_dim: int, goal_dim: int = 0) -> int:
    """FLOPs of one `agent.update` on a batch of `config.batch_size` chunks.

    Per sample: velocity field fwd+bwd (3×), critic ensemble fwd+bwd (3×), target critic fwd (1×),
    value fwd+bwd on s (3×) and value fwd on s_{t+H} (1×).
    """
    f = forward_flops(config, obs_dim, action_dim, goal_dim)
    per_sample = 3 * f["velocity"] + 3 * f["critic_ensemble"] + f["critic_ensemble"] + 3 * f["value"] + f["value"]
    return config.batch_size * per_sample


# Per Euler step, in units of (velocity fwd, critic-ensemble fwd): what each estimator evaluates.
# `qgf` and `noisy`: v fwd, then Q fwd and Q backward w.r.t. its action input only (≈ 1× fwd).
_STEP_COST = {
    "none": (1, 0),
    "qgf": (1, 2),
    "noisy": (1, 2),
    # `jacobian` adds the velocity field's input backward (the sampler's v is not reused by the estimator).
    "jacobian": (3, 2),
}


def guided_action_flops(
    config: ml_collections.ConfigDict, obs_dim: int, action_dim: int, goal_dim: int = 0, estimator: str | None = None
) -> int:
    """FLOPs of one guided action chunk: K Euler steps of the sampler (× best-of-N, plus the scoring Q fwd).

    As qgf's `act` computes it (networks/conditioning.py): the observation's (and goal's) rows of each network's
    first layer once per observation, before the steps; every step's passes, forward and backward, only the
    action's (and time's) rows.
    """
    estimator = config.estimator if estimator is None else estimator
    if estimator not in _STEP_COST:
        raise ValueError(f"no FLOP model for estimator {estimator!r}; have {sorted(_STEP_COST)}")
    per_observation = forward_flops(config, obs_dim, action_dim, goal_dim)
    per_step_input = forward_flops(config, 0, action_dim)  # The same networks with no observation rows.
    velocity_passes, critic_passes = _STEP_COST[estimator]
    per_step = velocity_passes * per_step_input["velocity"] + critic_passes * per_step_input["critic_ensemble"]
    per_candidate = config.denoising_steps * per_step
    uses_critic = critic_passes > 0 or config.best_of_n > 1
    contexts = sum(
        per_observation[net] - per_step_input[net]
        for net in ("velocity", "critic_ensemble")
        if uses_critic or net == "velocity"
    )
    if config.best_of_n > 1:
        return contexts + config.best_of_n * (per_candidate + per_step_input["critic_ensemble"])
    return contexts + per_candidate
