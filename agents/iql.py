"""The chunked IQL critic shared by qgf, edp, fql (`critic_loss="iql"`) and any other agent that needs it.

Three networks, each its own train state: the critic ensemble Q_j(s, A) on the flattened chunk A, its
Polyak target Q̄_j, and the value V(s). Per update (BASELINES.md §1.7):

    L_V = (1/B) Σ_b w_b ℓ_τ(agg_j Q̄_j(s_b, A_b) − V(s_b))          ℓ_τ: the expectile loss, τ = `expectile`
    L_Q = (1/(E·B)) Σ_j Σ_b w_b (Q_j(s_b, A_b) − y_b)²,   y_b = R_b + γ^H · m_b · V(s'_b)

with w_b = valid[b, -1] (a chunk that runs past its episode's end trains neither network), agg the
`critic_aggregation` over the E = `num_critics` members (the paper: min), V in y_b the online value with
its current parameters and no gradient, and after the Adam step Q̄ ← (1 − ρ) Q̄ + ρ Q (ρ = `target_rate`; Q the
updated critic, or with `polyak_pre_update` the critic before this step, as in the official code).

Interface. An agent whose state (a flax PyTreeNode) holds fields `critic`, `target_critic` and `value`
composes the critic from four pure functions:

    state = MyState(**init_critic_states(key, config, observations, flat_actions, goals), ...)
    params = {..., **critic_params(state)}                 # {"critic": ..., "value": ...}
    loss, metrics = iql_loss(params, state, batch, config) # add to the agent's own loss, one jax.grad
    state = state.replace(**apply_critic_gradients(state, grads, config), ...)

An agent whose only other network is a `policy` (and whose state has `rng` and `step`) gets its whole
`update` and `validate` from `policy_and_critic_steps(total_loss, config)`.

`config` is read for `critic_hidden_dims`, `num_critics`, `activation`, `critic_layer_norm`, `compute_dtype`, `lr`,
`critic_aggregation`, `expectile`, `discount` and `target_rate`; batches are those of agents/qgf.py.
"""

import jax
import ml_collections
from flax.training.train_state import TrainState

from agents.agent import Batch
from agents.losses import chunk_td_target, critic_td_loss, value_loss
from agents.train_states import adam_train_state, clip_by_global_norm, polyak_update, target_train_state
from networks import Critic, Value, aggregate
from networks.mixed_precision import compute_dtype


def critic_networks(config: ml_collections.ConfigDict) -> tuple[Critic, Value]:
    dtype = compute_dtype(config.get("compute_dtype", "float32"))
    critic = Critic(
        config.critic_hidden_dims, config.num_critics, config.activation, config.critic_layer_norm, dtype=dtype
    )
    value = Value(config.critic_hidden_dims, config.activation, config.critic_layer_norm, dtype=dtype)
    return critic, value


def init_critic_states(
    key: jax.Array, config: ml_collections.ConfigDict, observations, flat_actions, goals=None
) -> dict[str, TrainState]:
    """{"critic", "target_critic", "value"}: Adam states for Q and V, and Q̄ starting as a copy of Q."""
    critic, value = critic_networks(config)
    critic_key, value_key = jax.random.split(key)
    critic_params = critic.init(critic_key, observations, flat_actions, goals)
    return {
        "critic": adam_train_state(critic, critic_params, config.lr),
        "target_critic": target_train_state(critic, critic_params),
        "value": adam_train_state(value, value.init(value_key, observations, goals), config.lr),
    }


def critic_params(state) -> dict:
    """The parameters `iql_loss` differentiates."""
    return {"critic": state.critic.params, "value": state.value.params}


def iql_loss(params: dict, state, batch: Batch, config: ml_collections.ConfigDict):
    """L_V + L_Q (module docstring); `params["critic"]`, `params["value"]` get the gradients."""
    observations, goals = batch["observations"], batch.get("goals")
    flat_actions = batch["actions"].reshape(batch["actions"].shape[0], -1)
    weights = batch["valid"][:, -1]
    target_q = aggregate(
        state.target_critic.apply_fn(state.target_critic.params, observations, flat_actions, goals),
        config.critic_aggregation,
    )
    v_loss, v_metrics = value_loss(
        state.value.apply_fn, params["value"], observations, target_q, config.expectile, weights, goals
    )
    next_observations = batch["next_observations"][:, -1]  # A goal stays fixed along the chunk.
    next_values = jax.lax.stop_gradient(state.value.apply_fn(state.value.params, next_observations, goals))
    td_target = chunk_td_target(batch["rewards"], batch["masks"], next_values, config.discount)
    q_loss, q_metrics = critic_td_loss(
        state.critic.apply_fn, params["critic"], observations, flat_actions, td_target, weights, goals
    )
    return v_loss + q_loss, {**v_metrics, **q_metrics}


def apply_critic_gradients(state, grads: dict, config: ml_collections.ConfigDict) -> dict[str, TrainState]:
    """One Adam step of Q and V from `grads["critic"]`, `grads["value"]`, and the Polyak step of Q̄."""
    critic = state.critic.apply_gradients(grads=grads["critic"])
    return {
        "critic": critic,
        "target_critic": target_step(state, critic, config),
        "value": state.value.apply_gradients(grads=grads["value"]),
    }


def target_step(state, new_critic: TrainState, config: ml_collections.ConfigDict) -> TrainState:
    """Q̄ ← (1 − ρ) Q̄ + ρ Q, with Q the critic after this update's Adam step, or, with `polyak_pre_update`, before
    it (the official code's: its target lags one more step)."""
    source = state.critic if config.get("polyak_pre_update", False) else new_critic
    return polyak_update(state.target_critic, source.params, config.target_rate)


def policy_and_critic_steps(total_loss, config: ml_collections.ConfigDict, clip_grad_norm: float | None = None):
    """`update(state, batch)` and `validate(state, batch)` of an agent whose state holds `policy`, the IQL critic
    states, `rng` and `step`, trained by one gradient of `total_loss(params, state, batch, key) -> (loss, metrics)`
    over {"policy", "critic", "value"} (every loss reads the pre-update snapshot of the other networks).
    `clip_grad_norm` clips all the gradients as one group first (DAC/QSM's optimiser)."""

    def current_params(state) -> dict:
        return {"policy": state.policy.params, **critic_params(state)}

    def update(state, batch: Batch):
        rng, key = jax.random.split(state.rng)
        grads, metrics = jax.grad(total_loss, has_aux=True)(current_params(state), state, batch, key)
        if clip_grad_norm is not None:
            grads, grad_norm = clip_by_global_norm(grads, clip_grad_norm)
            metrics = {**metrics, "optimizer/grad_norm": grad_norm}
        new_state = state.replace(
            policy=state.policy.apply_gradients(grads=grads["policy"]),
            **apply_critic_gradients(state, grads, config),
            rng=rng,
            step=state.step + 1,
        )
        return new_state, metrics

    def validate(state, batch: Batch):
        _, metrics = total_loss(current_params(state), state, batch, jax.random.fold_in(state.rng, 1))
        return metrics

    return update, validate
