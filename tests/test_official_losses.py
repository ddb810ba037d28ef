"""Under `paper`, the losses and the guiding critic are the official runs' (BASELINES.md §2.2, §3.1, §3.2).

FQL's actor loss is checked against a NumPy float64 re-implementation of the formulas (networks included)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import configs
from agents import fql

B, OBS, H, A = 4, 3, 2, 2
VALID = jnp.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])  # Chunk 1 runs past its episode's end.


def paper_config(agent, **overrides):
    config = configs.get_config(agent, "paper")
    config.update(actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), horizon=H, denoising_steps=3)
    config.update(overrides)
    return config


def batch(key=None):
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, 4)
    return {
        "observations": jax.random.normal(keys[0], (B, OBS)),
        "actions": jax.random.uniform(keys[1], (B, H, A), minval=-0.9, maxval=0.9),
        "rewards": jax.random.normal(keys[2], (B, H)),
        "masks": jnp.ones((B, H)),
        "valid": VALID,
        "next_observations": jax.random.normal(keys[3], (B, H, OBS)),
    }


def scrambled(params, seed):
    """Other parameters of the same shapes (a network that must not matter gets these)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return tree.unflatten([leaf + jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys, strict=True)])


def init(agent_name, **overrides):
    agent = agents.make(agent_name, paper_config(agent_name, **overrides))
    state = agent.init(jax.random.PRNGKey(1), batch())
    # A target critic distinct from the online one, so that using the wrong one shows.
    state = state.replace(target_critic=state.target_critic.replace(params=scrambled(state.critic.params, 7)))
    return agent, state


def with_params(state, field, params):
    return state.replace(**{field: getattr(state, field).replace(params=params)})


@pytest.mark.parametrize("estimator, best_of_n", [("qgf", 1), ("none", 4)])
def test_paper_qgf_guides_and_ranks_with_the_target_critic(estimator, best_of_n):
    agent, state = init("qgf", estimator=estimator, best_of_n=best_of_n)
    assert paper_config("qgf").guidance_critic == "target"
    act = jax.jit(lambda s: agent.act(s, batch()["observations"], jax.random.PRNGKey(3), guidance_weight=0.5))
    actions = act(state)
    np.testing.assert_array_equal(actions, act(with_params(state, "critic", scrambled(state.critic.params, 8))))
    assert not np.allclose(actions, act(with_params(state, "target_critic", scrambled(state.critic.params, 9))))
    online = configs.get_config("qgf", "paper")
    online.update(paper_config("qgf", estimator=estimator, best_of_n=best_of_n, guidance_critic="online"))
    online_act = jax.jit(
        lambda s: agents.make("qgf", online).act(s, batch()["observations"], jax.random.PRNGKey(3), guidance_weight=0.5)
    )
    assert not np.allclose(actions, online_act(state))


def test_paper_edp_actor_q_term_uses_the_target_critic_with_min():
    config = paper_config("edp")
    assert (config.actor_q_critic, config.actor_q_aggregation) == ("target", "min")
    agent, state = init("edp")
    metrics = agent.validate(state, batch())
    same = agent.validate(with_params(state, "critic", scrambled(state.critic.params, 8)), batch())
    other = agent.validate(with_params(state, "target_critic", scrambled(state.critic.params, 9)), batch())
    assert float(metrics["actor/q_mean"]) == float(same["actor/q_mean"])
    assert float(metrics["actor/q_mean"]) != float(other["actor/q_mean"])


# ---- FQL: a float64 reference of the networks and of L_actor = L_flow + α L_distill + L_Q.


def gelu(x):  # Flax's default GELU, the tanh approximation.
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def mlp64(params, x, layer_norm):
    params = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), params)
    dense = sorted((k for k in params if k.startswith("Dense")), key=lambda k: int(k.split("_")[1]))
    for i, name in enumerate(dense):
        x = x @ params[name]["kernel"] + params[name]["bias"]
        if i == len(dense) - 1:
            return x
        if layer_norm:
            ln = params[f"LayerNorm_{i}"]
            x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * ln["scale"] + ln["bias"]
        x = gelu(x)


def f64(x):
    return np.asarray(x, np.float64)


def fql_reference(state, data, draws, alpha, steps, normalize):
    obs = f64(data["observations"])
    velocity_params = state.policy.params["params"]["MLP_0"]
    one_step_params = state.one_step.params["params"]

    def velocity(x, t):  # Raw scalar time appended; no LayerNorm in the paper's FQL actor.
        return mlp64(velocity_params, np.concatenate([obs, x, np.broadcast_to(t, (B, 1))], 1), False)

    w_action = np.repeat(f64(data["valid"]), A, axis=1)
    w_chunk = f64(data["valid"])[:, -1]
    flow = np.mean(w_action * (velocity(f64(draws.noisy), f64(draws.times)[:, None]) - f64(draws.velocity_target)) ** 2)
    psi = f64(draws.actor_noise)
    for i in range(steps):  # Plain Euler from z, t_i = i/K, then clipped.
        psi = psi + velocity(psi, np.full((B, 1), i / steps)) / steps
    psi = np.clip(psi, -1, 1)
    mu = mlp64(one_step_params, np.concatenate([obs, f64(draws.actor_noise)], 1), False)
    distill = np.mean(w_action * (mu - psi) ** 2)
    critic = state.critic.params["params"]["VmapMLP_0"]
    members = [jax.tree_util.tree_map(lambda p, j=j: p[j], critic) for j in range(2)]
    q = np.mean([mlp64(m, np.concatenate([obs, np.clip(mu, -1, 1)], 1), True)[:, 0] for m in members], axis=0)
    q_loss = -np.mean(w_chunk * q)
    if normalize:
        q_loss /= np.mean(np.abs(q))
    return flow + alpha * distill + q_loss, flow, distill, q_loss


@pytest.mark.parametrize("normalize", [False, True])
def test_fql_actor_loss_matches_the_float64_formulas(normalize):
    config = paper_config("fql", alpha=3.0, normalize_q_loss=normalize)
    assert config.critic_loss == "iql" and not configs.get_config("fql", "paper").normalize_q_loss
    agent = agents.make("fql", config)
    state = agent.init(jax.random.PRNGKey(1), batch())
    data = batch()
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    x0 = jax.random.normal(keys[0], (B, H * A))
    times = jnp.array([0.0, 0.37, 0.81, 1.0])
    x1 = data["actions"].reshape(B, -1)
    draws = fql.FQLDraws(
        noisy=(1 - times)[:, None] * x0 + times[:, None] * x1,
        times=times,
        velocity_target=x1 - x0,
        actor_noise=jax.random.normal(keys[1], (B, H * A)),
        next_noise=jax.random.normal(keys[2], (B, H * A)),
    )
    params = {"policy": state.policy.params, "one_step": state.one_step.params, "critic": state.critic.params}
    loss, metrics = fql.actor_loss(params, state, data, draws, config)
    expected, flow, distill, q_loss = fql_reference(state, data, draws, 3.0, 3, normalize)
    np.testing.assert_allclose(float(metrics["policy/bc_loss"]), flow, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["actor/distill_loss"]), distill, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["actor/q_loss"]), q_loss, rtol=1e-4)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)


def test_paper_fql_trains_the_shared_iql_critic_and_value():
    config = paper_config("fql")
    agent = agents.make("fql", config)
    state = agent.init(jax.random.PRNGKey(1), batch())
    assert (
        state.value is not None
        and agents.make("fql", paper_config("fql", critic_loss="td")).init(jax.random.PRNGKey(1), batch()).value is None
    )
    data = batch()
    draws = fql.draw(jax.random.PRNGKey(2), data, config)
    params = {"policy": state.policy.params, "one_step": state.one_step.params, "critic": state.critic.params}
    params["value"] = state.value.params
    total, metrics = fql.fql_loss(params, state, data, draws, config)
    from agents.iql import iql_loss

    critic_part, _ = iql_loss(params, state, data, config)
    np.testing.assert_allclose(float(total), float(critic_part + metrics["actor/loss"]), rtol=1e-5)
    new_state, _ = jax.jit(agent.update)(state, data)
    assert not np.allclose(
        jax.tree_util.tree_leaves(new_state.value.params)[0], jax.tree_util.tree_leaves(state.value.params)[0]
    )
    # Continuous flow times: t ~ U(0, 1) rather than the grid {0, 1/K, ..., 1}.
    times = np.asarray(fql.draw(jax.random.PRNGKey(3), {**data, "actions": jnp.zeros((512, H, A))}, config).times)
    assert len(np.unique(times)) > 400 and times.min() >= 0 and times.max() <= 1


@pytest.mark.parametrize(
    "field, value", [("guidance_critic", "targett"), ("critic_loss", "bellman"), ("flow_times", "normal")]
)
def test_bad_choices_are_clear_errors(field, value):
    config = configs.get_config("fql" if field in ("critic_loss", "flow_times") else "qgf")
    config[field] = value
    with pytest.raises(configs.ConfigError, match=f"--agent.{field}='{value}'"):
        configs.check_config(config, [0.0])
