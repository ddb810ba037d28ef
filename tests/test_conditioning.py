"""networks.conditioning against the Flax modules it splits, and qgf's act against the unsplit sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import configs
from agents.flow_sampling import sample_chunks
from networks import Critic, VelocityField, aggregate
from networks.conditioning import condition_critic, condition_velocity_field, normalize

B, OBS, GOAL, D = 5, 6, 3, 4


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((B, OBS), (B, GOAL), (B, D), (B,)))


def relative_error(got, expected):
    return float(jnp.linalg.norm(got - expected) / jnp.linalg.norm(expected))


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(time_embedding="sinusoidal", layer_norm_last_hidden=False),
        dict(layer_norm=False, activation="relu"),
        dict(activation="mish", goals=True),
        dict(dtype=jnp.bfloat16, goals=True),
    ],
)
def test_conditioned_velocity_field_is_the_module(settings):
    settings = dict(settings)
    with_goals = settings.pop("goals", False)
    observations, goals, actions, times = inputs()
    goals = goals if with_goals else None
    module = VelocityField((32, 32, 32), D, **settings)
    params = module.init(jax.random.key(0), observations, actions, times, goals)
    context, velocity = condition_velocity_field(module, params, observations, goals)
    expected = module.apply(params, observations, actions, times, goals)
    # bfloat16 rounds the two halves of the first layer's input separately: the same products, summed in another order.
    tolerance = 1e-2 if settings.get("dtype") == jnp.bfloat16 else 1e-5
    assert relative_error(velocity(context, actions, times), expected) < tolerance
    assert float(jnp.abs(expected).mean()) > 1e-2  # Not a vacuous match of near-zero outputs.


@pytest.mark.parametrize("settings", [dict(), dict(layer_norm=False, activation="tanh", goals=True)])
def test_conditioned_critic_and_its_action_gradient_are_the_module(settings):
    settings = dict(settings)
    with_goals = settings.pop("goals", False)
    observations, goals, actions, _ = inputs(1)
    goals = goals if with_goals else None
    module = Critic((32, 32, 32), num_critics=3, **settings)
    params = module.init(jax.random.key(1), observations, actions, goals)
    context, q = condition_critic(module, params, observations, goals)
    assert context.shape[:2] == (B, 3)  # Batch first, so best-of-N can repeat it by rows.
    expected = module.apply(params, observations, actions, goals)
    assert relative_error(q(context, actions), expected) < 1e-5
    for how in ("min", "mean"):
        split_q = lambda a, how=how: jnp.sum(aggregate(q(context, a), how))  # noqa: E731
        module_q = lambda a, how=how: jnp.sum(aggregate(module.apply(params, observations, a, goals), how))  # noqa: E731
        assert relative_error(jax.grad(split_q)(actions), jax.grad(module_q)(actions)) < 1e-5


def test_normalize_gradient_is_layer_norms():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 16)) * 3.0 + 1.0, jnp.float32)
    cotangent = jnp.asarray(np.random.default_rng(3).normal(size=(4, 16)), jnp.float32)

    def layer_norm(x):  # Autodiff of the plain formula, centred variance.
        mean = jnp.mean(x, -1, keepdims=True)
        return (x - mean) / jnp.sqrt(jnp.mean(jnp.square(x - mean), -1, keepdims=True) + 1e-6)

    np.testing.assert_allclose(normalize(x), layer_norm(x), rtol=1e-5, atol=1e-5)
    _, expected = jax.vjp(layer_norm, x)
    _, got = jax.vjp(normalize, x)
    np.testing.assert_allclose(got(cotangent)[0], expected(cotangent)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("preset, best_of_n", [(None, 1), (None, 4), ("paper", 1), ("goals", 4)])
def test_act_is_the_unsplit_sampler(preset, best_of_n):
    """agent.act with the split networks gives the actions of the sampler on the modules' `apply`."""
    config = configs.get_config("qgf")
    if preset == "paper":  # The official network settings: sinusoidal time, no LayerNorm on the actor's last layer.
        config.update(time_embedding="sinusoidal", actor_layer_norm_last_hidden=False, guidance_critic="target")
    config.update(actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), horizon=2, best_of_n=best_of_n)
    agent = agents.make("qgf", config)
    rng = np.random.default_rng(4)
    batch = {
        "observations": jnp.asarray(rng.normal(size=(B, OBS)), jnp.float32),
        "actions": jnp.asarray(rng.uniform(-1, 1, size=(B, 2, 3)), jnp.float32),
        "rewards": jnp.zeros((B, 2)),
        "masks": jnp.ones((B, 2)),
        "valid": jnp.ones((B, 2)),
        "next_observations": jnp.zeros((B, 2, OBS)),
    }
    goals = jnp.asarray(rng.normal(size=(B, GOAL)), jnp.float32) if preset == "goals" else None
    if goals is not None:  # Goal-conditioned (gcqgf): every network also takes the goal.
        batch["goals"] = goals
    state = agent.init(jax.random.key(5), batch)
    key, weight = jax.random.key(6), jnp.linspace(0.0, 3.0, B)
    got = agent.act(state, batch["observations"], key, guidance_weight=weight, goals=goals)

    guide = state.target_critic if config.guidance_critic == "target" else state.critic

    def velocity_fn(inputs, actions, times):
        return state.policy.apply_fn(state.policy.params, inputs[0], actions, times, inputs[1])

    def critic_fn(inputs, actions):
        q = guide.apply_fn(guide.params, inputs[0], actions, inputs[1])
        return aggregate(q, config.critic_aggregation)

    inputs = (batch["observations"], goals)
    expected = sample_chunks(velocity_fn, critic_fn, inputs, key, 6, weight, config).reshape(B, 2, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    unguided = agent.act(state, batch["observations"], key, guidance_weight=0.0, goals=goals)
    assert float(jnp.abs(got - unguided)[1:].max()) > 1e-3  # The weights are large enough for guidance to matter.
