"""bench.parity: its pure pieces (transplant, verdicts, table, pins) with known answers, and with an official checkout
(`QGF_OFFICIAL_CHECKOUT`; `QGF_OFFICIAL_PYTHON` for an existing environment with its pins) the whole harness."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench.parity import official_constraints
from bench.parity_pieces import Row, compare, official_layers, overall, table, transplant, transplant_by_name
from networks import Critic, VelocityField


def numbered(prefix, shapes):
    return {
        f"{prefix}_{i}": {"kernel": np.full(s, float(i + 1)), "bias": np.full(s[-1:], -(i + 1.0))}
        for i, s in enumerate(shapes)
    }


def test_official_actor_maps_its_separate_output_layer_onto_our_last_dense():
    obs, chunk, width = 3, 4, 5
    template = VelocityField((width, width), chunk, layer_norm_last_hidden=False, time_embedding="sinusoidal").init(
        jax.random.PRNGKey(0), jnp.zeros((1, obs)), jnp.zeros((1, chunk)), jnp.zeros((1,))
    )
    official = {
        "MLP_0": {
            **numbered("Dense", [(obs + chunk + 16, width), (width, width)]),
            "LayerNorm_0": {"scale": np.full(width, 7.0), "bias": np.full(width, 8.0)},
        },
        "Dense_0": {"kernel": np.full((width, chunk), 9.0), "bias": np.full(chunk, 10.0)},
    }
    mlp = transplant(official, template)["params"]["MLP_0"]
    assert float(mlp["Dense_0"]["kernel"][0, 0]) == 1.0
    assert float(mlp["Dense_1"]["kernel"][0, 0]) == 2.0
    assert float(mlp["Dense_2"]["kernel"][0, 0]) == 9.0  # The official output layer is our last Dense.
    assert float(mlp["LayerNorm_0"]["bias"][0]) == 8.0


def test_official_critic_ensemble_maps_member_axis_first():
    obs, chunk, width, members = 3, 4, 5, 2
    template = Critic((width,), members).init(jax.random.PRNGKey(0), jnp.zeros((1, obs)), jnp.zeros((1, chunk)))
    official = {
        "value_net": {
            "Dense_0": {
                "kernel": np.arange(members * (obs + chunk) * width, dtype=float).reshape(members, obs + chunk, width),
                "bias": np.zeros((members, width)),
            },
            "Dense_1": {"kernel": np.ones((members, width, 1)), "bias": np.zeros((members, 1))},
            "LayerNorm_0": {"scale": np.ones((members, width)), "bias": np.zeros((members, width))},
        }
    }
    (mlp,) = transplant(official, template)["params"].values()
    np.testing.assert_array_equal(mlp["Dense_0"]["kernel"], official["value_net"]["Dense_0"]["kernel"])


def test_by_name_transplant_transposes_only_where_the_transpose_fits():
    template = {
        "params": {
            "FourierFeatures_0": {"kernel": np.zeros((1, 4))},
            "MLP_0": {"Dense_0": {"kernel": np.zeros((2, 2)), "bias": np.zeros(2)}},
        }
    }
    square = np.array([[1.0, 2.0], [3.0, 4.0]])
    official = {
        "FourierFeatures_0": {"kernel": np.arange(4.0)[:, None]},
        "MLP_0": {"Dense_0": {"kernel": square, "bias": np.ones(2)}},
    }
    mapped = transplant_by_name(official, template)["params"]
    np.testing.assert_array_equal(mapped["FourierFeatures_0"]["kernel"], [[0.0, 1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(mapped["MLP_0"]["Dense_0"]["kernel"], square)  # Same shape: never transposed.
    with pytest.raises(ValueError, match="no MLP_0/Dense_0/bias"):
        transplant_by_name(
            {"FourierFeatures_0": official["FourierFeatures_0"], "MLP_0": {"Dense_0": {"kernel": square}}}, template
        )


def test_layers_are_ordered_by_number_not_name():
    dense, _ = official_layers({"value_net": numbered("Dense", [(1, 1)] * 11)})
    assert [float(layer["bias"][0]) for layer in dense] == [-(i + 1.0) for i in range(11)]


def test_a_shape_mismatch_is_an_error_naming_the_layer():
    template = {"params": {"Dense_0": {"kernel": np.zeros((3, 2)), "bias": np.zeros(2)}}}
    official = {"value_net": {"Dense_0": {"kernel": np.zeros((4, 2)), "bias": np.zeros(2)}}}
    with pytest.raises(ValueError, match="Dense_0/kernel"):
        transplant(official, template)


def test_verdicts():
    assert compare("a", [1.0, 2.0], [1.0, 2.0 + 1e-6], 1e-5).verdict == "pass"
    assert compare("a", [1.0], [1.1], 1e-5).verdict == "fail"
    documented = compare("a", [1.0], [1.1], 1e-5, documented="README: x")
    assert (documented.verdict, round(documented.delta, 6), documented.note) == ("documented", 0.1, "README: x")
    assert compare("a", [1.0], [1.0], 1e-5, documented="README: x").verdict == "pass"
    assert compare("a", [1.0, 2.0], [1.0], 1.0).delta == float("inf")  # A shape mismatch never passes.
    assert compare("a", [np.nan], [1.0], 1.0).verdict == "fail"
    assert overall([Row("a", 0.1, 1e-5, "documented")]) == "pass"
    assert overall([Row("a", 0.0, 1e-5, "pass"), Row("b", None, None, "fail")]) == "fail"


def test_table_escapes_pipes_and_shows_missing_values():
    text = table([Row("x|y", None, None, "fail", "a|b")])
    assert text.splitlines()[-1] == "| x|y | — | — | fail | a\\|b |"


def test_constraints_keep_pins_and_drop_gpu_plugins():
    requirements = (
        "# comment\njax==0.4.30\njax-cuda12-plugin==0.4.30\nnvidia-cublas-cu12==1\nmujoco-py==2.1\n"
        "numpy==2.4.4 ; python_full_version >= '3.11'\n    # via x\n"
    )
    assert official_constraints(requirements) == "jax==0.4.30\nnumpy==2.4.4 ; python_full_version >= '3.11'\n"


@pytest.mark.skipif(not os.environ.get("QGF_OFFICIAL_CHECKOUT"), reason="QGF_OFFICIAL_CHECKOUT names no checkout")
def test_parity_with_the_official_checkout(tmp_path):
    command = [
        sys.executable,
        "-m",
        "bench.parity",
        f"--official={os.environ['QGF_OFFICIAL_CHECKOUT']}",
        "--size=fast",
        f"--out={tmp_path / 'parity.md'}",
    ]
    if os.environ.get("QGF_OFFICIAL_PYTHON"):
        command.append(f"--official_python={os.environ['QGF_OFFICIAL_PYTHON']}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "| fail |" not in (tmp_path / "parity.md").read_text()
