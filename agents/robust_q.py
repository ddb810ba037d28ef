"""Robust-Q: qgf's base model plus a noise-conditioned critic whose gradient guides the flow at the noisy a_t.

Training is qgf's (flow-matching BC and the chunked IQL critic, agents/qgf.py), run unchanged, plus one more
network, Q_ρ(s, a_t, t) (networks/noise_conditioned_critic.py), regressed on the target critic at the clean
chunk (BASELINES.md §2.7):

    L_ρ = (1/B) Σ_b (Q_ρ(s_b, a_t,b, t_b) − sg(agg_j Q̄_j(s_b, A_b)))²,   a_t = (1 − t) a_0 + t A,  t ~ U(0, 1),

with a_0 ~ N(0, I), the target critic Q̄ of the step's pre-update snapshot and no `valid` weighting (as there).
`act` integrates a_{t+dt} = a_t + dt (v(s, a_t, t) + w ∇_{a_t} Q_ρ(s, a_t, t)) and clips, at qgf's guidance
weights (traced per sample, one compiled call for the sweep). Each sample gets the gradient of its own Q_ρ
(the gradient of the batch sum); the official code took the gradient of the batch mean, which divides every
sample's guidance by the number of observations in the call (docs/differences.md). Best-of-N and GradStep
apply as in qgf, with the critic `guidance_critic` names.

The official agent is broken as released (BASELINES.md §2.7, §5.1); this is the method it describes.
Batches are those of qgf (see agents/qgf.py).
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

from agents.agent import Agent, Batch
from agents.flow_sampling import sample_chunks
from agents.losses import flow_interpolation
from agents.qgf import QGFState, make_qgf
from agents.train_states import adam_train_state
from guidance.estimators import critic_gradient
from networks import aggregate
from networks.mixed_precision import compute_dtype
from networks.noise_conditioned_critic import NoiseConditionedCritic


class RobustQState(flax.struct.PyTreeNode):
    base: QGFState  # qgf's velocity field, critic, target critic and value, trained as qgf trains them.
    robust_critic: TrainState  # Q_ρ(s, a_t, t).
    rng: jax.Array  # Drives Q_ρ's noise and times (the base state has its own).


def noise_conditioned_critic_loss(robust_apply, params, observations, clean, target_q, key, goals=None):
    """L_ρ (module docstring) for flat chunks `clean` [B, D] and their (gradient-free) target Q [B]."""
    noisy, times, _ = flow_interpolation(key, clean, None)
    q = robust_apply(params, observations, noisy, times, goals)
    loss = jnp.mean(jnp.square(q - target_q))
    return loss, {"robust_critic/loss": loss, "robust_critic/q_mean": jnp.mean(q)}


def make_robust_q(config: ml_collections.ConfigDict) -> Agent:
    horizon = config.horizon
    base = make_qgf(config)
    robust_critic = NoiseConditionedCritic(
        config.critic_hidden_dims,
        config.activation,
        config.critic_layer_norm,
        dtype=compute_dtype(config.get("compute_dtype", "float32")),
    )

    def init(key: jax.Array, example_batch: Batch) -> RobustQState:
        base_key, robust_key, rng = jax.random.split(key, 3)
        flat_actions = example_batch["actions"].reshape(example_batch["actions"].shape[0], -1)
        params = robust_critic.init(
            robust_key,
            example_batch["observations"],
            flat_actions,
            jnp.zeros(flat_actions.shape[:1]),
            example_batch.get("goals"),
        )
        return RobustQState(
            base=base.init(base_key, example_batch),
            robust_critic=adam_train_state(robust_critic, params, config.lr),
            rng=rng,
        )

    def robust_loss(params, state: RobustQState, batch: Batch, key: jax.Array):
        observations, goals = batch["observations"], batch.get("goals")
        flat_actions = batch["actions"].reshape(batch["actions"].shape[0], -1)
        target_critic = state.base.target_critic
        target_q = aggregate(
            target_critic.apply_fn(target_critic.params, observations, flat_actions, goals), config.critic_aggregation
        )
        return noise_conditioned_critic_loss(
            state.robust_critic.apply_fn, params, observations, flat_actions, target_q, key, goals
        )

    def update(state: RobustQState, batch: Batch):
        rng, key = jax.random.split(state.rng)
        # Q_ρ's loss reads the target critic of the pre-update snapshot, as every other loss of the step.
        grads, robust_metrics = jax.grad(robust_loss, has_aux=True)(state.robust_critic.params, state, batch, key)
        base_state, base_metrics = base.update(state.base, batch)
        new_state = state.replace(
            base=base_state, robust_critic=state.robust_critic.apply_gradients(grads=grads), rng=rng
        )
        return new_state, {**base_metrics, **robust_metrics}

    def validate(state: RobustQState, batch: Batch):
        _, robust_metrics = robust_loss(state.robust_critic.params, state, batch, jax.random.fold_in(state.rng, 1))
        return {**base.validate(state.base, batch), **robust_metrics}

    def act(state: RobustQState, observations, key, guidance_weight=None, goals=None, unroll=False):
        weight = config.guidance_weight if guidance_weight is None else guidance_weight
        batch_size = observations.shape[0]
        weights = jnp.broadcast_to(jnp.asarray(weight, observations.dtype), (batch_size,))
        # The weights ride along with the observations, so best-of-N repeats them with each candidate.
        inputs = (observations, goals, weights)
        policy, robust = state.base.policy, state.robust_critic

        def velocity_fn(inputs, actions, times):
            observations, goals, weights = inputs
            velocity = policy.apply_fn(policy.params, observations, actions, times, goals)
            robust_q = lambda _, a: robust.apply_fn(robust.params, observations, a, times, goals)  # noqa: E731
            return velocity + weights[:, None] * critic_gradient(robust_q, None, actions)

        # Best-of-N and GradStep rank and ascend this critic (the official sampler's: the target Q̄).
        critic = state.base.target_critic if config.get("guidance_critic", "target") == "target" else state.base.critic

        def critic_fn(inputs, actions):
            return aggregate(critic.apply_fn(critic.params, inputs[0], actions, inputs[1]), config.critic_aggregation)

        flat_action_dim = horizon * state.base.action_dim
        actions = sample_chunks(
            velocity_fn, critic_fn, inputs, key, flat_action_dim, 0.0, config, estimator="none", unroll=unroll
        )
        return actions.reshape(batch_size, horizon, state.base.action_dim)

    return Agent(init=init, update=update, act=act, validate=validate)
