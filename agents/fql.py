"""FQL: flow Q-learning, a training-time baseline (Park, Li, Levine 2025).

Three networks learn together in one jitted step:
- the velocity field v(s, a_t, t), trained by flow-matching behaviour cloning only (as in qgf);
- a one-step policy μ(s, z), z ~ N(0, I) of the flattened chunk's size, trained to
  α ‖μ(s, z) − ODE_v(s, z)‖² − Q(s, clip(μ(s, z))) / stop_grad(mean |Q|), where ODE_v(s, z) is the
  velocity field's plain Euler integration from z (a distillation target, no gradient) and the Q term
  is normalised by its own mean magnitude, so that α alone sets the trade-off whatever the reward scale;
- a critic ensemble Q(s, a_chunk) fit by chunked TD toward R + γ^H · mask · aggregate(Q_target(s_{t+H},
  clip(μ(s_{t+H}, z')))), with a Polyak target. There is no value network.

`act` returns clip(μ(s, z)) as [B, H, A]: one network call per decision. FQL has no test-time guidance:
`guidance_weight` is accepted and ignored, and the config must keep `estimator="none"`, `best_of_n=1`.

Batches are those of qgf (see agents/qgf.py).
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

import guidance
from agents.agent import Agent, Batch
from agents.losses import chunk_td_target, critic_td_loss, flow_matching_loss
from agents.train_states import adam_train_state, polyak_update, target_train_state
from networks import MLP, Critic, VelocityField, aggregate
from networks.mlp import concat_inputs


class FQLState(flax.struct.PyTreeNode):
    policy: TrainState  # The velocity field (flow BC).
    one_step: TrainState  # μ(s, z), an MLP on [s, g, z].
    critic: TrainState
    target_critic: TrainState
    rng: jax.Array  # Drives the flow-matching noise and the one-step policy's z in `update`.
    step: jax.Array
    action_dim: int = flax.struct.field(pytree_node=False)  # A, the size of one action of the chunk.


def make_fql(config: ml_collections.ConfigDict) -> Agent:
    if config.estimator != "none" or config.best_of_n != 1:
        raise ValueError("fql has no test-time guidance: keep estimator='none' and best_of_n=1")
    horizon = config.horizon
    steps = config.denoising_steps

    def one_step_actions(apply_fn, params, observations, noise, goals):
        """clip(μ(s, z), −1, 1) and the unclipped μ (the distillation term uses the latter)."""
        raw = apply_fn(params, concat_inputs(observations, goals, noise))
        return jnp.clip(raw, -1.0, 1.0), raw

    def flow_actions(state: FQLState, observations, noise, goals):
        """The velocity field's unguided Euler integration from `noise` (clipped), without gradients."""

        def velocity_fn(inputs, actions, times):
            return state.policy.apply_fn(state.policy.params, inputs[0], actions, times, inputs[1])

        actions = guidance.sample(
            velocity_fn, None, (observations, goals), noise, guidance_weight=0.0, estimator="none", steps=steps
        )
        return jax.lax.stop_gradient(actions)

    def init(key: jax.Array, example_batch: Batch) -> FQLState:
        observations, goals = example_batch["observations"], example_batch.get("goals")
        chunk = example_batch["actions"]
        if chunk.ndim != 3 or chunk.shape[1] != horizon:
            raise ValueError(f"expected actions [B, H={horizon}, A], got shape {chunk.shape}")
        flat_actions = chunk.reshape(chunk.shape[0], -1)
        flat_dim = flat_actions.shape[-1]
        velocity = VelocityField(config.actor_hidden_dims, flat_dim, config.activation, config.actor_layer_norm)
        one_step = MLP(config.actor_hidden_dims, flat_dim, config.activation, config.actor_layer_norm)
        critic = Critic(config.critic_hidden_dims, config.num_critics, config.activation, config.critic_layer_norm)
        policy_key, one_step_key, critic_key, rng = jax.random.split(key, 4)
        times = jnp.zeros(flat_actions.shape[:1])
        critic_params = critic.init(critic_key, observations, flat_actions, goals)
        one_step_params = one_step.init(one_step_key, concat_inputs(observations, goals, flat_actions))
        return FQLState(
            policy=adam_train_state(
                velocity, velocity.init(policy_key, observations, flat_actions, times, goals), config.lr
            ),
            one_step=adam_train_state(one_step, one_step_params, config.lr),
            critic=adam_train_state(critic, critic_params, config.lr),
            target_critic=target_train_state(critic, critic_params),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            action_dim=chunk.shape[2],
        )

    def total_loss(params, state: FQLState, batch: Batch, key: jax.Array):
        observations, goals = batch["observations"], batch.get("goals")
        batch_size = observations.shape[0]
        flat_actions = batch["actions"].reshape(batch_size, -1)
        bc_key, next_key, actor_key = jax.random.split(key, 3)
        bc_loss, bc_metrics = flow_matching_loss(
            state.policy.apply_fn,
            params["policy"],
            observations,
            batch["actions"],
            batch["valid"],
            bc_key,
            steps,
            goals,
        )

        # Critic: chunked TD toward the target Q of the one-step policy's next chunk.
        next_observations = batch["next_observations"][:, -1]
        next_noise = jax.random.normal(next_key, flat_actions.shape)
        next_actions, _ = one_step_actions(
            state.one_step.apply_fn, state.one_step.params, next_observations, next_noise, goals
        )
        next_q = aggregate(
            state.target_critic.apply_fn(state.target_critic.params, next_observations, next_actions, goals),
            config.critic_aggregation,
        )
        td_target = chunk_td_target(batch["rewards"], batch["masks"], next_q, config.discount)
        q_loss, q_metrics = critic_td_loss(
            state.critic.apply_fn, params["critic"], observations, flat_actions, td_target, batch["valid"][:, -1], goals
        )

        # One-step policy: distil the flow's ODE output and maximise the (normalised) critic.
        noise = jax.random.normal(actor_key, flat_actions.shape)
        target_actions = flow_actions(state, observations, noise, goals)
        actions, raw_actions = one_step_actions(state.one_step.apply_fn, params["one_step"], observations, noise, goals)
        distill_loss = jnp.mean(jnp.square(raw_actions - target_actions))
        q = aggregate(
            state.critic.apply_fn(state.critic.params, observations, actions, goals), config.actor_q_aggregation
        )
        q_scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(q)))
        actor_q_loss = -jnp.mean(q) / (q_scale + 1e-6)
        actor_loss = config.alpha * distill_loss + actor_q_loss
        actor_metrics = {
            "actor/loss": actor_loss,
            "actor/distill_loss": distill_loss,
            "actor/q_loss": actor_q_loss,
            "actor/q_mean": jnp.mean(q),
        }
        return bc_loss + q_loss + actor_loss, {**bc_metrics, **q_metrics, **actor_metrics}

    def current_params(state: FQLState):
        return {"policy": state.policy.params, "one_step": state.one_step.params, "critic": state.critic.params}

    def update(state: FQLState, batch: Batch):
        rng, key = jax.random.split(state.rng)
        grads, metrics = jax.grad(total_loss, has_aux=True)(current_params(state), state, batch, key)
        critic = state.critic.apply_gradients(grads=grads["critic"])
        new_state = state.replace(
            policy=state.policy.apply_gradients(grads=grads["policy"]),
            one_step=state.one_step.apply_gradients(grads=grads["one_step"]),
            critic=critic,
            target_critic=polyak_update(state.target_critic, critic.params, config.target_rate),
            rng=rng,
            step=state.step + 1,
        )
        return new_state, metrics

    def validate(state: FQLState, batch: Batch):
        _, metrics = total_loss(current_params(state), state, batch, jax.random.fold_in(state.rng, 1))
        return metrics

    def act(state: FQLState, observations, key, guidance_weight=None, goals=None, unroll=False):
        del guidance_weight  # FQL improves its policy at training time only.
        del unroll  # One call of the one-step policy: no loop to unroll.
        batch_size = observations.shape[0]
        noise = jax.random.normal(key, (batch_size, horizon * state.action_dim))
        actions, _ = one_step_actions(state.one_step.apply_fn, state.one_step.params, observations, noise, goals)
        return actions.reshape(batch_size, horizon, state.action_dim)

    return Agent(init=init, update=update, act=act, validate=validate)
