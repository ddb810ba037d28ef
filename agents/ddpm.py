"""The DDPM noise-predictor actor shared by the DAC and QSM baselines (BASELINES.md §3.5, §3.6).

Both train a noise predictor ε_θ(s, x_k, k) (networks.NoisePredictor) on the official "vp" schedule with
K = `denoising_steps` steps, next to the shared IQL critic (agents/iql.py), in one jitted step:

- draw k ~ U{1..K}, ε ~ N(0, I) and noise the dataset chunk A: x_k = sqrt(ᾱ_k) A + sqrt(1 − ᾱ_k) ε;
- g = ∇_a mean_j Q̄_j(s, a) at a = x_k, the target critic's gradient at the noisy chunk (no gradient to θ);
- L_actor = α · L_bc + L_q, with L_bc = (1/B) Σ_b w_b mean_dims(ε − ε_θ(s, x_k, k))² (w_b = valid[b, -1])
  and L_q the method's own term `q_term(predicted_noise, g, sqrt(1 − ᾱ_k), w)` (agents/dac.py, agents/qsm.py);
- one gradient of L_actor + the IQL losses, clipped to global norm `clip_grad_norm` over all networks
  together, then each network's Adam step and the target critic's Polyak step.

`act` runs the released sampler, which is not textbook DDPM ancestral sampling: from x_K ~ N(0, I), for
k = K..1 it predicts x̂_0 = (x − sqrt(1 − ᾱ_k) ε_θ(s, x, k)) / sqrt(ᾱ_k), sets x ← x̂_0 and, while k > 1,
re-noises with sqrt(β_k) z, z ~ N(0, I); the result (x̂_0 of k = 1) is clipped to [−1, 1]. These agents
have no test-time guidance: `guidance_weight` is accepted and ignored.

Batches are those of qgf (see agents/qgf.py).
"""

from collections.abc import Callable
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.training.train_state import TrainState

from agents.agent import Agent, Batch, flat_chunk
from agents.iql import init_critic_states, iql_loss, policy_and_critic_steps
from agents.train_states import adam_train_state
from guidance.estimators import critic_gradient
from networks import NoisePredictor, aggregate
from networks.mixed_precision import compute_dtype

# q_term(predicted_noise [B, D], critic_gradient [B, D], noise_std [B, 1], weights [B]) -> (loss, metrics)
QTerm = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict]]


class Schedule(NamedTuple):
    """β_k and ᾱ_k = Π_{k' ≤ k} (1 − β_k') for k = 0..K, with β_0 = 0 and ᾱ_0 = 1."""

    betas: np.ndarray
    alpha_bars: np.ndarray


def vp_schedule(steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> Schedule:
    """The official "vp" schedule: β_k = 1 − exp(−β_min/K − ½(β_max − β_min)(2k − 1)/K²), k = 1..K."""
    k = np.arange(1, steps + 1, dtype=np.float64)
    betas = 1.0 - np.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2.0 * k - 1.0) / steps**2)
    betas = np.concatenate([[0.0], betas])
    return Schedule(betas.astype(np.float32), np.cumprod(1.0 - betas).astype(np.float32))


def sample_chunks(noise_fn, inputs, noises: jax.Array, schedule: Schedule, unroll: bool = False) -> jax.Array:
    """The released sampler (module docstring), unclipped; `noise_fn(inputs, x [B, D], k [B]) -> ε̂ [B, D]`.

    `noises` [K, B, D] holds x_K = noises[0] and the re-noising draws: step k (for k = K..2) adds
    sqrt(β_k) · noises[K − k + 1]. `unroll` unrolls the loop (for FLOP counting, see guidance.sample).
    """
    steps = len(schedule.betas) - 1
    betas, alpha_bars = jnp.asarray(schedule.betas), jnp.asarray(schedule.alpha_bars)
    batch_size = noises.shape[1]

    def denoise(x, inputs_k):
        k, renoise = inputs_k
        predicted = noise_fn(inputs, x, jnp.full((batch_size,), k))
        clean = (x - jnp.sqrt(1.0 - alpha_bars[k]) * predicted) / jnp.sqrt(alpha_bars[k])
        return clean + jnp.sqrt(betas[k]) * renoise, None

    # The last step (k = 1) re-noises with zeros: its x̂_0 is the sample.
    renoises = jnp.concatenate([noises[1:], jnp.zeros_like(noises[:1])])
    x, _ = jax.lax.scan(denoise, noises[0], (jnp.arange(steps, 0, -1), renoises), unroll=unroll)
    return x


def actor_loss(noise_fn, critic_fn, inputs, clean, weights, k, noise, schedule: Schedule, alpha: float, q_term):
    """α · L_bc + L_q (module docstring) for given steps k [B] and noise ε [B, D]; the clean chunks are [B, D].

    `noise_fn(inputs, x, k)` is ε_θ with the parameters to differentiate; `critic_fn(inputs, a) -> [B]` the
    (aggregated target) critic, whose gradient at x_k carries no gradient to θ.
    """
    alpha_bar = jnp.asarray(schedule.alpha_bars)[k][:, None]
    noise_std = jnp.sqrt(1.0 - alpha_bar)
    noisy = jnp.sqrt(alpha_bar) * clean + noise_std * noise
    gradient = jax.lax.stop_gradient(critic_gradient(critic_fn, inputs, noisy))
    predicted = noise_fn(inputs, noisy, k)
    bc_loss = jnp.mean(weights * jnp.mean(jnp.square(noise - predicted), axis=-1))
    q_loss, q_metrics = q_term(predicted, gradient, noise_std, weights)
    loss = alpha * bc_loss + q_loss
    return loss, {"policy/bc_loss": bc_loss, "actor/q_loss": q_loss, "actor/loss": loss, **q_metrics}


class DDPMState(flax.struct.PyTreeNode):
    policy: TrainState  # The noise predictor ε_θ(s, x_k, k).
    critic: TrainState
    target_critic: TrainState
    value: TrainState
    rng: jax.Array  # Drives the step and noise draws of `update`.
    step: jax.Array
    action_dim: int = flax.struct.field(pytree_node=False)  # A, the size of one action of the chunk.


def make_ddpm_agent(config: ml_collections.ConfigDict, q_term: QTerm) -> Agent:
    """A DDPM actor trained by α · L_bc + q_term next to the IQL critic (module docstring)."""
    if config.estimator != "none" or config.best_of_n != 1:
        raise ValueError(f"{config.agent_name} has no test-time guidance: keep estimator='none' and best_of_n=1")
    horizon = config.horizon
    schedule = vp_schedule(config.denoising_steps)

    def noise_predictor(flat_action_dim: int) -> NoisePredictor:
        dtype = compute_dtype(config.get("compute_dtype", "float32"))
        return NoisePredictor(
            config.actor_hidden_dims, flat_action_dim, config.time_features, config.actor_activation, dtype
        )

    def init(key: jax.Array, example_batch: Batch) -> DDPMState:
        observations, goals = example_batch["observations"], example_batch.get("goals")
        chunk = example_batch["actions"]
        flat_actions = flat_chunk(chunk, horizon)
        network = noise_predictor(flat_actions.shape[-1])
        policy_key, critic_key, rng = jax.random.split(key, 3)
        steps = jnp.ones(flat_actions.shape[:1], jnp.int32)
        return DDPMState(
            policy=adam_train_state(
                network, network.init(policy_key, observations, flat_actions, steps, goals), config.lr
            ),
            **init_critic_states(critic_key, config, observations, flat_actions, goals),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            action_dim=chunk.shape[2],
        )

    def policy_loss(policy_params, state: DDPMState, batch: Batch, key: jax.Array):
        clean = batch["actions"].reshape(batch["actions"].shape[0], -1)
        step_key, noise_key = jax.random.split(key)
        k = jax.random.randint(step_key, clean.shape[:1], 1, config.denoising_steps + 1)
        noise = jax.random.normal(noise_key, clean.shape, clean.dtype)

        def noise_fn(inputs, x, k):
            return state.policy.apply_fn(policy_params, inputs[0], x, k, inputs[1])

        def target_q(inputs, actions):
            q = state.target_critic.apply_fn(state.target_critic.params, inputs[0], actions, inputs[1])
            return aggregate(q, config.actor_q_aggregation)

        inputs = (batch["observations"], batch.get("goals"))
        weights = batch["valid"][:, -1]
        return actor_loss(noise_fn, target_q, inputs, clean, weights, k, noise, schedule, config.alpha, q_term)

    def total_loss(params, state: DDPMState, batch: Batch, key: jax.Array):
        actor_total, policy_metrics = policy_loss(params["policy"], state, batch, key)
        critic_loss, critic_metrics = iql_loss(params, state, batch, config)
        return actor_total + critic_loss, {**policy_metrics, **critic_metrics}

    update, validate = policy_and_critic_steps(total_loss, config, clip_grad_norm=config.clip_grad_norm)

    def act(state: DDPMState, observations, key, guidance_weight=None, goals=None, unroll=False):
        del guidance_weight  # DAC and QSM improve their policy at training time only.
        batch_size = observations.shape[0]

        def noise_fn(inputs, x, k):
            return state.policy.apply_fn(state.policy.params, inputs[0], x, k, inputs[1])

        noises = jax.random.normal(key, (config.denoising_steps, batch_size, horizon * state.action_dim))
        actions = sample_chunks(noise_fn, (observations, goals), noises, schedule, unroll=unroll)
        return jnp.clip(actions, -1.0, 1.0).reshape(batch_size, horizon, state.action_dim)

    return Agent(init=init, update=update, act=act, validate=validate)
