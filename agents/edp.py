"""EDP: efficient diffusion policies, a training-time baseline (Kang et al. 2023), here with a flow policy.

The velocity field is the actor. Its loss is bc_weight · (flow-matching loss) − Q(s, â), where
â = clip(a_t + (1 − t) v(s, a_t, t), −1, 1) is the one-step clean-action estimate from a noisy dataset
chunk a_t = (1 − t) a_0 + t a_1 (a_0 ~ N(0, I), t on the flow's grid {0, 1/K, ..., 1}); the Q term
backpropagates into the velocity field through â, so the flow itself is pulled toward high Q. The critic
is qgf's chunked IQL critic (ensemble Q with a Polyak target, expectile value V), so the state, `init` and
`act` are qgf's: acting is the flow's Euler integration, plain by default (`estimator="none"`); setting
`--agent.estimator` / `--agent.best_of_n` adds qgf's test-time guidance on top, at `guidance_weight`.

Batches are those of qgf (see agents/qgf.py).
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.agent import Agent, Batch
from agents.losses import chunk_td_target, critic_td_loss, flow_matching_loss, value_loss
from agents.qgf import QGFState, make_qgf
from agents.train_states import polyak_update
from guidance.estimators import clean_action_estimate
from networks import aggregate


def make_edp(config: ml_collections.ConfigDict) -> Agent:
    steps = config.denoising_steps
    qgf = make_qgf(config)  # Same networks and state; only the policy's loss differs.

    def actor_q_loss(params, state: QGFState, observations, clean, key, goals):
        """−Q(s, â) at the clean-action estimate of a noisy dataset chunk; differentiable in the velocity field."""
        noise_key, time_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, clean.shape, clean.dtype)
        times = jax.random.randint(time_key, clean.shape[:1], 0, steps + 1).astype(clean.dtype) / steps
        noisy = (1.0 - times)[:, None] * noise + times[:, None] * clean
        velocity = state.policy.apply_fn(params, observations, noisy, times, goals)
        estimate = clean_action_estimate(noisy, times, velocity)
        q = aggregate(
            state.critic.apply_fn(state.critic.params, observations, estimate, goals), config.actor_q_aggregation
        )
        return -jnp.mean(q), {"actor/q_mean": jnp.mean(q)}

    def total_loss(params, state: QGFState, batch: Batch, key: jax.Array):
        observations, goals = batch["observations"], batch.get("goals")
        flat_actions = batch["actions"].reshape(batch["actions"].shape[0], -1)
        bc_key, actor_key = jax.random.split(key)
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
        q_term, actor_metrics = actor_q_loss(params["policy"], state, observations, flat_actions, actor_key, goals)
        actor_loss = config.bc_weight * bc_loss + q_term
        target_q = aggregate(
            state.target_critic.apply_fn(state.target_critic.params, observations, flat_actions, goals),
            config.critic_aggregation,
        )
        v_loss, v_metrics = value_loss(
            state.value.apply_fn, params["value"], observations, target_q, config.expectile, goals
        )
        next_values = jax.lax.stop_gradient(
            state.value.apply_fn(state.value.params, batch["next_observations"][:, -1], goals)
        )
        td_target = chunk_td_target(batch["rewards"], batch["masks"], next_values, config.discount)
        q_loss, q_metrics = critic_td_loss(
            state.critic.apply_fn, params["critic"], observations, flat_actions, td_target, batch["valid"][:, -1], goals
        )
        metrics = {**bc_metrics, **actor_metrics, "actor/loss": actor_loss, **v_metrics, **q_metrics}
        return actor_loss + v_loss + q_loss, metrics

    def current_params(state: QGFState):
        return {"policy": state.policy.params, "critic": state.critic.params, "value": state.value.params}

    def update(state: QGFState, batch: Batch):
        rng, key = jax.random.split(state.rng)
        grads, metrics = jax.grad(total_loss, has_aux=True)(current_params(state), state, batch, key)
        critic = state.critic.apply_gradients(grads=grads["critic"])
        new_state = state.replace(
            policy=state.policy.apply_gradients(grads=grads["policy"]),
            critic=critic,
            target_critic=polyak_update(state.target_critic, critic.params, config.target_rate),
            value=state.value.apply_gradients(grads=grads["value"]),
            rng=rng,
            step=state.step + 1,
        )
        return new_state, metrics

    def validate(state: QGFState, batch: Batch):
        _, metrics = total_loss(current_params(state), state, batch, jax.random.fold_in(state.rng, 1))
        return metrics

    return Agent(init=qgf.init, update=update, act=qgf.act, validate=validate)
