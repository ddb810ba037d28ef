"""FQL: flow Q-learning, a training-time baseline (Park, Li, Levine 2025).

Networks, learnt together in one jitted step:
- the velocity field v(s, a_t, t), trained by flow-matching behaviour cloning only;
- a one-step policy μ(s, z), z ~ N(0, I) of the flattened chunk's size (an MLP on [s, g, z], no time input);
- the critic: with `critic_loss="iql"` (the paper's runs) the shared IQL critic of agents/iql.py (ensemble Q,
  Polyak target Q̄, expectile value V; Q regressed on R + γ^H · mask · V(s')); with `critic_loss="td"` FQL's own,
  Q regressed on R + γ^H · mask · agg Q̄(s', clip(μ(s', z'))) and no value network.

The actor loss (BASELINES.md §3.1), with w_b = valid[b, -1] the chunk's validity and w_{bd} the validity of
the action that dimension d belongs to:

    L_flow    = (1/(B·D)) Σ_{b,d} w_{bd} (v(s, a_t, t) − (a_1 − a_0))_d²      t ~ U(0, 1) (`flow_times="uniform"`)
    L_distill = (1/(B·D)) Σ_{b,d} w_{bd} (μ(s, z) − sg(Ψ(s, z)))_d²           Ψ: v's plain K-step Euler ODE, clipped
    L_Q       = −(1/B) Σ_b w_b agg_j Q_j(s, clip(μ(s, z), −1, 1))            online Q, current params, agg =
                                                                              `actor_q_aggregation` (official: mean)
    L_actor   = L_flow + α L_distill + L_Q

`normalize_q_loss=True` divides L_Q by sg(mean_b |agg_j Q_j|), so that α alone sets the trade-off whatever the
reward scale; the paper's α values (1000, 300) assume the raw Q (`normalize_q_loss=False`).

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
from agents.agent import Agent, Batch, flat_chunk
from agents.iql import apply_critic_gradients, init_critic_states, iql_loss, target_step
from agents.losses import chunk_td_target, critic_td_loss, flow_interpolation, flow_matching_loss_at
from agents.qgf import velocity_field
from agents.train_states import adam_train_state
from networks import MLP, aggregate
from networks.mixed_precision import compute_dtype
from networks.mlp import concat_inputs


class FQLState(flax.struct.PyTreeNode):
    policy: TrainState  # The velocity field (flow BC).
    one_step: TrainState  # μ(s, z), an MLP on [s, g, z].
    critic: TrainState
    target_critic: TrainState
    value: TrainState | None  # The IQL value with critic_loss="iql"; None with "td".
    rng: jax.Array  # Drives the flow-matching noise and times and the one-step policy's z in `update`.
    step: jax.Array
    action_dim: int = flax.struct.field(pytree_node=False)  # A, the size of one action of the chunk.


class FQLDraws(flax.struct.PyTreeNode):
    """The random inputs of one update's losses [B, D] (times [B]); `draw` samples them, tests build them by hand."""

    noisy: jax.Array  # a_t = (1 − t) a_0 + t a_1 of the flow-matching loss.
    times: jax.Array  # t.
    velocity_target: jax.Array  # a_1 − a_0.
    actor_noise: jax.Array  # z of the one-step policy's actor loss.
    next_noise: jax.Array  # z' of the "td" critic's next chunk.


def one_step_actions(apply_fn, params, observations, noise, goals):
    """clip(μ(s, z), −1, 1) and the unclipped μ (the distillation term uses the latter)."""
    raw = apply_fn(params, concat_inputs(observations, goals, noise))
    return jnp.clip(raw, -1.0, 1.0), raw


def flow_actions(state: FQLState, observations, noise, goals, steps: int):
    """Ψ(s, z): the velocity field's unguided K-step Euler integration from `noise`, clipped, without gradients."""

    def velocity_fn(inputs, actions, times):
        return state.policy.apply_fn(state.policy.params, inputs[0], actions, times, inputs[1])

    actions = guidance.sample(
        velocity_fn, None, (observations, goals), noise, guidance_weight=0.0, estimator="none", steps=steps
    )
    return jax.lax.stop_gradient(actions)


def draw(key: jax.Array, batch: Batch, config: ml_collections.ConfigDict) -> FQLDraws:
    batch_size = batch["actions"].shape[0]
    clean = batch["actions"].reshape(batch_size, -1)
    flow_key, actor_key, next_key = jax.random.split(key, 3)
    steps = None if config.flow_times == "uniform" else config.denoising_steps  # None: t ~ U(0, 1).
    noisy, times, velocity_target = flow_interpolation(flow_key, clean, steps)
    return FQLDraws(
        noisy=noisy,
        times=times,
        velocity_target=velocity_target,
        actor_noise=jax.random.normal(actor_key, clean.shape),
        next_noise=jax.random.normal(next_key, clean.shape),
    )


def critic_loss(params, state: FQLState, batch: Batch, draws: FQLDraws, config: ml_collections.ConfigDict):
    if config.critic_loss == "iql":
        return iql_loss(params, state, batch, config)
    # FQL's own TD critic: the target Q of the one-step policy's next chunk.
    observations, goals = batch["observations"], batch.get("goals")
    flat_actions = batch["actions"].reshape(batch["actions"].shape[0], -1)
    next_observations = batch["next_observations"][:, -1]
    next_actions, _ = one_step_actions(
        state.one_step.apply_fn, state.one_step.params, next_observations, draws.next_noise, goals
    )
    next_q = aggregate(
        state.target_critic.apply_fn(state.target_critic.params, next_observations, next_actions, goals),
        config.critic_aggregation,
    )
    td_target = chunk_td_target(batch["rewards"], batch["masks"], next_q, config.discount)
    return critic_td_loss(
        state.critic.apply_fn, params["critic"], observations, flat_actions, td_target, batch["valid"][:, -1], goals
    )


def actor_loss(params, state: FQLState, batch: Batch, draws: FQLDraws, config: ml_collections.ConfigDict):
    """L_actor = L_flow + α L_distill + L_Q (module docstring); `params["policy"]` and `params["one_step"]` get
    gradients."""
    observations, goals = batch["observations"], batch.get("goals")
    action_dim = batch["actions"].shape[2]
    chunk_weights = batch["valid"][:, -1]  # w_b
    action_weights = jnp.repeat(batch["valid"], action_dim, axis=1)  # w_{bd}
    flow_loss, _ = flow_matching_loss_at(
        state.policy.apply_fn,
        params["policy"],
        observations,
        draws.noisy,
        draws.times,
        draws.velocity_target,
        action_weights,
        goals,
    )
    target_actions = flow_actions(state, observations, draws.actor_noise, goals, config.denoising_steps)
    actions, raw_actions = one_step_actions(
        state.one_step.apply_fn, params["one_step"], observations, draws.actor_noise, goals
    )
    distill_loss = jnp.mean(jnp.square(raw_actions - target_actions) * action_weights)
    q = aggregate(state.critic.apply_fn(state.critic.params, observations, actions, goals), config.actor_q_aggregation)
    q_loss = -jnp.mean(chunk_weights * q)
    if config.normalize_q_loss:
        q_loss = q_loss / (jax.lax.stop_gradient(jnp.mean(jnp.abs(q))) + 1e-6)
    loss = flow_loss + config.alpha * distill_loss + q_loss
    return loss, {
        "policy/bc_loss": flow_loss,
        "actor/loss": loss,
        "actor/distill_loss": distill_loss,
        "actor/q_loss": q_loss,
        "actor/q_mean": jnp.mean(q),
    }


def fql_loss(params, state: FQLState, batch: Batch, draws: FQLDraws, config: ml_collections.ConfigDict):
    """The critic's (and value's) loss plus L_actor, at given draws; every network in `params` gets its gradient."""
    c_loss, c_metrics = critic_loss(params, state, batch, draws, config)
    a_loss, a_metrics = actor_loss(params, state, batch, draws, config)
    return c_loss + a_loss, {**c_metrics, **a_metrics}


def make_fql(config: ml_collections.ConfigDict) -> Agent:
    if config.estimator != "none" or config.best_of_n != 1:
        raise ValueError("fql has no test-time guidance: keep estimator='none' and best_of_n=1")
    if config.critic_loss not in ("iql", "td"):
        raise ValueError(f"unknown fql critic_loss {config.critic_loss!r}; choose 'iql' or 'td'")
    horizon = config.horizon

    def init(key: jax.Array, example_batch: Batch) -> FQLState:
        observations, goals = example_batch["observations"], example_batch.get("goals")
        chunk = example_batch["actions"]
        flat_actions = flat_chunk(chunk, horizon)
        flat_dim = flat_actions.shape[-1]
        dtype = compute_dtype(config.get("compute_dtype", "float32"))
        actor_options = dict(
            dtype=dtype,
            layer_norm_last_hidden=config.actor_layer_norm_last_hidden,
            output_init=config.actor_output_init,
        )
        velocity = velocity_field(config, flat_dim)
        one_step = MLP(config.actor_hidden_dims, flat_dim, config.activation, config.actor_layer_norm, **actor_options)
        policy_key, one_step_key, critic_key, rng = jax.random.split(key, 4)
        times = jnp.zeros(flat_actions.shape[:1])
        critics = init_critic_states(critic_key, config, observations, flat_actions, goals)
        if config.critic_loss == "td":
            critics["value"] = None
        one_step_params = one_step.init(one_step_key, concat_inputs(observations, goals, flat_actions))
        return FQLState(
            policy=adam_train_state(
                velocity, velocity.init(policy_key, observations, flat_actions, times, goals), config.lr
            ),
            one_step=adam_train_state(one_step, one_step_params, config.lr),
            **critics,
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            action_dim=chunk.shape[2],
        )

    def current_params(state: FQLState):
        params = {"policy": state.policy.params, "one_step": state.one_step.params, "critic": state.critic.params}
        if state.value is not None:
            params["value"] = state.value.params
        return params

    def update(state: FQLState, batch: Batch):
        rng, key = jax.random.split(state.rng)
        grads, metrics = jax.grad(fql_loss, has_aux=True)(
            current_params(state), state, batch, draw(key, batch, config), config
        )
        if state.value is not None:
            critics = apply_critic_gradients(state, grads, config)
        else:
            critic = state.critic.apply_gradients(grads=grads["critic"])
            critics = {"critic": critic, "target_critic": target_step(state, critic, config)}
        new_state = state.replace(
            policy=state.policy.apply_gradients(grads=grads["policy"]),
            one_step=state.one_step.apply_gradients(grads=grads["one_step"]),
            **critics,
            rng=rng,
            step=state.step + 1,
        )
        return new_state, metrics

    def validate(state: FQLState, batch: Batch):
        draws = draw(jax.random.fold_in(state.rng, 1), batch, config)
        _, metrics = fql_loss(current_params(state), state, batch, draws, config)
        return metrics

    def act(state: FQLState, observations, key, guidance_weight=None, goals=None, unroll=False):
        del guidance_weight  # FQL improves its policy at training time only.
        del unroll  # One call of the one-step policy: no loop to unroll.
        batch_size = observations.shape[0]
        noise = jax.random.normal(key, (batch_size, horizon * state.action_dim))
        actions, _ = one_step_actions(state.one_step.apply_fn, state.one_step.params, observations, noise, goals)
        return actions.reshape(batch_size, horizon, state.action_dim)

    return Agent(init=init, update=update, act=act, validate=validate)
