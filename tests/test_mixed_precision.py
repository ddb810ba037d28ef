"""`compute_dtype="bfloat16"`: bfloat16 matmuls with float32 accumulation, everything else float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_qgf_agent import closed_form_batch, tiny_config
from toy_two_modes import STEPS, critic_fn, preferred_fraction, trained_velocity_fn

import agents
import configs
import guidance
from networks import MLP
from networks.mixed_precision import COMPUTE_DTYPES, bfloat16_matmul


def rounded(x):
    """x rounded to bfloat16, as float64: the operands the bfloat16 matmul really multiplies."""
    return np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def test_bfloat16_matmul_is_float64_exact_on_rounded_operands_forward_and_backward():
    x = jax.random.normal(jax.random.key(0), (3, 5, 64))  # A leading batch axis, as under vmap or an ensemble.
    kernel = jax.random.normal(jax.random.key(1), (64, 16))
    cotangent = jax.random.normal(jax.random.key(2), (3, 5, 16))
    out, pullback = jax.vjp(bfloat16_matmul, x, kernel)
    dx, dkernel = pullback(cotangent)
    assert out.dtype == dx.dtype == dkernel.dtype == jnp.float32

    # float32 accumulation of exactly representable bfloat16 products: float64 agreement to float32 rounding.
    np.testing.assert_allclose(out, rounded(x) @ rounded(kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, rounded(cotangent) @ rounded(kernel).T, rtol=1e-5, atol=1e-5)
    reference = np.einsum("bik,bin->kn", rounded(x), rounded(cotangent))
    np.testing.assert_allclose(dkernel, reference, rtol=1e-5, atol=1e-4)
    # ... and bfloat16 rounding is really there: the float32 product differs by about 2^-9 relative.
    assert np.abs(np.asarray(x @ kernel) - rounded(x) @ rounded(kernel)).max() > 1e-3


def test_bfloat16_mlp_keeps_float32_parameters_and_outputs():
    x = jax.random.normal(jax.random.key(0), (8, 10))
    mlp16 = MLP((32, 32), 3, dtype=jnp.bfloat16)
    params = mlp16.init(jax.random.key(1), x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype(jnp.float32)}
    out16 = mlp16.apply(params, x)
    out32 = MLP((32, 32), 3).apply(params, x)  # Same parameters, float32 matmuls.
    assert out16.dtype == jnp.float32
    assert 0 < float(jnp.max(jnp.abs(out16 - out32))) < 0.05


def test_one_bfloat16_update_is_within_tolerance_of_float32():
    """Same initial state and batch: the losses agree to 5 % (seen: 2.2 % for the value's, <= 0.3 % for the
    others), the gradients (Adam's first moment after one step is 0.1 · g) point the same way (cosine > 0.999 per
    network; seen 0.99999), and a guided action to 0.05 (seen 0.02)."""
    batch = closed_form_batch(jax.random.key(1), 256)
    agent32 = agents.make("qgf", tiny_config())
    agent16 = agents.make("qgf", tiny_config(compute_dtype="bfloat16"))
    # Each agent's own init (its state holds its networks' apply functions); the parameters are the same.
    states = [agent.init(jax.random.key(0), batch) for agent in (agent32, agent16)]
    same = jax.tree_util.tree_map(np.array_equal, states[0].critic.params, states[1].critic.params)
    assert all(jax.tree_util.tree_leaves(same))
    results = [jax.jit(agent.update)(state, batch) for agent, state in zip((agent32, agent16), states, strict=True)]
    (state32, metrics32), (state16, metrics16) = results

    for name in ("policy/bc_loss", "critic/loss", "value/loss"):
        np.testing.assert_allclose(metrics16[name], metrics32[name], rtol=0.05, err_msg=name)
    assert metrics16["critic/loss"] != metrics32["critic/loss"]  # bfloat16 rounding is really in effect.
    for network in ("policy", "critic", "value"):
        first_moments = [
            np.concatenate([np.ravel(m) for m in jax.tree_util.tree_leaves(getattr(s, network).opt_state[0].mu)])
            for s in (state32, state16)
        ]
        cosine = first_moments[0] @ first_moments[1] / np.prod([np.linalg.norm(m) for m in first_moments])
        assert cosine > 0.999, (network, cosine)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state16) if hasattr(leaf, "dtype")} <= {
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),
        jax.random.key(0).dtype,
    }

    observations = batch["observations"][:16]
    pairs = ((agent32, state32), (agent16, state16))
    actions = [jax.jit(a.act)(s, observations, jax.random.key(3), 0.1) for a, s in pairs]
    assert actions[1].dtype == jnp.float32
    assert float(jnp.max(jnp.abs(actions[1] - actions[0]))) < 0.05


def test_guidance_toy_lands_in_the_preferred_mode_under_bfloat16():
    velocity_fn, _ = trained_velocity_fn(compute_dtype="bfloat16")
    noise = jax.random.normal(jax.random.PRNGKey(7), (2000, 2))
    actions = guidance.sample(
        velocity_fn, critic_fn, jnp.ones((2000, 1)), noise, guidance_weight=1.0, estimator="qgf", steps=STEPS
    )
    assert actions.dtype == jnp.float32
    assert preferred_fraction(actions) >= 0.9


def test_compute_dtype_names_are_checked():
    assert configs.COMPUTE_DTYPES == COMPUTE_DTYPES
    config = configs.get_config("qgf")
    config.compute_dtype = "bf16"
    with pytest.raises(configs.ConfigError, match=r"--agent.compute_dtype='bf16' .*'bfloat16'"):
        configs.check_config(config, [0.0])
