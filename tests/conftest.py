import os
import sys

# The suite is dominated by XLA compilation of tiny programs: cheaper CPU code generation cut one compile
# from 8.7 s to 5.2 s here (set before JAX is imported; main.py subprocesses inherit it).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
# No test downloads from the internet: a missing dataset's download (`--data=auto`, the default) goes to a
# closed local port and fails at once; tests of downloads serve files on 127.0.0.1 themselves.
os.environ.setdefault("OGBENCH_DATASET_URL", "http://127.0.0.1:9")

# Tests import the project's top-level packages from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import csv  # noqa: E402
import subprocess  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_TASK = "cube-single-play-singletask-task1-v0"
# Flags that make a main.py run tiny: a few updates of small networks, a 2-episode sweep of 2 weights.
TINY_RUN_FLAGS = [
    "--preset=demo",
    "--train_steps=4",
    "--steps_per_call=2",
    "--log_every=2",
    "--eval_every=4",
    "--save_every=2",
    "--eval_episodes=2",
    "--guidance_weights=0,0.1",
    "--agent.actor_hidden_dims=(16,16)",
    "--agent.critic_hidden_dims=(16,16)",
    "--agent.batch_size=8",
    "--agent.denoising_steps=3",
    "--progress=false",
]


# Tests that take minutes or tens of seconds and repeat what faster tests cover; `QGF_SLOW_TESTS=1` runs them.
slow = pytest.mark.skipif(os.environ.get("QGF_SLOW_TESTS") != "1", reason="slow: set QGF_SLOW_TESTS=1")


@pytest.fixture(autouse=True, scope="module")
def release_module_memory():
    """Each test module starts without the evaluation envs (~110 MB each) and worker pools earlier ones cached,
    and without their compiled XLA programs: the suite compiles hundreds of them, which otherwise accumulate."""
    yield
    import gc

    import jax

    from envs.rollouts import release_envs

    release_envs()
    jax.clear_caches()
    gc.collect()
    if sys.platform.startswith("linux"):  # glibc keeps freed heap pages unless asked to give them back.
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory):
    """cube-single-play with 2 short episodes (+1 validation episode), generated once per test session."""
    from envs import generate_dataset

    directory = str(tmp_path_factory.mktemp("ogbench-data"))
    generate_dataset(
        "cube-single-play-v0", directory, episodes=2, seed=0, workers=1, max_episode_steps=60, progress=False
    )
    return directory


@pytest.fixture(scope="session")
def finished_run(tiny_dataset_dir, tmp_path_factory):
    """A finished tiny main.py run of seed 0 (TINY_RUN_FLAGS), shared by the tests that compare with it."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "uninterrupted")
    run_main(f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *TINY_RUN_FLAGS)
    return run_dir


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def final_checkpoint_arrays(run_dir, step):
    """The leaves of a run's checkpoint of `step`, as numpy arrays."""
    import jax
    import orbax.checkpoint as ocp

    restored = ocp.StandardCheckpointer().restore(os.path.join(run_dir, "checkpoints", str(step), "default"))
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(restored)]


def run_main(*flags, timeout=600, check=True, extra_env=None):
    """Runs `python main.py FLAGS` from the repository root (with `extra_env` set); returns the process."""
    process = subprocess.run(
        [sys.executable, os.path.join(ROOT, "main.py"), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(extra_env or {})},
    )
    if check and process.returncode != 0:
        raise AssertionError(
            f"main.py failed ({process.returncode}):\n{process.stdout[-3000:]}\n{process.stderr[-5000:]}"
        )
    return process
