"""scripts.guidance_scale: how far each weight moves the actions, on fields with known answers and a trained run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from guidance import sample
from scripts import guidance_scale

STEPS = 5
TARGET = jnp.asarray([0.5, -0.25, 0.0])


def test_push_on_a_still_flow_pulled_to_a_point():
    # v = 0 and Q(a) = -|a - c|^2: each Euler step scales a - c by (1 - 2w/K), so after K steps the guided action
    # is c + (1 - 2w/K)^K (a_0 - c), from the same a_0 at every weight.
    observations = jnp.zeros((64, 2))
    critic = lambda obs, a: -jnp.sum((a - TARGET) ** 2, axis=-1)  # noqa: E731

    def act(obs, key, weights):
        noise = 0.2 * jax.random.normal(key, (obs.shape[0], TARGET.shape[0]))
        velocity = lambda o, a, t: jnp.zeros_like(a)  # noqa: E731
        return sample(velocity, critic, obs, noise, guidance_weight=weights, steps=STEPS)

    key = jax.random.PRNGKey(3)
    start = 0.2 * jax.random.normal(key, (64, 3))
    assert float(jnp.max(jnp.abs(start))) < 0.9  # no clip anywhere on the way
    rows = guidance_scale.push(act, critic, observations, [0.5, 1.0], key)
    assert [r["weight"] for r in rows] == [0.0, 0.5, 1.0]
    offset = np.asarray(start - TARGET)
    for r in rows:
        shrink = (1 - 2 * r["weight"] / STEPS) ** STEPS
        assert r["rms_move"] == pytest.approx((1 - shrink) * np.sqrt(np.mean(offset**2)), rel=1e-4)
        assert r["q_gain"] == pytest.approx((1 - shrink**2) * np.mean(np.sum(offset**2, axis=1)), rel=1e-4)
        assert r["at_bound"] == 0.0


def test_push_counts_the_coordinates_held_at_the_bounds():
    # A sampler that moves the first of two coordinates by 5w and clips: at w = 1 every first coordinate is at +1.
    def act(obs, key, weights):
        noise = 0.1 * jax.random.normal(key, (obs.shape[0], 2))
        return jnp.clip(noise + weights[:, None] * jnp.asarray([5.0, 0.0]), -1.0, 1.0)

    rows = guidance_scale.push(act, lambda obs, a: a[:, 0], jnp.zeros((32, 1)), [1.0], jax.random.PRNGKey(0))
    assert [r["at_bound"] for r in rows] == [0.0, 0.5]
    assert rows[1]["q_gain"] > 0.8  # the first coordinate went from about 0 to 1


def test_it_measures_a_trained_run(finished_run, capsys):
    guidance_scale.main([f"--run={finished_run}", "--observations=8"])
    out = capsys.readouterr().out
    assert "step 4" in out and "estimator qgf" in out
    rows = [line for line in out.splitlines() if line.startswith("| 0")]
    assert len(rows) == 2 and rows[0].startswith("| 0 | 0.000 |") and rows[1].startswith("| 0.1 |")  # grid 0, 0.1
