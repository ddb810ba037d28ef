"""EDP: efficient diffusion policies, a training-time baseline (Kang et al. 2023), here with a flow policy.

The velocity field is the actor. Its loss is bc_weight · (flow-matching loss) − agg Q(s, â), where
â = clip(a_t + (1 − t) v(s, a_t, t), −1, 1) is the one-step clean-action estimate from a noisy dataset
chunk a_t = (1 − t) a_0 + t a_1 (a_0 ~ N(0, I), t on the flow's grid {0, 1/K, ..., 1}), the same a_t, t and
velocity as the flow-matching term's (one draw and one network call, as in the official code); the Q term
backpropagates into the velocity field through â, so the flow itself is pulled toward high Q. Q is the critic
named by `actor_q_critic` ("target": Q̄, as the official run, with agg = `actor_q_aggregation` = min) with its
current parameters (no gradient reaches the critic from this term). The critic
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
from agents.losses import flow_interpolation, flow_matching_loss_at
from agents.qgf import QGFState, make_qgf
from guidance.estimators import clean_action_estimate
from networks import aggregate


def make_edp(config: ml_collections.ConfigDict) -> Agent:
    steps = config.denoising_steps

    def policy_loss(policy_params, state: QGFState, batch: Batch, key: jax.Array):
        """bc_weight · L_BC − mean_b agg Q(s, â), both from one draw (a_t, t) and one velocity-field call."""
        observations, goals = batch["observations"], batch.get("actor_goals", batch.get("goals"))
        batch_size, _, action_dim = batch["actions"].shape
        noisy, times, target = flow_interpolation(key, batch["actions"].reshape(batch_size, -1), steps)
        weights = jnp.repeat(batch["valid"], action_dim, axis=1)
        bc_loss, velocity = flow_matching_loss_at(
            state.policy.apply_fn, policy_params, observations, noisy, times, target, weights, goals
        )
        estimate = clean_action_estimate(noisy, times, velocity)  # Differentiable in the velocity field.
        critic = state.target_critic if config.actor_q_critic == "target" else state.critic
        q = aggregate(critic.apply_fn(critic.params, observations, estimate, goals), config.actor_q_aggregation)
        actor_loss = config.bc_weight * bc_loss - jnp.mean(q)
        return actor_loss, {"policy/bc_loss": bc_loss, "actor/q_mean": jnp.mean(q), "actor/loss": actor_loss}

    return make_qgf(config, policy_loss=policy_loss)
