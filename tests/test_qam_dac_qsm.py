"""QAM, DAC and QSM: their losses, schedule, sampler and rollout against float64 references, and one tiny
main.py run per agent (training without NaN, evaluation, and --eval_only from its checkpoint)."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TINY_TASK, read_csv, run_main

import agents
import configs
import envs
from agents.dac import dac_q_term
from agents.ddpm import actor_loss, sample_chunks, vp_schedule
from agents.qam import adjoint_matching_loss, memoryless_sigmas
from agents.qsm import qsm_q_term
from agents.train_states import clip_by_global_norm
from networks.mlp import ACTIVATIONS


def test_vp_schedule_matches_the_closed_form():
    schedule = vp_schedule(10)
    # β_k = 1 − exp(−0.01 − 0.0495 (2k − 1)), so ᾱ_k = exp(−0.01 k − 0.0495 k²), worked by hand.
    steps = [0, 1, 2, 10]
    np.testing.assert_allclose(schedule.betas[steps], [0.0, 0.0577645, 0.1465770, 0.6134523], rtol=1e-5)
    np.testing.assert_allclose(schedule.alpha_bars[steps], [1.0, 0.9422355, 0.8041254, 0.0064093], rtol=1e-5)


def test_the_ddpm_sampler_is_the_released_predict_then_renoise_rule():
    steps, batch, dim = 3, 2, 4
    schedule = vp_schedule(steps)
    noises = np.random.default_rng(0).normal(size=(steps, batch, dim))
    noise_fn = lambda inputs, x, k: 0.5 * x + 0.1 * k[:, None] + inputs  # noqa: E731
    inputs = np.array([[0.2], [-0.3]])
    got = sample_chunks(noise_fn, jnp.asarray(inputs), jnp.asarray(noises, jnp.float32), schedule)

    betas, alpha_bars = np.float64(schedule.betas), np.float64(schedule.alpha_bars)
    x = noises[0]
    for j, k in enumerate(range(steps, 0, -1)):
        eps = 0.5 * x + 0.1 * k + inputs
        x = (x - np.sqrt(1 - alpha_bars[k]) * eps) / np.sqrt(alpha_bars[k])  # x ← x̂_0, no posterior mean
        if k > 1:
            x = x + np.sqrt(betas[k]) * noises[j + 1]
    np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["dac", "qsm"])
def test_ddpm_actor_losses_equal_their_formulas(method):
    """α L_bc + L_q on a hand-built batch, with ε_θ = θ x + 0.1 k and Q(s, a) = −‖a − c‖² (∇Q = −2 (a − c))."""
    rng = np.random.default_rng(1)
    batch, dim, alpha, beta, theta = 3, 4, 10.0, 0.1, 0.3
    clean = rng.uniform(-1, 1, (batch, dim))
    noise = rng.normal(size=(batch, dim))
    k = np.array([1, 5, 10])
    weights = np.array([1.0, 0.0, 1.0])
    c = rng.uniform(-1, 1, dim)
    schedule = vp_schedule(10)
    noise_fn = lambda inputs, x, k: theta * x + 0.1 * k[:, None]  # noqa: E731
    critic_fn = lambda inputs, a: -jnp.sum(jnp.square(a - c), axis=-1)  # noqa: E731
    q_term = dac_q_term if method == "dac" else qsm_q_term(beta)
    arrays = (jnp.float32(clean), jnp.float32(weights), jnp.asarray(k), jnp.float32(noise))
    loss, metrics = actor_loss(noise_fn, critic_fn, None, *arrays, schedule, alpha, q_term)

    alpha_bar = np.exp(-0.01 * k - 0.0495 * k**2)[:, None]  # The vp schedule's closed form (K = 10).
    noisy = np.sqrt(alpha_bar) * clean + np.sqrt(1 - alpha_bar) * noise
    predicted = theta * noisy + 0.1 * k[:, None]
    gradient = -2 * (noisy - c)
    bc = np.mean(weights * np.mean((noise - predicted) ** 2, axis=1))
    if method == "dac":
        q_loss = np.mean(np.sqrt(1 - alpha_bar) * gradient * predicted * weights[:, None])
    else:
        q_loss = np.mean(weights * np.mean((-beta * gradient - predicted) ** 2, axis=1))
    np.testing.assert_allclose(metrics["policy/bc_loss"], bc, rtol=1e-5)
    np.testing.assert_allclose(metrics["actor/q_loss"], q_loss, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(loss, alpha * bc + q_loss, rtol=1e-5)


def test_memoryless_noise_levels():
    # σ_i = sqrt(2 (1 − t_i + h) / (t_i + h)); K = 4: sqrt(2·1.25/0.25), sqrt(2·1/0.5), sqrt(2·0.75/0.75),
    # sqrt(2·0.5/1).
    np.testing.assert_allclose(memoryless_sigmas(4), [math.sqrt(10), 2.0, math.sqrt(2), 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(memoryless_sigmas(10))[[0, 9]], [math.sqrt(22), math.sqrt(0.4)], rtol=1e-6)


def test_qam_adjoint_matching_on_affine_fields():
    """Rollout, adjoint and loss against float64 for u(x, t) = M x + t b, whose VJP is Mᵀ a in closed form, and
    Q(a) = −‖a − c‖², whose gradient through the clip is −2 (clip(x) − c) inside [−1, 1] and 0 outside."""
    rng = np.random.default_rng(2)
    steps, batch, dim, beta = 4, 3, 2, 0.5
    h = 1.0 / steps
    fast_m, slow_m = rng.normal(size=(dim, dim)) * 0.3, rng.normal(size=(dim, dim)) * 0.3
    fast_b, slow_b, c = rng.normal(size=dim), rng.normal(size=dim), np.array([0.3, -0.2])
    x0 = rng.normal(size=(batch, dim))
    noises = rng.normal(size=(steps - 1, batch, dim))

    def affine(m, b):
        return lambda x, t: x @ jnp.float32(m).T + t * jnp.float32(b)

    def loss_of(m):
        fast = lambda x, t: x @ m.T + t * jnp.float32(fast_b)  # noqa: E731
        q_fn = lambda a: -jnp.sum(jnp.square(a - c), axis=-1)  # noqa: E731
        rollout_fast, slow = affine(fast_m, fast_b), affine(slow_m, slow_b)
        return adjoint_matching_loss(fast, rollout_fast, slow, q_fn, jnp.float32(x0), jnp.float32(noises), beta)

    (loss, end_adjoint), grad = jax.value_and_grad(loss_of, has_aux=True)(jnp.float32(fast_m))

    sigmas = np.sqrt(2 * (1 - np.arange(steps) * h + h) / (np.arange(steps) * h + h))
    fast = lambda x, t: x @ fast_m.T + t * fast_b  # noqa: E731
    slow = lambda x, t: x @ slow_m.T + t * slow_b  # noqa: E731
    states = [x0]
    for i in range(steps - 1):
        x, t = states[-1], i * h
        states.append(x + h * (2 * fast(x, t) - x / (t + h)) + np.sqrt(h) * sigmas[i] * noises[i])
    end = states[-1] + h * slow(states[-1], (steps - 1) * h)
    inside = np.abs(end) < 1
    adjoint = -beta * (-2 * (np.clip(end, -1, 1) - c)) * inside
    np.testing.assert_allclose(end_adjoint, adjoint, rtol=1e-4, atol=1e-6)
    adjoints = [None] * steps
    for i in reversed(range(steps)):
        t = i * h + h  # The official time of the VJP: t_i + h; ∂f/∂x = 2 M_slow − I/t.
        adjoint = adjoint + h * (2 * adjoint @ slow_m - adjoint / t)
        adjoints[i] = adjoint
    residuals = [
        (2 / sigmas[i]) * (fast(states[i], i * h) - slow(states[i], i * h)) + sigmas[i] * adjoints[i]
        for i in range(steps)
    ]
    expected = np.mean(sum(np.sum(r**2, axis=1) for r in residuals))
    np.testing.assert_allclose(loss, expected, rtol=1e-4)
    # Only the residual's u_fast carries a gradient: dL/dM = (1/B) Σ_b Σ_i (4/σ_i) r_i x_iᵀ.
    expected_grad = sum(4 / sigmas[i] * residuals[i].T @ states[i] for i in range(steps)) / batch
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-3, atol=1e-4)


def test_group_clipping_equals_optax():
    grads = {"a": jnp.array([3.0, 0.0]), "b": {"c": jnp.array([[4.0]])}}  # Global norm 5.
    clipped, norm = clip_by_global_norm(grads, 1.0)
    reference, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    assert float(norm) == pytest.approx(5.0)
    for got, want in zip(jax.tree_util.tree_leaves(clipped), jax.tree_util.tree_leaves(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-6)
    unchanged, _ = clip_by_global_norm(grads, 10.0)
    np.testing.assert_allclose(unchanged["b"]["c"], [[4.0]])


def test_presets_hold_the_official_coefficients():
    assert configs.get_config("qam", "scene").inv_temp == 0.1
    families = ("cube-triple", "cube-quadruple", "puzzle-4x4", "scene")
    assert [configs.get_config("dac", family).alpha for family in families] == [100.0, 100.0, 300.0, 100.0]
    qsm = configs.get_config("qsm", "puzzle-4x4")
    assert (qsm.inv_temp, qsm.alpha) == (0.1, 10.0)
    qam = configs.get_config("qam", "paper")
    assert (qam.actor_layer_norm, qam.time_embedding, qam.clip_grad_norm) == (False, "raw", 1.0)
    with pytest.raises(configs.ConfigError, match="qsm has no test-time guidance"):
        configs.check_config(_with(configs.get_config("qsm"), best_of_n=4), [0.0])
    with pytest.raises(configs.ConfigError, match="inv_temp"):
        configs.check_config(_with(configs.get_config("qam"), inv_temp=-1.0), [0.0])


def test_activation_names_are_the_networks():
    assert set(configs.ACTIVATION_NAMES) == set(ACTIVATIONS)


def _with(config, **fields):
    config.update(fields)
    return config


@pytest.fixture(scope="module")
def fixture_dataset(tiny_dataset_dir):
    _, train, _ = envs.make_env_and_datasets(TINY_TASK, dataset_dir=tiny_dataset_dir)
    return envs.to_device_dataset(train)


def tiny_agent(name):
    config = _with(configs.get_config(name), actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), horizon=2)
    config.update(denoising_steps=3, batch_size=8)
    return config, agents.make(name, config)


def assert_acts_in_range(agent, state, observations, action_dim):
    # Far-off observations push unclipped samples out of [−1, 1]; `act` must clip them.
    for scale in (1.0, 100.0):
        actions = jax.jit(agent.act)(state, scale * observations, jax.random.PRNGKey(1))
        assert actions.shape == (len(observations), 2, action_dim)
        assert float(jnp.max(jnp.abs(actions))) <= 1.0


# qam trains through main.py below (its train.csv is checked for non-finite losses), so only its `act` is here.
@pytest.mark.parametrize("name", ["dac", "qsm"])
def test_trains_on_the_fixture_dataset_and_acts_in_range(name, fixture_dataset):
    config, agent = tiny_agent(name)
    sample = lambda key: envs.sample_chunks(fixture_dataset, key, config.batch_size, config.horizon, 0.99)  # noqa: E731

    @jax.jit
    def train(key):
        init_key, data_key, steps_key = jax.random.split(key, 3)
        state = agent.init(init_key, sample(data_key))
        return jax.lax.scan(lambda s, k: agent.update(s, sample(k)), state, jax.random.split(steps_key, 300))

    state, metrics = train(jax.random.PRNGKey(0))
    assert int(state.step) == 300
    for key, values in metrics.items():
        assert np.all(np.isfinite(values)), key
    assert_acts_in_range(agent, state, fixture_dataset["observations"][:7], fixture_dataset["actions"].shape[-1])


def test_qam_acts_with_clipped_chunks(fixture_dataset):
    config, agent = tiny_agent("qam")
    batch = envs.sample_chunks(fixture_dataset, jax.random.PRNGKey(0), config.batch_size, config.horizon, 0.99)
    state = jax.jit(agent.init)(jax.random.PRNGKey(1), batch)
    assert_acts_in_range(agent, state, fixture_dataset["observations"][:7], fixture_dataset["actions"].shape[-1])


def test_a_tiny_qam_run_restores_for_eval_only(tiny_dataset_dir, tmp_path):
    """Through main.py and the registries: train, evaluate, save, then --eval_only from the checkpoint. (qam
    stands for the three: its official evaluation crashed; dac and qsm share the same run machinery.)"""
    run_dir = str(tmp_path / "qam")
    flags = [
        "--agent=qam",
        f"--env={TINY_TASK}",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--run_dir={run_dir}",
        "--preset=demo",
        "--train_steps=200",
        "--steps_per_call=100",
        "--log_every=100",
        "--eval_every=200",
        "--save_every=200",
        "--eval_episodes=1",
        "--agent.actor_hidden_dims=(16,16)",
        "--agent.critic_hidden_dims=(16,16)",
        "--agent.batch_size=8",
        "--agent.denoising_steps=3",
        "--progress=false",
    ]
    run_main(*flags)  # main.py stops with an error on a non-finite loss.
    rows = read_csv(os.path.join(run_dir, "train.csv"))
    assert [int(r["step"]) for r in rows] == [100, 200]
    assert all(np.isfinite(float(v)) for r in rows for k, v in r.items() if k.startswith(("train/", "val/")))
    evaluated = read_csv(os.path.join(run_dir, "eval.csv"))
    run_main("--eval_only", f"--restore={run_dir}", "--progress=false")
    restored = read_csv(os.path.join(run_dir, "eval", "none-bo1-reset0", "eval.csv"))
    assert [r["step"] for r in restored] == [r["step"] for r in evaluated] == ["200"]
