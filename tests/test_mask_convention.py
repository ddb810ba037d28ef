"""agent.mask_convention: OGBench's success masks or the official 100M loader's 1 - terminals, in the data, the
presets, the config checks and the report; and the official loaders' clip of dataset actions."""

import jax
import numpy as np
import pytest

import configs
import envs
from runner.devices import placement
from runner.report import write_report
from runner.run_data import device_dataset


def one_episode() -> dict:
    """Four transitions; the task is solved at rows 1 and 3 (reward 0, OGBench success mask 0); the episode ends
    at row 3."""
    return {
        "observations": np.arange(4, dtype=np.float32)[:, None],
        "next_observations": np.arange(1, 5, dtype=np.float32)[:, None],
        "actions": np.zeros((4, 1), np.float32),
        "rewards": np.array([-1, 0, -1, 0], np.float32),
        "masks": np.array([1, 0, 1, 0], np.float32),
        "terminals": np.array([0, 0, 0, 1], np.float32),
    }


def test_trajectory_end_masks_are_one_minus_terminals():
    dataset = one_episode()
    assert envs.with_mask_convention(dataset, "success") is dataset
    np.testing.assert_array_equal(envs.with_mask_convention(dataset, "trajectory_end")["masks"], [1, 1, 1, 0])
    np.testing.assert_array_equal(dataset["masks"], [1, 0, 1, 0])  # the input is left as it was
    with pytest.raises(ValueError, match="needs a single-task dataset"):
        envs.with_mask_convention({"terminals": dataset["terminals"]}, "trajectory_end")


@pytest.mark.parametrize(
    "convention, expected",
    [
        # start row: (R, m) of the 3-step chunk, γ = 0.5. Success masks stop the sum at the first solved state.
        ("success", {0: (-1.0, 0.0), 1: (0.0, 0.0), 2: (-1.0, 0.0), 3: (0.0, 0.0)}),
        # 1 - terminals: the sum goes on through success (-1 + 0.5·0 + 0.25·(-1)); only the episode's end cuts it.
        ("trajectory_end", {0: (-1.25, 1.0), 1: (-0.5, 0.0), 2: (-1.0, 0.0), 3: (0.0, 0.0)}),
    ],
)
def test_chunk_returns_and_masks_follow_the_convention(convention, expected):
    config = configs.get_config("qgf")
    config.mask_convention = convention
    dataset = device_dataset(one_episode(), config, placement(1, 8))
    batch = jax.device_get(envs.sample_chunks(dataset, jax.random.PRNGKey(0), batch_size=64, horizon=3, discount=0.5))
    starts = batch["observations"][:, 0].astype(int)
    assert set(starts) == {0, 1, 2, 3}
    for start, rewards, masks in zip(starts, batch["rewards"], batch["masks"], strict=True):
        assert (rewards[-1], masks[-1]) == pytest.approx(expected[start])


def test_the_paper_presets_use_the_official_100m_masks_and_others_ogbench_s():
    for preset in ("paper", "scene", "puzzle-4x4", "cube-triple", "cube-quadruple", "scene+size-0.8m"):
        for agent in ("qgf", "fql", "edp"):
            assert configs.get_config(agent, preset).mask_convention == "trajectory_end", (agent, preset)
    for preset in ("default", "demo"):
        assert configs.get_config("qgf", preset).mask_convention == "success"
    assert "mask_convention" not in configs.get_config("gcqgf", "paper")  # masks from relabelled goals
    assert configs.MASK_CONVENTIONS == envs.MASK_CONVENTIONS


def test_a_bad_mask_convention_is_named():
    config = configs.get_config("qgf")
    config.mask_convention = "trajectory-end"
    with pytest.raises(configs.ConfigError, match="mask_convention='trajectory-end'.*did you mean 'trajectory_end'"):
        configs.check_config(config, [0.0])


def test_the_report_states_the_masks(tmp_path):
    row = dict(guidance_weight=0.0, task="all", success=0.5, success_stderr=0.1, episodes=2, length=10)
    row["return"] = -5.0
    write_report(
        str(tmp_path),
        [row],
        step=2,
        env_name="cube-single-play-singletask-task1-v0",
        agent_name="qgf",
        estimator="qgf",
        best_of_n=1,
        mask_convention="trajectory_end",
        command="python main.py",
    )
    assert (
        "Bootstrap masks of the training data: `trajectory_end` (1 − terminals" in (tmp_path / "report.md").read_text()
    )


def test_dataset_actions_are_clipped_as_the_official_loaders_clip_them():
    dataset = {**one_episode(), "actions": np.array([[-1.0], [1.0], [0.5], [-0.999]], np.float32)}
    eps = envs.DATASET_ACTION_CLIP_EPS
    clipped = np.asarray(envs.with_clipped_actions(dataset)["actions"])[:, 0]
    np.testing.assert_allclose(clipped, [-1 + eps, 1 - eps, 0.5, -0.999], rtol=0, atol=1e-7)
    assert clipped[0] > -1.0 and clipped[1] < 1.0 and clipped[2] == 0.5
    # The input is left as it was.
    np.testing.assert_array_equal(dataset["actions"][:, 0], np.float32([-1.0, 1.0, 0.5, -0.999]))
    for agent, clips in (("qgf", True), ("edp", True), ("qam", True), ("dac", True), ("gcqgf", True), ("fql", False)):
        config = configs.get_config(agent, "paper")
        assert config.clip_dataset_actions is clips, agent
        on_device = np.asarray(device_dataset(dataset, config, placement(1, 8))["actions"])[:, 0]
        assert bool(on_device[1] < 1.0) is clips, agent
    assert configs.get_config("cfgrl").clip_dataset_actions is False
