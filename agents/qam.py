"""QAM: Q-guided adjoint matching, a training-time baseline, as the paper ran it (BASELINES.md §3.3).

Three velocity fields (raw scalar time, no LayerNorm in the paper preset) next to the IQL critic
(agents/iql.py), all trained in one jitted step:
- the slow field u_slow(s, x_t, t), flow-matching behaviour cloning with t ~ U(0, 1), and its Polyak
  target ū (the "target slow actor", which every term below uses);
- the fast field u_fast, fine-tuned by adjoint matching toward the tilted policy ∝ behaviour · exp(β Q)
  (β = `inv_temp`).

One adjoint-matching loss, with K = `denoising_steps`, h = 1/K, t_i = i/K, σ_i = sqrt(2(1 − t_i + h)/(t_i + h)),
and every network but the loss's u_fast at its stored parameters (no gradient):
1. memoryless rollout: x_0 ~ N(0, I); x_{i+1} = x_i + h (2 u_fast(s, x_i, t_i) − x_i/(t_i + h)) + sqrt(h) σ_i ε_i
   for i < K − 1, and a last deterministic step x_K = x_{K−1} + h ū(s, x_{K−1}, t_{K−1});
2. adjoint: ã_K = −β ∇_x mean_j Q̄_j(s, clip(x, −1, 1)) at x_K (the target critic), then for i = K−1..0
   ã_i = ã_{i+1} + h (∂f_i/∂x)ᵀ ã_{i+1} at x_i, with f_i(x) = 2 ū(s, x, t_i + h) − x/(t_i + h);
3. L_adj = (1/B) Σ_b Σ_i ‖(2/σ_i)(u_fast(s, x_i, t_i) − ū(s, x_i, t_i)) + σ_i ã_i‖².
The official code's quirks are kept (docs/differences.md): the adjoint's vector–Jacobian product
uses time t_i + h at x_i, and it also runs through the last step although that step was the plain ODE step
of ū; L_adj is not weighted by `valid`.

L_actor = L_flow + L_adj. The actor group (u_slow, u_fast) and the critic group (Q, V) are each clipped to
global norm `clip_grad_norm` before their Adam steps; ū and Q̄ follow by Polyak steps (toward the networks
before this step's Adam step with `polyak_pre_update`, as the official code does, else after it).

`act` integrates u_fast alone with K plain Euler steps from N(0, I) and clips. QAM has no test-time
guidance: `guidance_weight` is accepted and ignored.

Batches are those of qgf (see agents/qgf.py).
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
from flax.training.train_state import TrainState

import guidance
from agents.agent import Agent, Batch, flat_chunk
from agents.iql import apply_critic_gradients, critic_params, init_critic_states, iql_loss
from agents.losses import flow_interpolation, flow_matching_loss_at
from agents.qgf import velocity_field
from agents.train_states import adam_train_state, clip_by_global_norm, polyak_update, target_train_state
from networks import aggregate


class QAMState(flax.struct.PyTreeNode):
    slow: TrainState  # u_slow: the behaviour-cloning velocity field.
    target_slow: TrainState  # ū: its Polyak target.
    fast: TrainState  # u_fast: the adjoint-matched velocity field that acts.
    critic: TrainState
    target_critic: TrainState
    value: TrainState
    rng: jax.Array  # Drives the flow-matching draws and the memoryless rollout's noise in `update`.
    step: jax.Array
    action_dim: int = flax.struct.field(pytree_node=False)  # A, the size of one action of the chunk.


def memoryless_sigmas(steps: int) -> jax.Array:
    """σ_i = sqrt(2 (1 − t_i + h) / (t_i + h)) for t_i = i/K, h = 1/K, i = 0..K−1."""
    h = 1.0 / steps
    t = jnp.arange(steps) * h
    return jnp.sqrt(2.0 * (1.0 - t + h) / (t + h))


def memoryless_rollout(fast_fn, slow_fn, x0: jax.Array, noises: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Step 1 of the module docstring: the states x_0..x_{K−1} [K, B, D] and the end point x_K [B, D].

    `fast_fn(x, t)` and `slow_fn(x, t)` (t a scalar) are u_fast and ū; `noises` [K − 1, B, D] are the ε_i.
    """
    steps = noises.shape[0] + 1
    h = 1.0 / steps
    sigmas = memoryless_sigmas(steps)

    def step(x, inputs):
        i, noise = inputs
        t = i * h
        x_next = x + h * (2.0 * fast_fn(x, t) - x / (t + h)) + jnp.sqrt(h) * sigmas[i] * noise
        return x_next, x

    last, earlier = jax.lax.scan(step, x0, (jnp.arange(steps - 1), noises))
    end = last + h * slow_fn(last, (steps - 1) * h)
    return jnp.concatenate([earlier, last[None]]), end


def adjoints(slow_fn, states: jax.Array, end_adjoint: jax.Array) -> jax.Array:
    """Step 2 of the module docstring: ã_0..ã_{K−1} [K, B, D] from ã_K and the states x_0..x_{K−1}.

    The vector–Jacobian products are per sample, since samples do not interact inside the network.
    """
    steps = states.shape[0]
    h = 1.0 / steps

    def step(adjoint, inputs):
        i, x = inputs
        t = i * h + h  # The official code's time: t_i + h.
        _, vjp = jax.vjp(lambda y: 2.0 * slow_fn(y, t) - y / t, x)
        adjoint = adjoint + h * vjp(adjoint)[0]
        return adjoint, adjoint

    _, all_adjoints = jax.lax.scan(step, end_adjoint, (jnp.arange(steps), states), reverse=True)
    return all_adjoints


def adjoint_matching_loss(fast_fn, rollout_fast_fn, slow_fn, q_fn, x0, noises, inv_temp: float):
    """L_adj of the module docstring, from the start x_0 [B, D] and the rollout noises ε_i [K − 1, B, D].

    `fast_fn(x, t)` is u_fast with the parameters to differentiate, `rollout_fast_fn` u_fast at its stored
    parameters, `slow_fn` ū and `q_fn(a) -> [B]` the (aggregated target) critic; only `fast_fn` in the
    residual carries a gradient. Returns the loss and ã_K (for metrics).
    """
    steps = noises.shape[0] + 1
    sigmas = memoryless_sigmas(steps)[:, None, None]
    states, end = memoryless_rollout(rollout_fast_fn, slow_fn, x0, noises)
    end_adjoint = -inv_temp * jax.grad(lambda x: jnp.sum(q_fn(jnp.clip(x, -1.0, 1.0))))(end)
    all_adjoints = adjoints(slow_fn, states, end_adjoint)
    states, all_adjoints = jax.lax.stop_gradient((states, all_adjoints))
    times = jnp.arange(steps) / steps
    slow_velocities = jax.lax.stop_gradient(jax.vmap(slow_fn)(states, times))
    residual = (2.0 / sigmas) * (jax.vmap(fast_fn)(states, times) - slow_velocities) + sigmas * all_adjoints
    return jnp.mean(jnp.sum(jnp.square(residual), axis=(0, 2))), end_adjoint


def make_qam(config: ml_collections.ConfigDict) -> Agent:
    if config.estimator != "none" or config.best_of_n != 1:
        raise ValueError("qam has no test-time guidance: keep estimator='none' and best_of_n=1")
    horizon = config.horizon
    steps = config.denoising_steps

    def init(key: jax.Array, example_batch: Batch) -> QAMState:
        observations, goals = example_batch["observations"], example_batch.get("goals")
        chunk = example_batch["actions"]
        flat_actions = flat_chunk(chunk, horizon)
        velocity = velocity_field(config, flat_actions.shape[-1])
        slow_key, fast_key, critic_key, rng = jax.random.split(key, 4)
        times = jnp.zeros(flat_actions.shape[:1])
        slow_params = velocity.init(slow_key, observations, flat_actions, times, goals)
        # As in the official code, u_fast starts from its own initialisation, not from u_slow.
        fast_params = velocity.init(fast_key, observations, flat_actions, times, goals)
        return QAMState(
            slow=adam_train_state(velocity, slow_params, config.lr),
            target_slow=target_train_state(velocity, slow_params),
            fast=adam_train_state(velocity, fast_params, config.lr),
            **init_critic_states(critic_key, config, observations, flat_actions, goals),
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            action_dim=chunk.shape[2],
        )

    def flow_loss(slow_params, state: QAMState, batch: Batch, key: jax.Array):
        """L_flow = (1/B) Σ_b w_b mean_dims(u_slow(s, x_t, t) − (x_1 − x_0))², t ~ U(0, 1), w_b = valid[b, -1]."""
        clean = batch["actions"].reshape(batch["actions"].shape[0], -1)
        noisy, times, target = flow_interpolation(key, clean, None)
        weights = batch["valid"][:, -1:]  # Whole chunks, as the official QAM weighs its BC loss.
        loss, _ = flow_matching_loss_at(
            state.slow.apply_fn, slow_params, batch["observations"], noisy, times, target, weights, batch.get("goals")
        )
        return loss, {"policy/bc_loss": loss}

    def adjoint_loss(fast_params, state: QAMState, batch: Batch, key: jax.Array):
        observations, goals = batch["observations"], batch.get("goals")
        batch_size = observations.shape[0]
        flat_dim = horizon * state.action_dim

        def field(train_state, params):
            def velocity(x, t):
                return train_state.apply_fn(params, observations, x, jnp.full((batch_size,), t, x.dtype), goals)

            return velocity

        def target_q(actions):
            q = state.target_critic.apply_fn(state.target_critic.params, observations, actions, goals)
            return aggregate(q, config.actor_q_aggregation)

        start_key, noise_key = jax.random.split(key)
        x0 = jax.random.normal(start_key, (batch_size, flat_dim))
        noises = jax.random.normal(noise_key, (steps - 1, batch_size, flat_dim))
        loss, end_adjoint = adjoint_matching_loss(
            field(state.fast, fast_params),
            field(state.fast, state.fast.params),
            field(state.target_slow, state.target_slow.params),
            target_q,
            x0,
            noises,
            config.inv_temp,
        )
        end_norm = jnp.mean(jnp.linalg.norm(end_adjoint, axis=-1))
        return loss, {"actor/adjoint_loss": loss, "actor/end_adjoint_norm": end_norm}

    def total_loss(params, state: QAMState, batch: Batch, key: jax.Array):
        flow_key, adjoint_key = jax.random.split(key)
        bc_loss, bc_metrics = flow_loss(params["slow"], state, batch, flow_key)
        adj_loss, adj_metrics = adjoint_loss(params["fast"], state, batch, adjoint_key)
        critic_loss, critic_metrics = iql_loss(params, state, batch, config)
        actor_metrics = {**bc_metrics, **adj_metrics, "actor/loss": bc_loss + adj_loss}
        return bc_loss + adj_loss + critic_loss, {**actor_metrics, **critic_metrics}

    def current_params(state: QAMState):
        return {"slow": state.slow.params, "fast": state.fast.params, **critic_params(state)}

    def update(state: QAMState, batch: Batch):
        rng, key = jax.random.split(state.rng)
        grads, metrics = jax.grad(total_loss, has_aux=True)(current_params(state), state, batch, key)
        # Two clipping groups, as in the official optimiser: the actors, and the critic with the value.
        actor_grads, actor_norm = clip_by_global_norm(
            {"slow": grads["slow"], "fast": grads["fast"]}, config.clip_grad_norm
        )
        critic_grads, critic_norm = clip_by_global_norm(
            {"critic": grads["critic"], "value": grads["value"]}, config.clip_grad_norm
        )
        slow = state.slow.apply_gradients(grads=actor_grads["slow"])
        # ū follows u_slow as the critic's target follows the critic (`polyak_pre_update`: official, pre-update).
        slow_source = state.slow if config.get("polyak_pre_update", False) else slow
        new_state = state.replace(
            slow=slow,
            target_slow=polyak_update(state.target_slow, slow_source.params, config.target_rate),
            fast=state.fast.apply_gradients(grads=actor_grads["fast"]),
            **apply_critic_gradients(state, critic_grads, config),
            rng=rng,
            step=state.step + 1,
        )
        norms = {"optimizer/actor_grad_norm": actor_norm, "optimizer/critic_grad_norm": critic_norm}
        return new_state, {**metrics, **norms}

    def validate(state: QAMState, batch: Batch):
        _, metrics = total_loss(current_params(state), state, batch, jax.random.fold_in(state.rng, 1))
        return metrics

    def act(state: QAMState, observations, key, guidance_weight=None, goals=None, unroll=False):
        del guidance_weight  # QAM improves its policy at training time only.
        batch_size = observations.shape[0]

        def velocity_fn(inputs, actions, times):
            return state.fast.apply_fn(state.fast.params, inputs[0], actions, times, inputs[1])

        noise = jax.random.normal(key, (batch_size, horizon * state.action_dim))
        actions = guidance.sample(
            velocity_fn,
            None,
            (observations, goals),
            noise,
            guidance_weight=0.0,
            estimator="none",
            steps=steps,
            unroll=unroll,
        )
        return actions.reshape(batch_size, horizon, state.action_dim)

    return Agent(init=init, update=update, act=act, validate=validate)
