"""Seeds as a batch axis and sharding over devices: both must leave every seed's numbers unchanged."""

import functools
import json
import os

import jax
import numpy as np
import pytest
from conftest import TINY_RUN_FLAGS, TINY_TASK, final_checkpoint_arrays, read_csv, run_main, slow

import agents
import configs
import envs
from agents.training import make_train_chunk
from runner.devices import seed_batching

TWO_CPU_DEVICES = {"XLA_FLAGS": os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=2"}
LOSSES = ("train/policy/bc_loss", "train/critic/loss", "train/value/loss", "val/critic/loss")


def tiny_agent_and_sampler(dataset):
    config = configs.get_config("qgf", "demo")
    config.update(actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), batch_size=8, denoising_steps=3)
    sample = functools.partial(envs.sample_chunks, batch_size=8, horizon=config.horizon, discount=config.discount)
    return agents.make("qgf", config), sample


@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_seeds_in_one_call_equal_seeds_trained_one_by_one(tiny_dataset_dir, batching):
    _, train, _ = envs.make_env_and_datasets(TINY_TASK, dataset_dir=tiny_dataset_dir)
    dataset = envs.to_device_dataset(train)
    agent, sample = tiny_agent_and_sampler(dataset)
    init = jax.jit(jax.vmap(lambda key: agent.init(key, sample(dataset, key))))
    train_chunk = make_train_chunk(agent, sample, steps_per_call=3, seed_batching=batching)
    init_keys = jax.random.split(jax.random.PRNGKey(0), 3)
    data_keys = jax.random.split(jax.random.PRNGKey(1), 3)

    together, together_metrics = train_chunk(init(init_keys), dataset, data_keys)
    for i in range(3):
        alone, alone_metrics = train_chunk(init(init_keys[i : i + 1]), dataset, data_keys[i : i + 1])
        for got, want in zip(jax.tree_util.tree_leaves(together), jax.tree_util.tree_leaves(alone), strict=True):
            np.testing.assert_allclose(got[i], want[0], rtol=1e-5, atol=1e-6)
        for name, value in alone_metrics.items():
            np.testing.assert_allclose(together_metrics[name][i], value[0], rtol=1e-5, atol=1e-6)
    # The seeds are independent runs, not copies of one.
    policies = jax.tree_util.tree_leaves(together.policy.params)
    assert not np.allclose(policies[0][0], policies[0][1])


def assert_same_run(got_dir, want_dir, rtol):
    got, want = read_csv(os.path.join(got_dir, "train.csv")), read_csv(os.path.join(want_dir, "train.csv"))
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for got_row, want_row in zip(got, want, strict=True):
        for name in LOSSES:
            assert float(got_row[name]) == pytest.approx(float(want_row[name]), rel=rtol, abs=1e-6), name
    got_leaves, want_leaves = final_checkpoint_arrays(got_dir, 4), final_checkpoint_arrays(want_dir, 4)
    for got_leaf, want_leaf in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(got_leaf, want_leaf, rtol=rtol, atol=1e-5)


def test_seed_batching_maps_on_one_cpu_and_vmaps_over_devices():
    cpu = jax.devices("cpu")[0]
    assert seed_batching("auto", [cpu]) == "map"
    assert seed_batching("auto", [cpu, cpu]) == "vmap"  # the seed axis is what gets sharded
    assert seed_batching("vmap", [cpu]) == "vmap"
    with pytest.raises(configs.ConfigError, match="--seed_batching='batch'"):
        seed_batching("batch", [cpu])


@pytest.fixture(scope="module")
def two_seed_run(tiny_dataset_dir, tmp_path_factory):
    """Two seeds in one process on this one CPU device: mapped one after another (`--seed_batching=auto`)."""
    run_dir = str(tmp_path_factory.mktemp("seeds") / "two")
    process = run_main(
        f"--env={TINY_TASK}",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--run_dir={run_dir}",
        "--num_seeds=2",
        *TINY_RUN_FLAGS,
    )
    assert "seeds mapped one after another" in process.stdout
    return run_dir


def test_two_seeds_in_one_process_write_complete_per_seed_run_dirs(two_seed_run, finished_run):
    for seed in (0, 1):
        seed_dir = os.path.join(two_seed_run, f"seed{seed}")
        names = set(os.listdir(seed_dir))
        assert {"config.json", "train.csv", "eval.csv", "report.md", "success_vs_weight.png", "checkpoints"} <= names
        config = json.load(open(os.path.join(seed_dir, "config.json")))
        assert config["seed"] == seed and config["eval_reset_seed"] == 1000 * seed
        assert [float(r["guidance_weight"]) for r in read_csv(os.path.join(seed_dir, "eval.csv"))] == [0.0, 0.1]
    # Seed 0 trained beside seed 1 is the run of seed 0 alone; its config is the same, so it could resume it.
    assert_same_run(os.path.join(two_seed_run, "seed0"), finished_run, rtol=1e-4)
    alone = json.load(open(os.path.join(finished_run, "config.json")))
    assert json.load(open(os.path.join(two_seed_run, "seed0", "config.json"))) == alone
    assert read_csv(os.path.join(two_seed_run, "seed0", "train.csv")) != read_csv(
        os.path.join(two_seed_run, "seed1", "train.csv")
    )


def test_two_seeds_on_two_cpu_devices_give_the_losses_of_one_device(tiny_dataset_dir, two_seed_run, tmp_path):
    """Two seeds on 2 devices put one seed on each device."""
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", *TINY_RUN_FLAGS]
    two_seeds = run_main(*flags, "--num_seeds=2", f"--run_dir={tmp_path / 'seeds'}", extra_env=TWO_CPU_DEVICES)
    assert "2 cpu devices, sharding the seeds" in two_seeds.stdout
    for seed in ("seed0", "seed1"):
        assert_same_run(str(tmp_path / "seeds" / seed), os.path.join(two_seed_run, seed), rtol=1e-4)


@slow  # The sharded-batch path of the same machinery (the seed-sharded test above runs by default).
def test_one_seed_on_two_cpu_devices_shards_its_batch_and_gives_the_losses_of_one(
    tiny_dataset_dir, finished_run, tmp_path
):
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", *TINY_RUN_FLAGS]
    one_seed = run_main(*flags, f"--run_dir={tmp_path / 'data-parallel'}", extra_env=TWO_CPU_DEVICES)
    assert "2 cpu devices, sharding the data" in one_seed.stdout
    assert_same_run(str(tmp_path / "data-parallel"), finished_run, rtol=1e-4)


def test_seeds_that_do_not_split_over_the_devices_are_refused(tiny_dataset_dir, tmp_path):
    process = run_main(
        f"--env={TINY_TASK}",
        f"--dataset_dir={tiny_dataset_dir}",
        f"--run_dir={tmp_path}",
        "--num_seeds=3",
        *TINY_RUN_FLAGS,
        check=False,
        extra_env=TWO_CPU_DEVICES,
    )
    assert process.returncode != 0
    assert process.stderr.strip().splitlines()[-1].startswith("error: --num_seeds=3 does not split over 2 devices")
    assert "Traceback" not in process.stderr


@pytest.mark.parametrize("batching", ["vmap", "map"])
def test_validation_rows_average_batches_drawn_one_after_another_per_seed(batching):
    from runner.train_loop import make_validate

    data = {"x": jax.numpy.arange(1000.0)}

    def sample(dataset, key):
        return {"x": dataset["x"][jax.random.randint(key, (16,), 0, 1000)]}

    class MeanAgent:  # A state-scaled batch mean: each seed's row must use its own state and key.
        @staticmethod
        def validate(state, batch):
            return {"mean": state * batch["x"].mean()}

    states, keys = jax.numpy.array([1.0, 2.0]), jax.random.split(jax.random.key(0), 2)
    rows = make_validate(MeanAgent, sample, batching, num_batches=5)(states, data, keys)
    for seed in range(2):
        draws = [sample(data, k)["x"].mean() for k in jax.random.split(keys[seed], 5)]
        np.testing.assert_allclose(rows["mean"][seed], states[seed] * np.mean(draws), rtol=1e-6)
    single = make_validate(MeanAgent, sample, batching, num_batches=1)(states, data, keys)
    assert not np.allclose(single["mean"], rows["mean"])  # more than one batch went into the mean
