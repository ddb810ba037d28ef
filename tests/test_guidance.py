"""Known-answer tests of the guided Euler sampler and its gradient estimators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import guidance

ESTIMATORS = sorted(guidance.ESTIMATORS)
STEPS = 10
B, OBS, D = 8, 3, 4


def analytic_problem(seed=0):
    """v(s, a, t) = (1 + t) tanh(a M + s N) and Q(s, a) = −‖a − a*(s)‖² with a*(s) = s P, all in float64."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(D, D)) * 0.8
    N = rng.normal(size=(OBS, D)) * 0.5
    P = rng.normal(size=(OBS, D)) * 0.4
    observations = rng.normal(size=(B, OBS))
    noise = rng.normal(size=(B, D))
    return M, N, P, observations, noise


def jax_fns(M, N, P):
    def velocity_fn(s, a, t):
        return (1.0 + t)[:, None] * jnp.tanh(a @ M + s @ N)

    def critic_fn(s, a):
        return -jnp.sum(jnp.square(a - s @ P), axis=-1)

    return velocity_fn, critic_fn


def reference_sample(M, N, P, observations, noise, weights, estimator, steps=STEPS):
    """A plain NumPy float64 guided integration, every estimator written out by hand."""
    dt = 1.0 / steps

    def v(s, a, t):
        return (1.0 + t) * np.tanh(a @ M + s @ N)

    def dv_da(s, a, t):  # J[j, i] = ∂v_j / ∂a_i
        z = a @ M + s @ N
        return (1.0 + t) * (1.0 - np.tanh(z) ** 2)[:, None] * M.T

    def grad_q(s, a):
        return -2.0 * (a - s @ P)

    out = np.empty_like(noise)
    for b in range(noise.shape[0]):
        s, a, w = observations[b], noise[b].copy(), weights[b]
        for k in range(steps):
            t = k / steps
            vel = v(s, a, t)
            if estimator == "none":
                g = np.zeros_like(a)
            elif estimator == "noisy":
                g = grad_q(s, a)
            elif estimator in ("qgf", "jacobian"):
                pre = a + (1.0 - t) * vel
                clean = np.clip(pre, -1.0, 1.0)
                g = grad_q(s, clean)
                if estimator == "jacobian":
                    inside = (np.abs(pre) < 1.0).astype(float)
                    jac = inside[:, None] * (np.eye(D) + (1.0 - t) * dv_da(s, a, t))
                    g = jac.T @ g
            elif estimator == "bptt":
                x, jac = a.copy(), np.eye(D)
                for j in range(k, steps):
                    tj = j / steps
                    jac = (np.eye(D) + dt * dv_da(s, x, tj)) @ jac
                    x = x + dt * v(s, x, tj)
                inside = (np.abs(x) < 1.0).astype(float)
                g = jac.T @ (inside * grad_q(s, np.clip(x, -1.0, 1.0)))
            else:
                raise AssertionError(estimator)
            a = a + dt * (vel + w * g)
        out[b] = np.clip(a, -1.0, 1.0)
    return out


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_matches_numpy_reference(estimator):
    M, N, P, observations, noise = analytic_problem()
    weights = np.linspace(0.0, 0.7, B)
    expected = reference_sample(M, N, P, observations, noise, weights, estimator)
    velocity_fn, critic_fn = jax_fns(*(jnp.asarray(x, jnp.float32) for x in (M, N, P)))
    got = guidance.sample(
        velocity_fn,
        critic_fn,
        jnp.asarray(observations, jnp.float32),
        jnp.asarray(noise, jnp.float32),
        guidance_weight=jnp.asarray(weights, jnp.float32),
        estimator=estimator,
        steps=STEPS,
    )
    relative_error = np.linalg.norm(np.asarray(got, np.float64) - expected) / np.linalg.norm(expected)
    assert relative_error < 1e-5, relative_error
    # The weights are large enough that guidance matters: w > 0 must move the samples.
    if estimator != "none":
        unguided = reference_sample(M, N, P, observations, noise, np.zeros(B), "none")
        assert np.abs(expected - unguided)[1:].max() > 1e-2


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_zero_weight_is_plain_euler(estimator):
    M, N, P, observations, noise = (jnp.asarray(x, jnp.float32) for x in analytic_problem(seed=1))
    velocity_fn, critic_fn = jax_fns(M, N, P)
    a = noise
    for k in range(STEPS):
        a = a + velocity_fn(observations, a, jnp.full((B,), k / STEPS)) / STEPS
    plain = jnp.clip(a, -1.0, 1.0)
    guided = guidance.sample(
        velocity_fn, critic_fn, observations, noise, guidance_weight=0.0, estimator=estimator, steps=STEPS
    )
    np.testing.assert_allclose(guided, plain, rtol=1e-6, atol=1e-6)


def random_mlp_problem(seed=0):
    """A small tanh MLP as velocity field and another as critic, in float64, for finite differences."""
    rng = np.random.default_rng(seed)
    W1, W2 = rng.normal(size=(OBS + D + 1, 16)) / 2, rng.normal(size=(16, D)) / 4
    C1, C2 = rng.normal(size=(OBS + D, 16)) / 2, rng.normal(size=(16,)) / 4

    def velocity_fn(s, a, t):
        return jnp.tanh(jnp.concatenate([s, a, t[:, None]], -1) @ W1) @ W2

    def critic_fn(s, a):
        return jnp.tanh(jnp.concatenate([s, a], -1) @ C1) @ C2

    observations = rng.normal(size=(B, OBS)) * 0.5
    actions = rng.normal(size=(B, D)) * 0.3
    return velocity_fn, critic_fn, observations, actions


def central_differences(f, x, eps=1e-6):
    """∂ sum_b f(x)_b / ∂x, by central differences of each coordinate (f acts per sample)."""
    grad = np.zeros_like(x)
    for i in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, i] = eps
        grad[:, i] = (np.asarray(f(x + step)) - np.asarray(f(x - step))) / (2 * eps)
    return grad


@pytest.mark.parametrize("step_index", [0, 4, 9])
def test_jacobian_estimator_matches_finite_differences_of_clean_estimate(step_index):
    with jax.enable_x64(True):
        velocity_fn, critic_fn, observations, actions = random_mlp_problem()
        times = jnp.full((B,), step_index / STEPS)
        velocity = velocity_fn(observations, actions, times)
        got = guidance.ESTIMATORS["jacobian"](
            velocity_fn, critic_fn, observations, actions, times, velocity, step_index, STEPS
        )

        def q_of_clean(a):
            clean = jnp.clip(a + (1 - times)[:, None] * velocity_fn(observations, a, times), -1, 1)
            return critic_fn(observations, clean)

        np.testing.assert_allclose(got, central_differences(q_of_clean, actions), rtol=1e-6, atol=1e-8)
        # ... and it is not the Jacobian-free estimate, so the test can tell them apart.
        qgf = guidance.ESTIMATORS["qgf"](
            velocity_fn, critic_fn, observations, actions, times, velocity, step_index, STEPS
        )
        assert np.abs(np.asarray(qgf - got)).max() > 1e-4


@pytest.mark.parametrize("step_index", [0, 5, 9])
def test_bptt_estimator_matches_finite_differences_of_the_ode(step_index):
    with jax.enable_x64(True):
        velocity_fn, critic_fn, observations, actions = random_mlp_problem(seed=2)
        times = jnp.full((B,), step_index / STEPS)
        velocity = velocity_fn(observations, actions, times)
        got = guidance.ESTIMATORS["bptt"](
            velocity_fn, critic_fn, observations, actions, times, velocity, step_index, STEPS
        )

        def q_of_ode(a):
            for k in range(step_index, STEPS):
                a = a + velocity_fn(observations, a, jnp.full((B,), k / STEPS)) / STEPS
            return critic_fn(observations, jnp.clip(a, -1, 1))

        np.testing.assert_allclose(got, central_differences(q_of_ode, actions), rtol=1e-6, atol=1e-8)


def test_a_sweep_of_weights_compiles_once():
    M, N, P, observations, noise = (jnp.asarray(x, jnp.float32) for x in analytic_problem())
    velocity_fn, critic_fn = jax_fns(M, N, P)
    traces = []

    @jax.jit
    def guided(weights):
        traces.append(1)
        return guidance.sample(velocity_fn, critic_fn, observations, noise, guidance_weight=weights, steps=STEPS)

    outputs = [guided(jnp.full((B,), w, jnp.float32)) for w in (0.0, 0.01, 0.1, 1.0)]
    outputs.append(guided(jnp.linspace(0.0, 1.0, B, dtype=jnp.float32)))
    assert len(traces) == 1
    assert not np.allclose(outputs[0], outputs[3])


def test_best_of_n_keeps_the_highest_q_candidate():
    M, N, P, observations, _ = (jnp.asarray(x, jnp.float32) for x in analytic_problem())
    velocity_fn, critic_fn = jax_fns(M, N, P)
    noise = jax.random.normal(jax.random.PRNGKey(0), (B, 6, D))
    chosen = guidance.best_of_n(velocity_fn, critic_fn, observations, noise, guidance_weight=0.0, estimator="none")
    candidates = jnp.stack(
        [guidance.sample(velocity_fn, critic_fn, observations, noise[:, i], guidance_weight=0.0) for i in range(6)], 1
    )
    scores = jax.vmap(critic_fn, (None, 1), 1)(observations, candidates)
    expected = candidates[jnp.arange(B), jnp.argmax(scores, 1)]
    np.testing.assert_allclose(chosen, expected, rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(critic_fn(observations, chosen)) >= np.asarray(scores.max(1)) - 1e-6)


def test_unknown_estimator_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown guidance estimator 'qfg'.*choose one of"):
        guidance.sample(
            lambda s, a, t: a,
            lambda s, a: a.sum(-1),
            jnp.zeros((1, 1)),
            jnp.zeros((1, 2)),
            guidance_weight=0.0,
            estimator="qfg",
        )


@pytest.mark.parametrize("estimator", ["qgf", "bptt"])
def test_unroll_keeps_the_samples_and_lets_xla_count_every_step(estimator):
    """XLA's cost analysis counts a rolled loop's body once: the same FLOPs for K = 2, 3, 4 steps. Unrolled,
    each Euler step adds the same cost (first differences equal), and bptt's inner integration makes the
    count quadratic in K (second differences equal)."""
    from runner.flops import xla_flops

    M, N, P, observations, noise = (jnp.asarray(x, jnp.float32) for x in analytic_problem())
    velocity_fn, critic_fn = jax_fns(M, N, P)

    def guided(observations, noise, steps, unroll):
        return guidance.sample(
            velocity_fn,
            critic_fn,
            observations,
            noise,
            guidance_weight=0.3,
            estimator=estimator,
            steps=steps,
            unroll=unroll,
        )

    compiled = jax.jit(guided, static_argnums=(2, 3))
    np.testing.assert_allclose(
        compiled(observations, noise, 4, True), compiled(observations, noise, 4, False), atol=1e-6
    )
    flops = {
        unroll: [xla_flops(compiled.lower(observations[:1], noise[:1], k, unroll).compile()) for k in (2, 3, 4, 5)]
        for unroll in (False, True)
    }
    assert len(set(flops[False])) == 1
    differences = np.diff(flops[True], n=2 if estimator == "bptt" else 1)
    assert differences[0] > 0 and np.all(differences == differences[0]), flops
