"""EDP: efficient diffusion policies, a training-time baseline (Kang et al. 2023), here with a flow policy.

The velocity field is the actor. Its loss is bc_weight · (flow-matching loss) − Q(s, â), where
â = clip(a_t + (1 − t) v(s, a_t, t), −1, 1) is the one-step clean-action estimate from a noisy dataset
chunk a_t = (1 − t) a_0 + t a_1 (a_0 ~ N(0, I), t on the flow's grid {0, 1/K, ..., 1}); the Q term
backpropagates into the velocity field through â, so the flow itself is pulled toward high Q. The critic
is qgf's chunked IQL critic (ensemble Q with a Polyak target, expectile value V), so the state, `init` and
`act` are qgf's: acting is the flow's Euler integration, plain by default (`estimator="none"`); setting
`--agent.estimator` / `--agent.best_of_n` adds qgf's test-time guidance on top, at `guidance_weight`.

Batches are those of qgf (see agents/qgf.py); the whole actor loss (both terms) conditions on
`actor_goals` when a batch has them, as qgf's behaviour cloning does, and the critic on `goals`.
"""

import jax
import jax.numpy as jnp
import ml_collections

from agents.agent import Agent, Batch
from agents.losses import flow_matching_loss
from agents.qgf import QGFState, make_qgf
from guidance.estimators import clean_action_estimate
from networks import aggregate


def make_edp(config: ml_collections.ConfigDict) -> Agent:
    steps = config.denoising_steps

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

    def policy_loss(policy_params, state: QGFState, batch: Batch, key: jax.Array):
        observations, goals = batch["observations"], batch.get("actor_goals", batch.get("goals"))
        flat_actions = batch["actions"].reshape(batch["actions"].shape[0], -1)
        bc_key, actor_key = jax.random.split(key)
        bc_loss, bc_metrics = flow_matching_loss(
            state.policy.apply_fn, policy_params, observations, batch["actions"], batch["valid"], bc_key, steps, goals
        )
        q_term, actor_metrics = actor_q_loss(policy_params, state, observations, flat_actions, actor_key, goals)
        actor_loss = config.bc_weight * bc_loss + q_term
        return actor_loss, {**bc_metrics, **actor_metrics, "actor/loss": actor_loss}

    return make_qgf(config, policy_loss=policy_loss)
