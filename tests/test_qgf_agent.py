"""The qgf agent on tiny problems whose answers are known in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import configs
from networks import aggregate

GAMMA = 0.5
# Two states, one-hot. A: reward −1 at every step forever, so Q = V = −1 / (1 − γ) = −2.
# B: reward +1, then the task is done (mask 0), so Q = V = 1.
STATES = jnp.array([[1.0, 0.0], [0.0, 1.0]])
Q_TRUE = jnp.array([-1.0 / (1.0 - GAMMA), 1.0])
# Each state has one deterministic expert chunk (H = 2, A = 2), which BC must reproduce.
CHUNKS = jnp.array([[[0.5, -0.5], [0.2, 0.1]], [[-0.6, 0.3], [0.0, -0.4]]])


def tiny_config(**overrides):
    config = configs.get_config("qgf")
    config.actor_hidden_dims = (64, 64)
    config.critic_hidden_dims = (64, 64)
    config.horizon = 2
    config.discount = GAMMA
    config.lr = 1e-3
    config.target_rate = 0.05
    config.update(overrides)
    return config


def closed_form_batch(key, batch_size=64):
    state = jax.random.randint(key, (batch_size,), 0, 2)
    is_a = (state == 0).astype(jnp.float32)[:, None]
    rewards_a = jnp.array([-1.0, -1.0 - GAMMA])  # cumulative discounted rewards of the chunk
    rewards_b = jnp.array([1.0, 1.0])
    return {
        "observations": STATES[state],
        "actions": CHUNKS[state],
        "rewards": is_a * rewards_a + (1 - is_a) * rewards_b,
        "masks": is_a * jnp.ones(2) + (1 - is_a) * jnp.zeros(2),
        "valid": jnp.ones((batch_size, 2)),
        "next_observations": jnp.repeat(STATES[state][:, None], 2, axis=1),
    }


def train(agent, state, num_steps, seed=0):
    def step(state, key):
        return agent.update(state, closed_form_batch(key))

    return jax.jit(lambda s, keys: jax.lax.scan(step, s, keys))(
        state, jax.random.split(jax.random.PRNGKey(seed), num_steps)
    )


@pytest.fixture(scope="module")
def trained():
    agent = agents.make("qgf", tiny_config())
    state = agent.init(jax.random.PRNGKey(0), closed_form_batch(jax.random.PRNGKey(1)))
    first_metrics = agent.validate(state, closed_form_batch(jax.random.PRNGKey(2), 256))
    state, metrics = train(agent, state, 1500)
    return agent, state, first_metrics


def test_update_fits_q_and_v_to_the_closed_form_returns(trained):
    agent, state, _ = trained
    q = aggregate(state.critic.apply_fn(state.critic.params, STATES, CHUNKS.reshape(2, -1)), "min")
    v = state.value.apply_fn(state.value.params, STATES)
    np.testing.assert_allclose(q, Q_TRUE, atol=0.1)
    np.testing.assert_allclose(v, Q_TRUE, atol=0.1)


def test_update_lowers_bc_loss_and_bc_reproduces_the_expert_chunk(trained):
    agent, state, first_metrics = trained
    last_metrics = agent.validate(state, closed_form_batch(jax.random.PRNGKey(2), 256))
    # The floor is the t = 1 term, where a_0 is unknowable: 1 / (K + 1) of the unit noise variance.
    assert last_metrics["policy/bc_loss"] < 0.1 * first_metrics["policy/bc_loss"] + 1.0 / 11
    observations = jnp.repeat(STATES, 50, axis=0)
    actions = agent.act(state, observations, jax.random.PRNGKey(3), guidance_weight=0.0)
    assert actions.shape == (100, 2, 2)
    errors = np.abs(np.asarray(actions - jnp.repeat(CHUNKS, 50, axis=0)))
    assert errors.mean() < 0.03 and np.quantile(errors, 0.95) < 0.1, (errors.mean(), np.quantile(errors, 0.95))


def test_invalid_chunks_do_not_reach_the_critic_loss():
    agent = agents.make("qgf", tiny_config())
    batch = closed_form_batch(jax.random.PRNGKey(0))
    state = agent.init(jax.random.PRNGKey(0), batch)
    invalid = jnp.arange(64) % 3 == 0
    batch["valid"] = batch["valid"].at[:, 1].set(jnp.where(invalid, 0.0, 1.0))
    poisoned = dict(batch, rewards=jnp.where(invalid[:, None], 1e6, batch["rewards"]))
    assert agent.validate(state, batch)["critic/loss"] == agent.validate(state, poisoned)["critic/loss"]


def test_horizon_one_is_one_step_iql_target():
    from agents.losses import chunk_td_target

    rewards, masks, next_values = jnp.array([[2.0]]), jnp.array([[1.0]]), jnp.array([3.0])
    assert float(chunk_td_target(rewards, masks, next_values, 0.9)[0]) == pytest.approx(2.0 + 0.9 * 3.0)
    masks = jnp.array([[1.0, 0.0]])
    rewards = jnp.array([[2.0, 2.5]])
    assert float(chunk_td_target(rewards, masks, next_values, 0.9)[0]) == pytest.approx(2.5)


def test_vmap_over_seeds_gives_different_states():
    agent = agents.make("qgf", tiny_config())
    batch = closed_form_batch(jax.random.PRNGKey(0))
    states = jax.vmap(agent.init, (0, None))(jax.random.split(jax.random.PRNGKey(0), 3), batch)
    states, metrics = jax.jit(jax.vmap(agent.update, (0, None)))(states, batch)
    assert metrics["policy/bc_loss"].shape == (3,)
    kernels = jax.tree_util.tree_leaves(states.policy.params)[0]
    assert kernels.shape[0] == 3
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        for tree in (states.policy.params, states.critic.params, states.value.params):
            leaves = jax.tree_util.tree_leaves(tree)
            assert not all(np.allclose(leaf[i], leaf[j]) for leaf in leaves if leaf.ndim > 1)
    assert np.all(np.asarray(states.step) == 1)


def test_guided_act_raises_q_and_weight_array_batches_a_sweep(trained):
    agent, state, _ = trained
    observations = jnp.repeat(STATES[:1], 200, axis=0)
    weights = jnp.repeat(jnp.array([0.0, 5.0]), 100)

    def critic_fn(s, a):
        return aggregate(state.critic.apply_fn(state.critic.params, s, a), "min")

    actions = agent.act(state, observations, jax.random.PRNGKey(4), guidance_weight=weights)
    q = critic_fn(observations, actions.reshape(200, -1))
    assert float(q[100:].mean()) > float(q[:100].mean())
    assert float(jnp.abs(actions).max()) <= 1.0


@pytest.mark.parametrize("estimator, best_of_n", [("jacobian", 1), ("qgf", 4)])
def test_act_follows_the_configured_estimator_and_best_of_n(trained, estimator, best_of_n):
    _, state, _ = trained
    agent = agents.make("qgf", tiny_config(estimator=estimator, best_of_n=best_of_n))
    actions = agent.act(state, STATES, jax.random.PRNGKey(0), guidance_weight=0.1)
    assert actions.shape == (2, 2, 2) and bool(jnp.all(jnp.isfinite(actions)))
    default = agents.make("qgf", tiny_config()).act(state, STATES, jax.random.PRNGKey(0), guidance_weight=0.1)
    assert not np.allclose(actions, default)


def test_registry_builds_every_agent_and_rejects_unknown_names():
    for name in agents.AGENTS:
        assert isinstance(agents.make(name, configs.get_config(name)), agents.Agent)
    with pytest.raises(ValueError, match="unknown agent 'qfg'"):
        agents.make("qfg", configs.get_config("qgf"))
    with pytest.raises(ValueError, match="unknown preset"):
        configs.get_config("qgf", "papre")


@pytest.mark.parametrize("agent_name", ["gcqgf", "edp"])
def test_actor_goals_condition_the_policy_loss_only(agent_name):
    """The velocity field's loss reads `actor_goals` (falling back to `goals`); the critic and value read `goals`."""
    config = configs.get_config(agent_name)
    config.update(actor_hidden_dims=(16,), critic_hidden_dims=(16,), horizon=2)
    agent = agents.make(agent_name, config)
    batch = closed_form_batch(jax.random.PRNGKey(0), batch_size=8)
    goals = jax.random.normal(jax.random.PRNGKey(1), (8, 2))
    other_goals = jax.random.normal(jax.random.PRNGKey(2), (8, 2))
    state = jax.jit(agent.init)(jax.random.PRNGKey(0), dict(batch, goals=goals))
    jitted = jax.jit(agent.validate)  # the same key every call: metrics differ only through the batch

    def validate(state, batch):
        return {name: float(value) for name, value in jitted(state, batch).items()}

    base = validate(state, dict(batch, goals=goals, actor_goals=goals))
    assert validate(state, dict(batch, goals=goals)) == pytest.approx(base)  # no actor_goals: `goals`
    actor_changed = validate(state, dict(batch, goals=goals, actor_goals=other_goals))
    critic_changed = validate(state, dict(batch, goals=other_goals, actor_goals=goals))
    for name in ("critic/loss", "value/loss"):
        assert actor_changed[name] == base[name] and critic_changed[name] != base[name], name
    assert actor_changed["policy/bc_loss"] != base["policy/bc_loss"]
    assert critic_changed["policy/bc_loss"] == base["policy/bc_loss"]


def test_goal_conditioned_presets_keep_ogbench_relabelling():
    relabelling = dict(p_cur=0.2, p_traj=0.5, p_rand=0.3, actor_p_cur=0.0, actor_p_traj=1.0, actor_p_rand=0.0)
    for preset in ("default", "paper", "demo", "scene", "puzzle-4x4", "cube-triple+size-0.8m"):
        config = configs.get_config("gcqgf", preset)
        assert config.goal_conditioned and config.discount == 0.99 and not config.actor_geom_sample, preset
        assert {name: config[name] for name in relabelling} == relabelling, preset
        assert config.guidance_weights == configs.GOAL_CONDITIONED_GUIDANCE_WEIGHTS, preset
    assert configs.get_config("gcqgf", "puzzle-4x4").batch_size == 1024
    assert configs.get_config("qgf", "paper").discount == 0.999  # single-task presets unchanged
    assert configs.get_config("qgf", "scene").guidance_weights == configs.PAPER_GUIDANCE_WEIGHTS
    run_env = {preset: configs.get_run_config(preset, "gcqgf").env_name for preset in ("scene", "size-0.8m+puzzle-4x5")}
    assert run_env == {"scene": "scene-play-v0", "size-0.8m+puzzle-4x5": "puzzle-4x5-play-v0"}
    assert configs.get_run_config("paper", "gcqgf").env_name == configs.DEFAULT_GOAL_CONDITIONED_ENV
    bad = configs.get_config("gcqgf", "paper")
    bad.actor_p_traj = -1.0
    with pytest.raises(configs.ConfigError, match="actor_p_cur/actor_p_traj/actor_p_rand=0.0/-1.0/0.0"):
        configs.check_config(bad, bad.guidance_weights)
