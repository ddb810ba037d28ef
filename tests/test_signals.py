"""Reliability on a cluster (issue #26): real signals and real kills to real processes.

A step that evaluates is saved before its evaluation, so a killed evaluation worker loses no training; SIGTERM
and SIGUSR1 stop training with a checkpoint of the step reached, as Ctrl-C does; Ctrl-C during start-up ends the
run at once in one line; worker processes end with their parent; a SLURM sweep asks for the warning signal
and requeues, and a failed sweep job is named by main.py's own error line.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY_RUN_FLAGS, TINY_TASK, read_csv, run_main
from test_reliability import compile_cache, last_error_line, step_dirs  # noqa: F401 (compile_cache: a fixture)

from configs import ConfigError
from runner.config import Options, resolve
from runner.interrupt import STOP_SIGNALS, StopRequested, deferred_stop
from scripts import sweep

MAIN = [sys.executable, os.path.join(ROOT, "main.py")]
pytestmark = pytest.mark.usefixtures("compile_cache")  # main.py runs share compiled programs


def spawned_children(pid: int) -> list[int]:
    """The processes `pid` started with multiprocessing's 'spawn' (workers; not its resource tracker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, process, log_path, timeout=180.0):
    """Polls `condition()` until it holds; fails if `process` ends first or the time runs out."""
    deadline = time.time() + timeout
    while not (found := condition()):
        assert process.poll() is None, f"ended first:\n{open(log_path).read()[-3000:]}"
        assert time.time() < deadline, f"timed out:\n{open(log_path).read()[-3000:]}"
        time.sleep(0.02)
    return found


def start(command, log_path, **kwargs):
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, **kwargs)


def assert_ended_soon(pids: list[int], within_s: float) -> None:
    deadline = time.time() + within_s
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} worker(s) outlived their killed parent by {within_s} s"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes in /proc")
def test_a_killed_evaluation_worker_loses_no_training_and_the_rerun_finishes(tiny_dataset_dir, tmp_path):
    run_dir = tmp_path / "run"
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *TINY_RUN_FLAGS]
    flags += ["--save_every=4", "--eval_episodes=4"]  # 8 episodes: two evaluation workers, each busy a while
    process = subprocess.Popen([*MAIN, *flags], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (workers := spawned_children(process.pid)):  # the final evaluation (step 4) has begun
            assert process.poll() is None and time.time() < deadline, process.communicate()
            time.sleep(0.02)
        os.kill(workers[0], signal.SIGKILL)  # as the OOM killer would
        ended = subprocess.CompletedProcess(process.args, None, *process.communicate(timeout=120))
        ended.returncode = process.returncode
    finally:
        if process.poll() is None:
            process.kill()
    line = last_error_line(ended, "the evaluation of step 4 failed (Evaluation worker")
    assert line.endswith(
        f"the checkpoint of step 4 is saved: rerun the same command to evaluate it and go on, or evaluate it alone "
        f"with `python main.py --eval_only --restore={run_dir}`"
    ), line
    assert step_dirs(str(run_dir)) == ["4"]
    assert not (run_dir / "eval.csv").exists() or not read_csv(run_dir / "eval.csv")

    resumed = run_main(*flags)
    assert "Resumed from the checkpoint at step 4." in resumed.stdout
    assert [int(r["step"]) for r in read_csv(run_dir / "eval.csv")] == [4, 4]  # two weights
    assert [int(r["step"]) for r in read_csv(run_dir / "train.csv")] == [2, 4]


@pytest.mark.parametrize("option", ["seed", "eval_reset_seed"])
def test_a_negative_seed_is_refused_before_training(option):
    """It used to train, then fail in every evaluation (environments reset from seeds >= 0)."""
    with pytest.raises(ConfigError, match=f"^--{option}=-1 must be 0 or more$"):
        resolve(Options(env=TINY_TASK, preset="demo", **{option: -1}))


# ---------------------------------------------------------------- SIGTERM, SIGUSR1 and Ctrl-C

LONG_FLAGS = ["--train_steps=1000", "--eval_every=1000", "--save_every=1000"]  # trains for a while: 2 steps a call


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_scheduler_signal_saves_the_step_reached_and_the_rerun_resumes(signum, tiny_dataset_dir, tmp_path):
    run_dir = tmp_path / "run"
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *TINY_RUN_FLAGS]
    flags += LONG_FLAGS
    log_path = tmp_path / "stopped.log"
    process = subprocess.Popen([*MAIN, *flags], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    try:
        train_csv = run_dir / "train.csv"
        wait_for(lambda: train_csv.exists() and train_csv.read_text().count("\n") > 2, process, log_path)
        process.send_signal(signum)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = open(log_path).read()
    assert process.returncode == 128 + signum and "Traceback" not in stderr, (process.returncode, stderr[-3000:])
    name = signal.Signals(signum).name
    assert f"{name}: stopping at the next safe point to save a checkpoint" in stderr, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("stopped at step ") and last.endswith("; rerun the same command to resume"), last
    step = int(last.split()[3].rstrip(";"))
    assert 0 < step < 1000 and step_dirs(str(run_dir)) == [str(step)]
    assert not (run_dir / "run.lock").exists()
    if signum == signal.SIGTERM:  # the rerun resumes there (one signal is enough to pay for that)
        resumed = run_main(*flags)
        assert f"Resumed from the checkpoint at step {step}." in resumed.stdout
        assert int(read_csv(run_dir / "train.csv")[-1]["step"]) == 1000


def test_a_scheduler_signal_to_every_process_during_an_evaluation_stops_the_run(tiny_dataset_dir, tmp_path):
    """SLURM signals every process of a job step, evaluation workers included: the evaluation is abandoned and the
    run stops as when main.py alone is signalled, not as a failed evaluation."""
    run_dir = tmp_path / "run"
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={run_dir}", *TINY_RUN_FLAGS]
    log_path = tmp_path / "log"
    process = start([*MAIN, *flags, "--eval_episodes=4"], log_path, start_new_session=True)
    try:
        wait_for(lambda: spawned_children(process.pid), process, log_path)  # the evaluation of step 4 has begun
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGUSR1)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = open(log_path).read()
    assert process.returncode == 128 + signal.SIGUSR1 and "Traceback" not in output, output[-3000:]
    assert output.strip().splitlines()[-1] == "stopped at step 4; rerun the same command to resume", output[-2000:]
    assert step_dirs(str(run_dir)) == ["2", "4"]
    assert not (run_dir / "eval.csv").exists() or not read_csv(run_dir / "eval.csv")  # abandoned: done on resume


@pytest.mark.parametrize("after_s", [0.5, 1.5, 3.0, 5.0])
def test_ctrl_c_during_start_up_ends_the_run_at_once_in_one_line(after_s, tiny_dataset_dir, tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while importing, resolving, loading data and
    compiling: the run ends within seconds, with one line and status 130, every time."""
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tiny_dataset_dir}", f"--run_dir={tmp_path}/run", *TINY_RUN_FLAGS]
    log_path = tmp_path / "log"
    process = start([*MAIN, *flags, *LONG_FLAGS], log_path, start_new_session=True)
    try:
        time.sleep(after_s)
        assert process.poll() is None, open(log_path).read()[-3000:]
        os.killpg(process.pid, signal.SIGINT)
        sent = time.time()
        process.wait(timeout=60)
        took = time.time() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = open(log_path).read()
    for sign in ("Traceback", "Exception ignored", "Fatal Python error", "KeyboardInterrupt"):
        assert sign not in output, output[-3000:]
    assert process.returncode == 130, (process.returncode, output[-3000:])
    last = output.strip().splitlines()[-1]
    assert last in (
        "stopped (Ctrl-C); the checkpoints are as they were: rerun the same command to go on",
        *(f"stopped at step {s}; rerun the same command to resume" for s in range(2, 1001, 2)),
    ), output[-3000:]
    assert took < 10, f"ended {took:.1f} s after Ctrl-C"


# ---------------------------------------------------------------- workers end with their parent

BUSY_POOL = """
import sys
from envs.vector_env import WorkerPool

pool = WorkerPool(sys.argv[1], {}, 2)
pool.reset([(0, None), (1, None)], [False, False])  # the workers are up
print("ready", flush=True)
pool.reset([(i, None) for i in range(60)], [False] * 60)  # each builds 30 envs: seconds of work
"""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes in /proc")
def test_evaluation_workers_end_within_a_second_of_their_killed_parent(tmp_path):
    log_path = tmp_path / "log"
    parent = start([sys.executable, "-c", BUSY_POOL, TINY_TASK], log_path)
    try:
        wait_for(lambda: "ready" in open(log_path).read(), parent, log_path, timeout=120)
        workers = spawned_children(parent.pid)
        assert len(workers) == 2
        time.sleep(0.5)  # the workers are building envs
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert_ended_soon(workers, within_s=1.0)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds worker processes in /proc")
def test_generation_workers_of_main_end_with_it_even_while_importing(tmp_path):
    """main.py's generation workers import main.py first (as 'spawn' does), for seconds: killed then, they end."""
    log_path = tmp_path / "log"
    flags = [f"--env={TINY_TASK}", f"--dataset_dir={tmp_path}/data", "--data=generate", f"--run_dir={tmp_path}/run"]
    parent = start([*MAIN, *flags, *TINY_RUN_FLAGS], log_path)
    try:
        workers = wait_for(lambda: len(w := spawned_children(parent.pid)) == 2 and w, parent, log_path, timeout=120)
        time.sleep(0.3)  # past their interpreter's start: importing main.py
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert_ended_soon(workers, within_s=1.0)
    time.sleep(1.0)  # Python's resource tracker, which outlives them, would have warned of leaked semaphores by now
    assert "leaked semaphore" not in open(log_path).read()


def test_a_repeated_scheduler_signal_is_absorbed_and_ctrl_c_then_quits_at_once():
    """SLURM signals every process of a job step, and the sweep's job signals main.py again: the second SIGTERM
    or SIGUSR1 must not end a run that is saving."""
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with deferred_stop() as stop:
        stop.check()  # nothing requested: no effect
        for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGUSR1):
            os.kill(os.getpid(), signum)
            time.sleep(0.01)  # Python runs the handler between bytecodes
        assert stop.signum == signal.SIGUSR1  # the first one is reported
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # a Ctrl-C now ends the process at once
        with pytest.raises(StopRequested):
            stop.check()
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


# ---------------------------------------------------------------- scripts.sweep on SLURM


def test_a_slurm_sweep_asks_for_the_warning_signal_and_requeueing(tmp_path):
    import submitit
    from submitit.slurm.slurm import _make_sbatch_string

    args = sweep.parse_args([f"--tasks={TINY_TASK}", "--executor=slurm", "--partition=gpu"])
    parameters = sweep.slurm_parameters(args)
    submitit.AutoExecutor(folder=tmp_path, cluster="local").update_parameters(**parameters)  # valid names
    slurm = {name.removeprefix("slurm_"): value for name, value in parameters.items()}
    script = _make_sbatch_string(command="python -m submitit.core._submit", folder=tmp_path, **slurm).splitlines()
    assert f"#SBATCH --signal=USR1@{sweep.SIGNAL_DELAY_S}" in script and "#SBATCH --requeue" in script
    assert "#SBATCH --partition=gpu" in script
    # The job's submitit handles the signal the setup line names (it reads it when imported).
    setup = script.index("export SUBMITIT_PREEMPT_SIGNAL=USR1")
    assert setup < script.index("# command")
    probe = "from submitit.slurm.slurm import SlurmJobEnvironment as E; print(E._usr_sig().name)"
    env = {**os.environ, "SUBMITIT_PREEMPT_SIGNAL": "USR1"}
    assert subprocess.check_output([sys.executable, "-c", probe], env=env, text=True).strip() == "SIGUSR1"


# A stand-in for main.py: on SIGUSR1 it takes a moment to save, then stops with main.py's status.
STAND_IN = """
import os, signal, sys, time
warned = []
signal.signal(signal.SIGUSR1, lambda *_: warned.append(1))
open(sys.argv[1] + ".ready", "w").close()
while not warned:
    time.sleep(0.01)
time.sleep(0.5)
open(sys.argv[1] + ".saved", "w").close()
sys.exit(128 + signal.SIGUSR1)
"""

# A job process as submitit runs it on SLURM: its handler of the warning calls the job's `checkpoint`, then exits.
JOB = """
import signal, sys
from scripts.sweep import Job, Step

job = Job([Step((sys.executable, "-c", sys.argv[1], sys.argv[2]), sys.argv[3], "")])

def warned(signum, frame):
    again = job.checkpoint().function
    print("requeued", type(again).__name__, again.steps == job.steps, again.running, flush=True)
    sys.exit(1)

signal.signal(signal.SIGUSR1, warned)
job()
"""


def test_a_warned_sweep_job_waits_for_main_to_save_then_is_requeued(tmp_path):
    marker = str(tmp_path / "main")
    log_path = tmp_path / "job.log"
    job = start([sys.executable, "-c", JOB, STAND_IN, marker, str(tmp_path / "run")], log_path, start_new_session=True)
    try:
        wait_for(lambda: os.path.exists(marker + ".ready"), job, log_path, timeout=60)
        os.killpg(job.pid, signal.SIGUSR1)  # SLURM signals every process of the job step
        job.wait(timeout=30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert "requeued Job True None" in open(log_path).read(), open(log_path).read()
    assert os.path.exists(marker + ".saved")  # main.py had saved before the job was requeued


def test_a_failed_sweep_job_shows_mains_error_line(tmp_path):
    # A process of its own: submitit's local jobs leave pytest-xdist's captured stdout closed in the worker.
    argv = [f"--tasks={TINY_TASK}", "--methods=qgf", f"--root={tmp_path}", "--poll_s=0.2", "--extra=--agent.lr=-1"]
    process = subprocess.run(
        [sys.executable, "-m", "scripts.sweep", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert process.returncode == 1 and process.stderr.strip().splitlines()[-1].startswith("1 job(s) failed")
    out = process.stdout
    failed = [line for line in out.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and failed[0].endswith(": error: --agent.lr=-1.0 must be > 0"), out
    assert "Traceback" not in out and "CalledProcessError" not in out, out


def test_ctrl_c_while_the_dataset_is_generated_says_the_episodes_are_kept(tmp_path, monkeypatch):
    """The line of a stop at once names what is kept: the checkpoints, or while generating (before any checkpoint
    may exist) the episodes generated so far."""
    from runner import interrupt, run_data

    assert "; the checkpoints are as they were: rerun" in interrupt.at_once_message(signal.SIGINT)
    said = []
    monkeypatch.setattr(run_data.envs, "generate_dataset", lambda *a, **k: said.append(interrupt.at_once_message(2)))
    run = configs_run(tmp_path)
    run_data.obtain_missing_files(TINY_TASK, run, str(tmp_path), "generate", progress=False)
    assert said == [
        "\nstopped (Ctrl-C); the episodes generated so far are kept (and the checkpoints, if any, as they were): "
        "rerun the same command to go on\n"
    ]
    assert "the checkpoints are as they were" in interrupt.at_once_message(signal.SIGINT)  # after it, as before


def configs_run(dataset_dir):
    import configs

    run = configs.get_run_config("demo")
    run.update(dataset_dir=str(dataset_dir), dataset_path=None, dataset_episodes=2, dataset_episode_steps=30)
    return run
