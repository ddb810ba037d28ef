"""The training-time baselines fql and edp on a one-state problem whose best action is known, and their presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import configs
from networks import aggregate

BEST = jnp.array([0.5, -0.5])  # The best chunk (H = 2, A = 1) of the single state.
STATE = jnp.array([[1.0, 0.0]])


def toy_batch(key, batch_size=64):
    """One state; the data's chunks are uniform in [-0.8, 0.8]²; reward −‖a − BEST‖², then done (mask 0).

    So Q(s, a) = −‖a − BEST‖² exactly, behaviour cloning's mean chunk is 0, and an RL policy must move to BEST.
    """
    actions = jax.random.uniform(key, (batch_size, 2, 1), minval=-0.8, maxval=0.8)
    reward = -jnp.sum(jnp.square(actions[:, :, 0] - BEST), axis=1)
    return {
        "observations": jnp.repeat(STATE, batch_size, axis=0),
        "actions": actions,
        "rewards": jnp.stack([reward, reward], axis=1),
        "masks": jnp.zeros((batch_size, 2)),
        "valid": jnp.ones((batch_size, 2)),
        "next_observations": jnp.repeat(STATE[:, None], 2, axis=1).repeat(batch_size, axis=0),
    }


def tiny_config(agent, **overrides):
    config = configs.get_config(agent)
    config.actor_hidden_dims = (32, 32)
    config.critic_hidden_dims = (32, 32)
    config.horizon = 2
    config.denoising_steps = 4
    config.lr = 3e-3
    config.target_rate = 0.05
    config.update(overrides)
    return config


def train(agent, num_steps, seed=0):
    """Returns the trained state and the metrics of the first and the last update (both on fresh batches)."""
    state = jax.jit(agent.init)(jax.random.PRNGKey(seed), toy_batch(jax.random.PRNGKey(seed + 1)))

    def step(state, key):
        return agent.update(state, toy_batch(key))

    keys = jax.random.split(jax.random.PRNGKey(seed + 2), num_steps)
    state, metrics = jax.jit(lambda s, k: jax.lax.scan(step, s, k))(state, keys)
    return state, jax.tree_util.tree_map(lambda m: m[0], metrics), jax.tree_util.tree_map(lambda m: m[-1], metrics)


def mean_distance_to_best(agent, state, guidance_weight=0.0):
    act = jax.jit(lambda s, o, k, w: agent.act(s, o, k, guidance_weight=w))
    actions = act(state, jnp.repeat(STATE, 200, axis=0), jax.random.PRNGKey(5), guidance_weight)
    assert actions.shape == (200, 2, 1) and float(jnp.abs(actions).max()) <= 1.0
    return float(jnp.mean(jnp.linalg.norm(actions[:, :, 0] - BEST, axis=1)))


# BC's samples are uniform in [-0.8, 0.8]², at a mean distance of about 0.9 from BEST, with Q about −0.93.
BC_DISTANCE = 0.8
BC_Q = -0.9


@pytest.fixture(scope="module")
def trained_fql():
    config = tiny_config("fql", alpha=0.1)
    agent = agents.make("fql", config)
    return (agent, *train(agent, 400))


@pytest.fixture(scope="module")
def trained_edp():
    config = tiny_config("edp", bc_weight=0.1)
    agent = agents.make("edp", config)
    return (agent, *train(agent, 400))


def test_fql_fits_the_critic_and_moves_its_one_step_policy_to_the_best_chunk(trained_fql):
    agent, state, first, last = trained_fql
    assert last["critic/loss"] < 0.2 * first["critic/loss"]
    assert last["policy/bc_loss"] < first["policy/bc_loss"]
    assert last["actor/q_mean"] > -0.1 > BC_Q  # Q of the one-step policy's chunks; the best is 0.
    assert mean_distance_to_best(agent, state) < 0.15 < BC_DISTANCE
    q = aggregate(state.critic.apply_fn(state.critic.params, STATE.repeat(2, 0), jnp.stack([BEST, -BEST])), "min")
    np.testing.assert_allclose(q, [0.0, -2.0], atol=0.3)


def test_fql_ignores_the_guidance_weight_and_rejects_guidance_settings(trained_fql):
    agent, state, _, _ = trained_fql
    key = jax.random.PRNGKey(0)
    act = jax.jit(agent.act)
    np.testing.assert_array_equal(act(state, STATE, key, 0.0), act(state, STATE, key, 10.0))
    with pytest.raises(ValueError, match="no test-time guidance"):
        agents.make("fql", tiny_config("fql", estimator="qgf"))


def test_edp_pulls_the_flow_itself_toward_the_best_chunk(trained_edp):
    agent, state, first, last = trained_edp
    assert last["critic/loss"] < 0.2 * first["critic/loss"]
    assert last["actor/q_mean"] > -0.5 > BC_Q  # Q of the clean-action estimates; the best is 0.
    assert mean_distance_to_best(agent, state) < 0.3 < BC_DISTANCE


def test_edp_can_add_test_time_guidance_on_top(trained_edp):
    _, state, _, _ = trained_edp
    guided = agents.make("edp", tiny_config("edp", estimator="qgf"))
    plain = agents.make("edp", tiny_config("edp"))
    observations, weights = jnp.repeat(STATE, 2, axis=0), jnp.array([0.0, 1.0])
    act = lambda agent: jax.jit(agent.act)(state, observations, jax.random.PRNGKey(1), weights)  # noqa: E731
    guided, plain = act(guided), act(plain)
    np.testing.assert_allclose(guided[0], plain[0], atol=1e-6)  # w = 0: the plain flow.
    assert not np.allclose(guided[1], plain[1])


@pytest.mark.parametrize("agent_name", ["fql", "edp"])
def test_main_reads_these_metrics_and_config_fields(agent_name):
    config = configs.get_config(agent_name, "demo")
    for field in ("estimator", "best_of_n", "guidance_weights", "batch_size", "horizon", "discount"):
        assert field in config
    config = tiny_config(agent_name)
    agent = agents.make(agent_name, config)
    state = jax.eval_shape(agent.init, jax.random.PRNGKey(0), toy_batch(jax.random.PRNGKey(0)))
    metrics = jax.eval_shape(agent.validate, state, toy_batch(jax.random.PRNGKey(1)))
    assert {"policy/bc_loss", "critic/q_mean", "critic/loss"} <= set(metrics)


def test_family_and_size_presets():
    assert configs.get_config("fql", "scene").alpha == 300 and configs.get_config("fql", "puzzle-4x4").alpha == 1000
    assert configs.get_config("edp", "cube-quadruple").bc_weight == 300
    assert configs.get_config("qgf", "puzzle-4x6").guidance_weights == configs.PAPER_GUIDANCE_WEIGHTS
    assert configs.get_run_config("cube-triple").env_name == "cube-triple-play-singletask-task1-v0"
    combined = configs.get_config("edp", "scene+size-0.8m")
    assert combined.bc_weight == 30 and combined.actor_hidden_dims == (512,) * 4 and combined.batch_size == 1024
    with pytest.raises(ValueError, match="unknown preset 'sise'"):
        configs.get_config("qgf", "scene+sise")


@pytest.mark.parametrize("preset, millions", [("size-0.8m", 0.8), ("size-3.2m", 3.2), ("size-12.7m", 12.7)])
def test_size_presets_hit_the_paper_actor_parameter_counts(preset, millions):
    from networks import VelocityField

    config = configs.get_config("qgf", "paper+" + preset)
    obs_dim, flat_dim = 46, 25  # cube-triple: observation 46, a chunk of 5 five-dimensional actions.
    field = VelocityField(
        config.actor_hidden_dims,
        flat_dim,
        time_embedding=config.time_embedding,
        layer_norm_last_hidden=config.actor_layer_norm_last_hidden,
    )
    shapes = jax.eval_shape(
        field.init, jax.random.PRNGKey(0), jnp.zeros((1, obs_dim)), jnp.zeros((1, flat_dim)), jnp.zeros(1)
    )
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    assert abs(count / 1e6 - millions) / millions < 0.07, count  # "About": 0.849M at width 512.
