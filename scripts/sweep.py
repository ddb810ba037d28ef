"""The table runner: a grid of `main.py` runs (tasks × methods × seeds), launched through submitit.

    python -m scripts.sweep --tasks=scene-play-singletask-task1-v0,puzzle-4x4-play-singletask-task1-v0 \
        --methods=bc,bfn4,qfql,bptt,jacobian,qgf,qgf-bo4,fql,edp --seeds=0,1,2 [--executor=local|slurm]
    python -m scripts.sweep --tasks=... --methods=paper   # every method of the paper (PAPER_METHODS)
    python -m scripts.table --runs=runs/sweep --name=main

A method is a training-time agent (`qgf`, `fql`, `edp`, `qam`, `cfgrl`, `dac`, `qsm`, and `robust_q`, which
trains its own run as in the paper) evaluated as trained, or a test-time method (BC, best-of-N `bfn<N>`, the
estimators, GradStep) evaluated with `main.py --eval_only` on the `qgf` run of the same task and seed
(METHODS below). GradStep evaluates with its family's α and L from `configs.FAMILY_SETTINGS`. One job
per (task, seed, training agent) trains the agent, then evaluates every method that uses its checkpoint,
so a test-time method never waits on another job. Every evaluation runs twice on disjoint reset seeds:
the *held-out* episodes (reset seed 1000·seed + 500), on which `scripts.table` chooses each method's
guidance weight, and the *reported* episodes (reset seed 1000·seed), on which it reports that weight.
Methods with a single weight skip the held-out pass, and the method a training run evaluates itself
(qgf's `qgf`, `fql`, `edp`: same estimator and best-of-N, reset seed 1000·seed) takes its reported
numbers from the run's own final evaluation instead of evaluating again.

Run dirs are `<root>/<task>/<agent>/seed<seed>`; evaluations land in
`<run>/eval/<estimator>-bo<N>[-gs<L>-a<α>]-reset<R>/` (runner.run_dir.eval_tag).
A step whose output exists is skipped (a training run whose final checkpoint exists, an evaluation whose
eval.csv exists), at submission and again when the job runs, so rerunning the command fills the holes
and an interrupted training run resumes from its checkpoint. The local executor runs `--parallel` jobs
at a time (1 by default: one machine); SLURM gets every job at once. Both go through the same code.
"""

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELDOUT_OFFSET = 500  # Held-out reset seeds start this far after the reported ones (> eval_episodes).


@dataclasses.dataclass(frozen=True)
class Method:
    agent: str  # The training-time agent whose checkpoint is evaluated.
    estimator: str  # `--agent.estimator` of the evaluation.
    best_of_n: int = 1  # `--agent.best_of_n` of the evaluation.
    sweep: bool = True  # Evaluated over the run's guidance-weight grid (else at its first weight only).
    label: str = ""  # Column title in the table.
    grad_step: bool = False  # GradStep after the flow sample, with the family's α and L.


METHODS = {
    "bc": Method("qgf", "none", 1, False, "BC"),
    "bfn4": Method("qgf", "none", 4, False, "BFN-4"),
    "bfn16": Method("qgf", "none", 16, False, "BFN-16"),
    "qfql": Method("qgf", "noisy", 1, True, "QFQL"),
    "bptt": Method("qgf", "bptt", 1, True, "BPTT"),
    "jacobian": Method("qgf", "jacobian", 1, True, "QGF-Jacobian"),
    "qgf": Method("qgf", "qgf", 1, True, "QGF"),
    "qgf-bo4": Method("qgf", "qgf", 4, True, "QGF + BoN-4"),
    "qgf-bo16": Method("qgf", "qgf", 16, True, "QGF + BoN-16"),
    "gradstep": Method("qgf", "none", 1, False, "GradStep", grad_step=True),
    "robustq": Method("robust_q", "none", 1, True, "Robust-Q"),
    "fql": Method("fql", "none", 1, False, "FQL"),
    "edp": Method("edp", "none", 1, False, "EDP"),
    "qam": Method("qam", "none", 1, False, "QAM"),
    "cfgrl": Method("cfgrl", "none", 1, True, "CFGRL"),
    "dac": Method("dac", "none", 1, False, "DAC"),
    "qsm": Method("qsm", "none", 1, False, "QSM"),
}
# `--methods=paper`: every method the paper compares (best-of-N at its N = 4 and 16).
PAPER_METHODS = (
    "bc", "bfn4", "bfn16", "qfql", "bptt", "jacobian", "qgf", "qgf-bo4", "gradstep", "robustq",
    "fql", "edp", "qam", "cfgrl", "dac", "qsm",
)  # fmt: skip
# `--preset=study` (docs/study.md): the study's methods, each task under its family preset + configs' `study`
# preset, datasets generated here (the study's own size, never OGBench's file), run dirs under runs/study.
STUDY_METHODS = ("bc", "bfn4", "bfn16", "qfql", "jacobian", "qgf", "fql")
STUDY_ROOT = "runs/study"


def study_root(preset: str) -> str:
    """Where a study preset's run dirs go by default: runs/study for part 1, runs/<preset> for the others."""
    return STUDY_ROOT if preset == "study" else f"runs/{preset}"


BEST_OF_N = re.compile(r"^bfn(?P<n>[1-9]\d*)$")  # bfn<N>: best-of-N of BC samples, any N.


def method_by_name(name: str) -> Method | None:
    """The method called `name` (METHODS, or bfn<N> for any N), or None."""
    if name in METHODS:
        return METHODS[name]
    match = BEST_OF_N.match(name)
    return Method("qgf", "none", int(match["n"]), False, f"BFN-{match['n']}") if match else None


def expand_methods(names: list) -> list:
    """The method names of `--methods`, `paper` replaced by PAPER_METHODS, duplicates dropped."""
    expanded = [m for name in names for m in (PAPER_METHODS if name == "paper" else (name,))]
    return list(dict.fromkeys(expanded))


def grad_step_setting(task: str) -> tuple[float, int]:
    """GradStep's (α, L) for the task's family (configs.FAMILY_SETTINGS); families outside the paper take
    cube-triple's (the paper's α and L of every family but scene)."""
    import configs
    import envs

    row = configs.FAMILY_SETTINGS.get(envs.parse_name(task).family, configs.FAMILY_SETTINGS["cube-triple"])
    return row.grad_step_size, row.grad_steps


def reported_reset_seed(seed: int) -> int:
    return 1000 * seed  # main.py's default, so the qgf run's own evaluations use the same episodes.


def heldout_reset_seed(seed: int) -> int:
    return 1000 * seed + HELDOUT_OFFSET


def run_dir(root: str, task: str, agent: str, seed: int) -> str:
    return os.path.join(root, task, agent, f"seed{seed}")


def eval_dir(run: str, estimator: str, best_of_n: int, reset_seed: int, grad_steps: int = 0, step_size=0.0) -> str:
    from runner.run_dir import eval_tag

    return os.path.join(run, "eval", eval_tag(estimator, best_of_n, reset_seed, grad_steps, step_size))


@dataclasses.dataclass(frozen=True)
class Step:
    """One `main.py` command and the file whose presence says it is done."""

    argv: tuple
    run: str  # The training run dir it trains or evaluates.
    output: str  # An eval.csv, or "" for a training step (done when the run's final checkpoint exists).

    def done(self) -> bool:
        if self.output:
            return os.path.exists(self.output)
        try:
            with open(os.path.join(self.run, "config.json")) as f:
                train_steps = json.load(f)["run"]["train_steps"]
        except (OSError, KeyError, ValueError):
            return False
        return self.saved_step() >= train_steps > 0

    def saved_step(self) -> int:
        """The run's latest checkpoint's step (where its training resumes), 0 when it has none."""
        try:
            return max((int(n) for n in os.listdir(os.path.join(self.run, "checkpoints")) if n.isdigit()), default=0)
        except OSError:
            return 0

    def command(self) -> str:
        return shlex.join(self.argv)


PREEMPT_SIGNAL = signal.SIGUSR1
"""SLURM's advance warning of the time limit (`sbatch --signal=USR1@<s>`), on which main.py saves the step reached
and stops (runner.interrupt) and submitit requeues the job, whose rerun resumes it. submitit's own default, USR2,
would end main.py unsaved."""
SIGNAL_DELAY_S = 180  # the warning's lead: the chunk of updates in progress, and a save
MAX_TIMEOUTS = 50  # requeues after reaching the time limit (submitit's default, 3, ends a week-long run on day 4)


class StepFailed(RuntimeError):
    """A main.py command of a job ended with a non-zero status (it printed why, into the job's log)."""


class Job:
    """The job of one grid cell: runs every step not yet done, in order, from the repository root, and returns
    what it ran; each finished step's wall time is appended to its run dir's step_times.csv (what the study
    reports).

    On SLURM's warning, submitit calls `checkpoint` in this process's signal handler: it waits for the
    running main.py (which SLURM signals too; it is signalled again here in case) to save and stop, then gives
    submitit the job to requeue, which skips the steps done and resumes the one stopped."""

    def __init__(self, steps: list):
        self.steps = steps
        self.running = None  # the main.py process of the step in progress

    def __call__(self) -> list:
        ran = []
        for step in self.steps:
            if step.done():
                continue
            print(f"+ {step.command()}", flush=True)
            start, from_step = time.time(), "" if step.output else step.saved_step()
            self.running = subprocess.Popen(step.argv, cwd=ROOT)
            status = self.running.wait()
            self.running = None
            if status != 0:
                raise StepFailed(f"{step.command()} exited with status {status}")
            record_step_time(step, time.time() - start, from_step)
            ran.append(step.command())
        return ran

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        if self.running is not None:
            stop_and_wait(self.running, SIGNAL_DELAY_S - 30)
        return DelayedSubmission(Job(self.steps))


def stop_and_wait(process, timeout_s: float) -> None:
    """Sends `process` PREEMPT_SIGNAL and waits up to `timeout_s` for it to end. It is not reaped here: this runs
    in a signal handler that may have interrupted `process.wait()`, which holds the process's lock."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, PREEMPT_SIGNAL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:  # already reaped
            return
        time.sleep(0.2)


STEP_TIME_FIELDS = ["output", "seconds", "finished", "command", "from_step"]


def record_step_time(step: Step, seconds: float, from_step: int | str = "") -> None:
    """Appends a finished step's row to its run dir's step_times.csv. `from_step` is the checkpoint a training step
    started from (0 for a fresh run): a resumed step's seconds are its last attempt's only, and the study adds the
    time of the updates before it from train.csv. A file written before that column existed gets it first (its old
    rows empty), rewritten atomically."""
    path = os.path.join(step.run, "step_times.csv")
    rows, current = [], False
    if os.path.exists(path):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            current = reader.fieldnames == STEP_TIME_FIELDS
            rows = [] if current else list(reader)
    output = os.path.relpath(step.output, step.run) if step.output else "train"
    finished = time.strftime("%Y-%m-%dT%H:%M:%S")
    row = {"output": output, "seconds": f"{seconds:.3f}", "finished": finished, "command": step.command(),
           "from_step": from_step}  # fmt: skip
    if not current:
        tmp = f"{path}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, STEP_TIME_FIELDS, restval="")
            writer.writeheader()
            writer.writerows([*rows, row])
        os.replace(tmp, path)
        return
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, STEP_TIME_FIELDS).writerow(row)


def task_preset(task: str, preset: str | None) -> str:
    """The configs preset of `task`'s runs: main.py's own rule (runner.config.task_preset): the family preset when
    none is given, the family preset followed by the study's for `--preset=study`, any other preset as given."""
    from runner.config import task_preset as resolved_preset

    return resolved_preset(preset, task)


def plan(args) -> list:
    """The jobs of the grid, each a list of Steps: train one agent on one task and seed, then evaluate."""
    methods = {name: method_by_name(name) for name in expand_methods(args.methods)}
    unknown = sorted(name for name, method in methods.items() if method is None)
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {sorted(METHODS)}, bfn<N> or paper")
    if args.eval_episodes is not None and args.eval_episodes > HELDOUT_OFFSET:
        raise SystemExit(f"--eval_episodes must be <= {HELDOUT_OFFSET}, or held-out episodes overlap reported ones")
    import configs
    import envs

    for task in args.tasks:
        try:
            envs.parse_name(task)
        except ValueError as error:
            raise SystemExit(f"error: --tasks: {error}") from None
    for task in args.tasks:
        try:
            for agent in {method.agent for method in methods.values()}:
                configs.get_config(agent, task_preset(task, args.preset))
        except configs.ConfigError as error:
            raise SystemExit(f"error: --preset={args.preset}: {error}") from None

    python = [sys.executable, os.path.join(ROOT, "main.py")]
    extra = shlex.split(args.extra)
    # main.py does not save where the data came from, and an evaluation needs it (for the state's shapes).
    data = [f"--dataset_dir={args.dataset_dir}"] if args.dataset_dir else []
    jobs = []
    for task in args.tasks:
        preset = task_preset(task, args.preset)
        for seed in args.seeds:
            for agent in dict.fromkeys(method.agent for method in methods.values()):
                run = run_dir(args.root, task, agent, seed)
                train = [
                    *python,
                    f"--agent={agent}",
                    f"--env={task}",
                    f"--seed={seed}",
                    f"--preset={preset}",
                    f"--run_dir={run}",
                    "--progress=false",
                    *data,
                    *extra,
                ]
                if args.train_steps is not None:
                    train.append(f"--train_steps={args.train_steps}")
                if args.eval_episodes is not None:
                    train.append(f"--eval_episodes={args.eval_episodes}")
                if configs.study_part(args.preset):
                    train.append("--data=generate")  # The study's dataset size, never OGBench's file.
                steps = [Step(tuple(train), run, "")]
                trained = configs.get_config(agent, preset)
                for method in methods.values():
                    if method.agent != agent:
                        continue
                    resets = [reported_reset_seed(seed)] + ([heldout_reset_seed(seed)] if method.sweep else [])
                    own = (method.estimator, method.best_of_n, method.grad_step) == (
                        trained.estimator,
                        trained.best_of_n,
                        bool(trained.get("grad_steps", 0)),
                    )
                    if own:
                        resets.remove(reported_reset_seed(seed))  # The training run's own final evaluation.
                    step_size, grad_steps = grad_step_setting(task) if method.grad_step else (0.0, 0)
                    for reset in resets:
                        evaluate = [
                            *python,
                            f"--agent={agent}",
                            "--eval_only",
                            f"--restore={run}",
                            f"--agent.estimator={method.estimator}",
                            f"--agent.best_of_n={method.best_of_n}",
                            f"--eval_reset_seed={reset}",
                            "--progress=false",
                            *data,
                        ]
                        if grad_steps:
                            evaluate += [f"--agent.grad_step_size={step_size}", f"--agent.grad_steps={grad_steps}"]
                        if not method.sweep:
                            evaluate.append("--guidance_weights=0")
                        if args.eval_episodes is not None:
                            evaluate.append(f"--eval_episodes={args.eval_episodes}")
                        where = eval_dir(run, method.estimator, method.best_of_n, reset, grad_steps, step_size)
                        output = os.path.join(where, "eval.csv")
                        steps.append(Step(tuple(evaluate), run, output))
                jobs.append(steps)
    return jobs


def slurm_parameters(args) -> dict:
    """The executor's SLURM settings: resources, and PREEMPT_SIGNAL SIGNAL_DELAY_S before the time limit, with
    requeueing allowed (also after a preemption or a node failure)."""
    name = signal.Signals(PREEMPT_SIGNAL).name.removeprefix("SIG")
    parameters = {
        "gpus_per_node": args.gpus,
        "cpus_per_task": args.cpus,
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
        # submitit writes sbatch's --signal from SUBMITIT_PREEMPT_SIGNAL as it was when submitit was imported, and
        # the job's submitit handles the signal that variable names in the job: both set here.
        "slurm_additional_parameters": {"signal": f"{name}@{SIGNAL_DELAY_S}", "requeue": True},
        "slurm_setup": [f"export SUBMITIT_PREEMPT_SIGNAL={name}"],
    }
    if args.partition:
        parameters["slurm_partition"] = args.partition
    return parameters


def failure_line(stderr_path, error: BaseException) -> str:
    """Why a job failed, in one line: main.py's last `error:` line in the job's log, else the error's last line."""
    try:
        with open(stderr_path, errors="replace") as f:
            lines = [line.strip() for line in f if line.startswith("error:")]
    except OSError:
        lines = []
    if not lines:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return lines[-1]


def launch(jobs: list, args) -> None:
    import submitit

    folder = os.path.join(args.root, "submitit")
    executor = submitit.AutoExecutor(folder=folder, cluster=args.executor, slurm_max_num_timeout=MAX_TIMEOUTS)
    executor.update_parameters(timeout_min=args.timeout_min, name="qgf-sweep")
    if args.executor == "slurm":
        executor.update_parameters(**slurm_parameters(args))
    parallel = args.parallel or (len(jobs) if args.executor == "slurm" else 1)
    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < parallel:
            steps = pending.pop(0)
            running.append((executor.submit(Job(steps)), steps))
            print(f"submitted job {running[-1][0].job_id}: {steps[0].run}", flush=True)
        time.sleep(args.poll_s)
        for job, steps in list(running):
            if job.done():
                running.remove((job, steps))
                try:
                    job.result()
                    print(f"finished {steps[0].run}", flush=True)
                except Exception as error:  # A failed cell is reported and the grid goes on.
                    failed.append(steps[0].run)
                    print(
                        f"FAILED {steps[0].run}: {failure_line(job.paths.stderr, error)}\n"
                        f"  logs: {job.paths.stdout}, {job.paths.stderr}",
                        flush=True,
                    )
    if failed:
        raise SystemExit(f"{len(failed)} job(s) failed: {failed}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=lambda s: s.split(","), required=True, help="comma-separated OGBench tasks")
    parser.add_argument(
        "--methods",
        type=lambda s: s.split(","),
        default=None,
        help=f"comma-separated, from {','.join(METHODS)}, bfn<N> (any N), or paper (every method of the paper); "
        f"default: every method, or the study's ({','.join(STUDY_METHODS)}) under --preset=study",
    )
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    parser.add_argument("--root", default=None, help=f"run dirs' root (default runs/sweep; {STUDY_ROOT} for the study)")
    parser.add_argument(
        "--preset",
        default=None,
        help="configs preset; default: the task's family preset. `study`: docs/study.md's protocol (family preset + "
        "configs' study preset, the study's methods, generated datasets, runs/study); `study-1000ep`: its part 2, the "
        "same on 1000 generated episodes (runs/study-1000ep); a study preset joined with modifiers, e.g. "
        "`study-1000ep+updates-90k+size-0.8m`: part 2's rungs (runs/<preset>)",
    )
    parser.add_argument("--train_steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--eval_episodes", type=int, default=None, help="default: the preset's")
    parser.add_argument("--dataset_dir", default=None, help="main.py --dataset_dir, for training and evaluation")
    parser.add_argument("--extra", default="", help="more main.py flags for the training runs, e.g. '--agent.lr=1e-4'")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local")
    parser.add_argument("--parallel", type=int, default=0, help="jobs at a time (default: 1 local, all on SLURM)")
    parser.add_argument("--timeout_min", type=int, default=24 * 60)
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per SLURM job")
    parser.add_argument("--cpus", type=int, default=8, help="CPUs per SLURM job")
    parser.add_argument("--poll_s", type=float, default=2.0)
    parser.add_argument(
        "--dry_run",
        action="store_true",
        help="check every training command with main.py --dry_run, print the commands still to run, launch nothing",
    )
    args = parser.parse_args(argv)
    import configs

    study = configs.study_part(args.preset) is not None
    if args.methods is None:
        args.methods = list(STUDY_METHODS if study else METHODS)
    if args.root is None:
        args.root = study_root(args.preset) if study else "runs/sweep"
    return args


def check_training_flags(jobs: list) -> None:
    """Resolves every training command of the grid with `main.py --dry_run` (no data, no compilation, nothing
    written); raises SystemExit naming each cell whose flags main.py refuses, with main.py's own `error:` line.
    Evaluations are not checked: they restore runs that do not exist yet."""
    refused = []
    for steps in jobs:
        process = subprocess.run([*steps[0].argv, "--dry_run"], cwd=ROOT, capture_output=True, text=True)
        if process.returncode != 0:
            lines = process.stderr.strip().splitlines() or [f"main.py exited with {process.returncode}"]
            error = next((line for line in lines if line.startswith("error:")), lines[-1])
            refused.append(f"{steps[0].run}: {error}")
    if refused:
        raise SystemExit(f"{len(refused)} of {len(jobs)} training command(s) refused:\n" + "\n".join(refused))
    print(f"main.py --dry_run accepts the {len(jobs)} training command(s).", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    jobs = plan(args)
    todo = [steps for steps in jobs if not all(step.done() for step in steps)]
    print(f"{len(jobs)} jobs in the grid, {len(jobs) - len(todo)} already done.", flush=True)
    if args.dry_run:
        check_training_flags(jobs)
        for steps in todo:
            for step in steps:
                if not step.done():
                    print(step.command())
        return
    launch(todo, args)
    print(f"Done. Table: python -m scripts.table --runs={args.root} --name=<name>", flush=True)


if __name__ == "__main__":
    main()
