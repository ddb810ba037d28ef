"""The `paper` preset's networks are the official ones: sinusoidal time, the actor's LayerNorm placement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
import configs
from networks import VelocityField
from networks.velocity_field import TIME_EMBEDDINGS

OBS, ACTION, HORIZON = 40, 5, 5


def parameter_count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def paper_state_shapes(preset: str):
    config = configs.get_config("qgf", preset)
    batch = {"observations": jnp.zeros((2, OBS)), "actions": jnp.zeros((2, HORIZON, ACTION))}
    return jax.eval_shape(agents.make("qgf", config).init, jax.random.PRNGKey(0), batch)


@pytest.mark.parametrize(
    "preset, actor, critics, value",
    [("paper+size-0.8m", 845_849, 1_652_738, 813_569), ("paper", 3_264_537, 6_451_202, 3_200_001)],
)
def test_paper_networks_have_the_official_parameter_counts(preset, actor, critics, value):
    # Hand count at width 512: actor input 40 + 25 + 16 (sinusoidal t) = 81; LayerNorm (2 × 512) after hidden
    # layers 1-3 only: 81·512+512 + 3·(512²+512) + 3·1024 + 512·25+25 = 845,849.
    state = paper_state_shapes(preset)
    assert parameter_count(state.policy.params) == actor
    assert parameter_count(state.critic.params) == critics
    assert parameter_count(state.target_critic.params) == critics
    assert parameter_count(state.value.params) == value


def test_paper_actor_has_layer_norm_after_the_first_three_hidden_layers_only():
    mlp = paper_state_shapes("paper+size-0.8m").policy.params["params"]["MLP_0"]
    assert sorted(name for name in mlp if name.startswith("LayerNorm")) == ["LayerNorm_0", "LayerNorm_1", "LayerNorm_2"]
    assert mlp["Dense_0"]["kernel"].shape == (OBS + HORIZON * ACTION + 16, 512)
    default = configs.get_config("qgf")  # Raw t and LayerNorm after every hidden layer.
    assert (default.time_embedding, default.actor_layer_norm_last_hidden) == ("raw", True)


def test_sinusoidal_time_input_is_the_official_embedding():
    """A first layer that copies its last 16 inputs (the time input) shows exactly what the velocity field feeds it."""
    field = VelocityField((16,), 3, layer_norm=False, time_embedding="sinusoidal")
    obs, actions, times = jnp.ones((3, 2)), jnp.ones((3, 3)), jnp.array([0.0, 0.1, 0.73])
    params = field.init(jax.random.PRNGKey(0), obs, actions, times)
    first = params["params"]["MLP_0"]["Dense_0"]
    assert first["kernel"].shape == (2 + 3 + 16, 16)
    first["kernel"] = jnp.zeros_like(first["kernel"]).at[5:].set(jnp.eye(16))
    _, state = field.apply(params, obs, actions, times, capture_intermediates=True)
    embedding = np.asarray(state["intermediates"]["MLP_0"]["Dense_0"]["__call__"][0], np.float64)
    tau = 10_000.0 * np.asarray(times, np.float64)[:, None]
    frequencies = 10_000.0 ** (-np.arange(8) / 8)
    expected = np.concatenate([np.cos(tau * frequencies), np.sin(tau * frequencies)], axis=1)  # Cosines first.
    np.testing.assert_allclose(embedding, expected, atol=2e-3)  # float32 angles up to 10⁴ · 0.73 rad.


@pytest.mark.parametrize("init, std", [("lecun_normal", 512**-0.5), ("glorot_uniform", (2 / (512 + 25)) ** 0.5)])
def test_actor_output_layer_init(init, std):
    field = VelocityField((512,), 25, output_init=init)
    params = field.init(jax.random.PRNGKey(0), jnp.zeros((1, 40)), jnp.zeros((1, 25)), jnp.zeros(1))
    kernel = np.asarray(params["params"]["MLP_0"]["Dense_1"]["kernel"])
    assert abs(kernel.std() / std - 1) < 0.05, kernel.std()
    assert configs.get_config("qgf", "paper").actor_output_init == "lecun_normal"
    assert configs.get_config("fql", "scene").actor_output_init == "lecun_normal"


def test_unknown_time_embedding_is_a_clear_error():
    config = configs.get_config("qgf")
    config.time_embedding = "fourier"
    with pytest.raises(configs.ConfigError, match="time_embedding='fourier'.*'raw', 'sinusoidal'"):
        configs.check_config(config, [0.0])
    assert configs.TIME_EMBEDDINGS == TIME_EMBEDDINGS


@pytest.mark.parametrize("agent", ["qgf", "gcqgf", "edp", "fql"])
def test_family_presets_get_the_paper_settings(agent):
    for preset in ("paper", *configs.FAMILY_SETTINGS, "scene+size-0.8m"):
        config = configs.get_config(agent, preset)
        for field, value in configs.PAPER_AGENT_SETTINGS[agent].items():
            assert config[field] == value, (preset, field)
        assert config.polyak_pre_update, preset
