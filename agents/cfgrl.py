"""CFGRL: classifier-free guidance of a flow policy on an optimality label (a training-time baseline).

The velocity field v(s, o, a_t, t) takes a label o ∈ {0, 1}. Flow matching fits label 1 only on chunks of
positive advantage, 1[Q̄(s, A) − V(s) > threshold] (target critic aggregated over the ensemble, the value with
stored parameters), and label 0, the unconditional behaviour cloning, on every chunk with a fixed weight:

    L = (1/B) Σ_b [ p_b · mean_d (u − v(s, 1, a_t, t))² + λ · mean_d (u − v(s, 0, a_t, t))² ],   u = a_1 − a_0,

with a_t, t (on the grid {0, 1/K, ..., 1}) and a_0 shared by both terms, p_b the positive label and λ =
`unconditional_weight` (BASELINES.md §3.4; no `valid` weighting, as there). The critic is the shared chunked
IQL critic (agents/iql.py). `act` integrates v = v(s, 0) + w (v(s, 1) − v(s, 0)); the weight w is traced per
sample, so the whole sweep (`CFGRL_GUIDANCE_WEIGHTS`) is one compiled call. Best-of-N and GradStep apply as in
qgf, with the critic `guidance_critic` names (the official CFGRL ranks by the online critic).

Batches are those of qgf (see agents/qgf.py).
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from agents.agent import Agent, Batch, flat_chunk
from agents.flow_sampling import sample_chunks
from agents.iql import init_critic_states, iql_loss, policy_and_critic_steps
from agents.losses import flow_interpolation
from agents.train_states import adam_train_state
from networks import aggregate
from networks.label_conditioned_velocity_field import LabelConditionedVelocityField
from networks.mixed_precision import compute_dtype


class CFGRLState(flax.struct.PyTreeNode):
    policy: TrainState  # The label-conditioned velocity field.
    critic: TrainState
    target_critic: TrainState
    value: TrainState
    rng: jax.Array
    step: jax.Array
    action_dim: int = flax.struct.field(pytree_node=False)


def labelled_flow_loss(velocity_apply, params, observations, clean, positive, key, steps, unconditional_weight, goals):
    """The CFGRL policy loss (module docstring) for flat chunks `clean` [B, D] and labels `positive` [B] in {0, 1}."""
    noisy, times, target = flow_interpolation(key, clean, steps)
    ones, zeros = jnp.ones_like(positive), jnp.zeros_like(positive)
    conditional = jnp.mean(jnp.square(target - velocity_apply(params, observations, ones, noisy, times, goals)), -1)
    unconditional = jnp.mean(jnp.square(target - velocity_apply(params, observations, zeros, noisy, times, goals)), -1)
    loss = jnp.mean(positive * conditional + unconditional_weight * unconditional)
    return loss, {
        "policy/bc_loss": jnp.mean(unconditional),
        "policy/conditional_loss": jnp.sum(positive * conditional) / jnp.maximum(jnp.sum(positive), 1.0),
        "policy/positive_fraction": jnp.mean(positive),
        "policy/loss": loss,
    }


def make_cfgrl(config: ml_collections.ConfigDict) -> Agent:
    horizon = config.horizon

    def init(key: jax.Array, example_batch: Batch) -> CFGRLState:
        observations, goals = example_batch["observations"], example_batch.get("goals")
        chunk = example_batch["actions"]
        flat_actions = flat_chunk(chunk, horizon)
        velocity = LabelConditionedVelocityField(
            config.actor_hidden_dims,
            flat_actions.shape[-1],
            config.activation,
            config.actor_layer_norm,
            dtype=compute_dtype(config.get("compute_dtype", "float32")),
            layer_norm_last_hidden=config.get("actor_layer_norm_last_hidden", True),
            output_init=config.get("actor_output_init", "glorot_uniform"),
        )
        policy_key, critic_key, rng = jax.random.split(key, 3)
        batch_size = flat_actions.shape[0]
        policy_params = velocity.init(
            policy_key, observations, jnp.zeros(batch_size, jnp.int32), flat_actions, jnp.zeros(batch_size), goals
        )
        return CFGRLState(
            policy=adam_train_state(velocity, policy_params, config.lr),
            **init_critic_states(critic_key, config, observations, flat_actions, goals),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            action_dim=chunk.shape[2],
        )

    def positive_labels(state: CFGRLState, observations, flat_actions, goals):
        """1[Q̄(s, A) − V(s) > threshold], from the target critic and the value's stored parameters."""
        q = aggregate(
            state.target_critic.apply_fn(state.target_critic.params, observations, flat_actions, goals),
            config.critic_aggregation,
        )
        advantage = q - state.value.apply_fn(state.value.params, observations, goals)
        return (advantage > config.advantage_threshold).astype(flat_actions.dtype)

    def total_loss(params, state: CFGRLState, batch: Batch, key: jax.Array):
        observations = batch["observations"]
        actor_goals = batch.get("actor_goals", batch.get("goals"))
        flat_actions = batch["actions"].reshape(batch["actions"].shape[0], -1)
        positive = positive_labels(state, observations, flat_actions, batch.get("goals"))
        actor_loss, actor_metrics = labelled_flow_loss(
            state.policy.apply_fn,
            params["policy"],
            observations,
            flat_actions,
            positive,
            key,
            config.denoising_steps,
            config.unconditional_weight,
            actor_goals,
        )
        critic_loss, critic_metrics = iql_loss(params, state, batch, config)
        return actor_loss + critic_loss, {**actor_metrics, **critic_metrics}

    update, validate = policy_and_critic_steps(total_loss, config)

    def act(state: CFGRLState, observations, key, guidance_weight=None, goals=None, unroll=False):
        weight = config.guidance_weight if guidance_weight is None else guidance_weight
        batch_size = observations.shape[0]
        weights = jnp.broadcast_to(jnp.asarray(weight, observations.dtype), (batch_size,))
        # The weights ride along with the observations, so best-of-N repeats them with each candidate.
        inputs = (observations, goals, weights)

        def velocity_fn(inputs, actions, times):
            observations, goals, weights = inputs
            labels = jnp.zeros(actions.shape[:1], jnp.int32)
            apply = state.policy.apply_fn
            unconditional = apply(state.policy.params, observations, labels, actions, times, goals)
            conditional = apply(state.policy.params, observations, labels + 1, actions, times, goals)
            return unconditional + weights[:, None] * (conditional - unconditional)

        # Best-of-N and GradStep rank and ascend this critic (the official CFGRL ranks by the online Q).
        critic = state.target_critic if config.get("guidance_critic", "online") == "target" else state.critic

        def critic_fn(inputs, actions):
            return aggregate(critic.apply_fn(critic.params, inputs[0], actions, inputs[1]), config.critic_aggregation)

        flat_action_dim = horizon * state.action_dim
        actions = sample_chunks(
            velocity_fn, critic_fn, inputs, key, flat_action_dim, 0.0, config, estimator="none", unroll=unroll
        )
        return actions.reshape(batch_size, horizon, state.action_dim)

    return Agent(init=init, update=update, act=act, validate=validate)
