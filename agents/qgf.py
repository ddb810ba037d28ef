"""QGF: Q-guided flow, a policy improved entirely at test time.

Training is two independent supervised-style objectives in one jitted step: flow-matching behaviour
cloning of the dataset's action chunks (the velocity field), and the shared IQL critic of agents/iql.py
(an ensemble Q with a Polyak target, and an expectile value V) fit by chunked TD. No actor-critic loss
exists. At test time `act` integrates the flow with `guidance.sample`, adding w ∇Q at the clean-action
estimate to every Euler step; `config.estimator` selects the gradient estimator (`qgf`, `jacobian`, `noisy`,
`bptt`, `none`) and `config.best_of_n` draws several guided candidates and keeps the highest-Q one. Q is
`config.guidance_critic`'s ensemble ("target": the Polyak copy Q̄, as the official sampler; "online")
reduced by `config.critic_aggregation`; it also ranks best-of-N and GradStep's ascent. `act` evaluates both
networks through networks/conditioning.py, which computes the observations' share of their first layers once
per call rather than at each of the K Euler steps (same parameters, same actions up to float rounding).

Batches carry `observations [B, O]`, `actions [B, H, A]`, `rewards [B, H]` (discounted, cumulative),
`masks [B, H]`, `valid [B, H]`, `next_observations [B, H, O]` and optionally `goals [B, G]` (every
network then takes the goal as an extra input) and `actor_goals [B, G]`: when present, the velocity
field's behaviour cloning conditions on these instead (goal-conditioned batches draw the actor's goals
from their own distribution, as OGBench's agents do), while the critic and value keep `goals`.
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from agents.agent import Agent, Batch, flat_chunk
from agents.flow_sampling import sample_chunks
from agents.iql import critic_networks, init_critic_states, iql_loss, policy_and_critic_steps
from agents.losses import flow_matching_loss
from agents.train_states import adam_train_state
from networks import VelocityField, aggregate
from networks.conditioning import condition_critic, condition_velocity_field
from networks.mixed_precision import compute_dtype


class QGFState(flax.struct.PyTreeNode):
    policy: TrainState  # The velocity field.
    critic: TrainState
    target_critic: TrainState
    value: TrainState
    rng: jax.Array  # Drives the flow-matching noise and times of `update`.
    step: jax.Array
    action_dim: int = flax.struct.field(pytree_node=False)  # A, the size of one action of the chunk.


def velocity_field(config: ml_collections.ConfigDict, flat_action_dim: int) -> VelocityField:
    """The velocity field v(s, a_t, t) built from the config's actor settings (qgf's and every flow agent's)."""
    return VelocityField(
        config.actor_hidden_dims,
        flat_action_dim,
        config.activation,
        config.actor_layer_norm,
        dtype=compute_dtype(config.get("compute_dtype", "float32")),
        time_embedding=config.time_embedding,
        layer_norm_last_hidden=config.actor_layer_norm_last_hidden,
        output_init=config.actor_output_init,
    )


def guiding_critic(config: ml_collections.ConfigDict, state: QGFState, observations, goals=None):
    """(context, q): `q(context, flat action chunks [B, D]) -> [B]` is the Q that guides the sampler and ranks
    best-of-N, `config.critic_aggregation` over the ensemble; the context holds the observations' share of its first
    layer (networks/conditioning.py). The official sampler guides with the target Q̄ (`guidance_critic="target"`)."""
    guide = state.target_critic if config.guidance_critic == "target" else state.critic
    context, members = condition_critic(critic_networks(config)[0], guide.params, observations, goals)
    return context, lambda context, actions: aggregate(members(context, actions), config.critic_aggregation)


def make_qgf(config: ml_collections.ConfigDict, policy_loss=None) -> Agent:
    """The qgf agent. `policy_loss(policy_params, state, batch, key) -> (loss, metrics)` replaces flow-matching
    BC as the velocity field's loss (EDP adds a Q term there); the critic, value, state and `act` stay qgf's."""
    horizon = config.horizon
    steps = config.denoising_steps

    def init(key: jax.Array, example_batch: Batch) -> QGFState:
        observations, goals = example_batch["observations"], example_batch.get("goals")
        chunk = example_batch["actions"]
        flat_actions = flat_chunk(chunk, horizon)
        velocity = velocity_field(config, flat_actions.shape[-1])
        policy_key, critic_key, rng = jax.random.split(key, 3)
        times = jnp.zeros(flat_actions.shape[:1])
        return QGFState(
            policy=adam_train_state(
                velocity, velocity.init(policy_key, observations, flat_actions, times, goals), config.lr
            ),
            **init_critic_states(critic_key, config, observations, flat_actions, goals),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            action_dim=chunk.shape[2],
        )

    def behaviour_cloning_loss(policy_params, state: QGFState, batch: Batch, key: jax.Array):
        return flow_matching_loss(
            state.policy.apply_fn,
            policy_params,
            batch["observations"],
            batch["actions"],
            batch["valid"],
            key,
            steps,
            batch.get("actor_goals", batch.get("goals")),
        )

    loss_of_policy = policy_loss or behaviour_cloning_loss

    def total_loss(params, state: QGFState, batch: Batch, key: jax.Array):
        actor_loss, actor_metrics = loss_of_policy(params["policy"], state, batch, key)
        critic_loss, critic_metrics = iql_loss(params, state, batch, config)
        return actor_loss + critic_loss, {**actor_metrics, **critic_metrics}

    update, validate = policy_and_critic_steps(total_loss, config)

    def act(state: QGFState, observations, key, guidance_weight=None, goals=None, unroll=False):
        weight = config.guidance_weight if guidance_weight is None else guidance_weight
        batch_size = observations.shape[0]
        flat_action_dim = horizon * state.action_dim
        # Both networks' first layers split by input rows: the observations' share is computed here, once, and
        # each Euler step adds the action's (networks/conditioning.py); the contexts ride along as the sampler's
        # per-row inputs, so best-of-N repeats them with the rows.
        velocity_context, velocity = condition_velocity_field(
            velocity_field(config, flat_action_dim), state.policy.params, observations, goals
        )
        critic_context, critic = guiding_critic(config, state, observations, goals)

        def velocity_fn(contexts, actions, times):
            return velocity(contexts[0], actions, times)

        def critic_fn(contexts, actions):
            return critic(contexts[1], actions)

        contexts = (velocity_context, critic_context)
        actions = sample_chunks(velocity_fn, critic_fn, contexts, key, flat_action_dim, weight, config, unroll=unroll)
        return actions.reshape(batch_size, horizon, state.action_dim)

    return Agent(init=init, update=update, act=act, validate=validate)
