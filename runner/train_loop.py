"""The train loop: chunks of `steps_per_call` updates per compiled call, with validation and train.csv rows
every `log_every` steps, a sweep evaluation every `eval_every` and checkpoints every `save_every`.

A step that evaluates is saved first, so an evaluation that fails (a killed worker, a broken renderer) loses no
training: it raises `EvaluationFailed`, and the rerun evaluates that step first, then goes on.
A stop signal (Ctrl-C, SIGTERM, SIGUSR1: runner.interrupt) stops the loop after the chunk in progress (or
abandons the evaluation in progress), saves a checkpoint of the step reached and raises `RunStopped`; an
evaluation abandoned that way runs first when the run resumes.
"""

import os
import sys
import time

import jax
from tqdm import tqdm

from agents.training import check_finite, make_train_chunk, over_seeds
from runner.config import RunPlan
from runner.estimate import Estimate
from runner.interrupt import StopRequested, deferred_stop, exit_status
from runner.session import open_session


class RunStopped(Exception):
    """The run stopped at a stop signal `signum`, with a checkpoint of the step it reached; `status` is the exit
    status that reports it."""

    def __init__(self, step: int, signum: int):
        super().__init__(f"stopped at step {step}; rerun the same command to resume")
        self.step = step
        self.status = exit_status(signum)


def _first_and_last_line(error: BaseException) -> str:
    """`error` in one line: a worker's failure carries its traceback, whose last line says what failed."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return (lines[0] if len(lines) == 1 else f"{lines[0].rstrip(':')} {lines[-1]}").rstrip(".")


class EvaluationFailed(Exception):
    """The evaluation of a step failed after that step's checkpoint was saved; the message says what failed and
    how to evaluate it. Raised from the failure itself (`__cause__`)."""

    def __init__(self, step: int, run_dirs: list, cause: BaseException):
        others = " (and likewise for the other seeds' run dirs)" if len(run_dirs) > 1 else ""
        super().__init__(
            f"the evaluation of step {step} failed ({_first_and_last_line(cause)}); the checkpoint of step {step} is "
            "saved: rerun the same command to evaluate it and go on, or evaluate it alone with "
            f"`python main.py --eval_only --restore={run_dirs[0]}`{others}"
        )


def train_rows(step: int, steps_per_s: float, metrics: dict, val_metrics: dict, num_seeds: int) -> list[dict]:
    """One train.csv row per seed from the chunk's mean metrics and the validation metrics ([S] arrays)."""
    rows = []
    for i in range(num_seeds):
        row = {"step": step, "steps_per_s": steps_per_s}
        row.update({f"train/{k}": float(v[i]) for k, v in metrics.items()})
        row.update({f"val/{k}": float(v[i]) for k, v in val_metrics.items()})
        rows.append(row)
    return rows


VALIDATION_BATCHES = 8
"""Batches averaged into each validation row. One batch of 256 made the critic's validation curve too noisy to
read a trend from; eight cost eight loss evaluations per row, under 1 % of the updates between two rows."""


def make_validate(agent, sample, batching: str, num_batches: int = VALIDATION_BATCHES):
    """(states, dataset, keys) → the validation metrics of each seed ([S] arrays), each the mean over
    `num_batches` batches drawn from `dataset` one after another (so memory stays that of one batch)."""

    def one_seed(state, dataset, key):
        def one_batch(batch_key):
            return agent.validate(state, sample(dataset, batch_key))

        metrics = jax.lax.map(one_batch, jax.random.split(key, num_batches))
        return jax.tree.map(lambda m: m.mean(axis=0), metrics)

    return jax.jit(over_seeds(one_seed, in_axes=(0, None, 0), batching=batching))


def train(plan: RunPlan) -> list[str]:
    """Trains (or resumes) the plan's seeds to `run.train_steps`; returns the paths of their reports."""
    session = open_session(plan)
    run, agent, sample, where = plan.run, session.agent, session.sample, session.where
    train_chunk = make_train_chunk(agent, sample, run.steps_per_call, where.constrain_batch, plan.batching)
    validate = make_validate(agent, sample, plan.batching)
    fold_in = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
    seconds = {"data": session.data_seconds, "train": 0.0, "eval": 0.0}
    step = session.step
    last_log = (time.perf_counter(), step)  # for steps/s between two logs
    bar = tqdm(total=run.train_steps, initial=step, disable=not plan.progress, unit="step", dynamic_ncols=True)
    estimate = Estimate(run.train_steps, run.eval_every, on_cpu=jax.default_backend() == "cpu")
    postfix = {}  # the progress bar's: losses, and the time left of the whole run

    def say(lines: list[str]) -> None:
        for line in lines:
            bar.write(line)
        sys.stdout.flush()

    def evaluation_due(step: int) -> bool:
        return step % run.eval_every == 0 or step == run.train_steps

    def evaluate(step: int) -> None:  # once the step's checkpoint is saved
        try:
            took = session.evaluate(step)
            seconds["eval"] += took
            say(estimate.evaluation(step, took))
        except StopRequested:  # abandoned; it runs first when the run resumes
            raise RunStopped(step, stop.signum) from None
        except Exception as error:
            if stop.requested:  # e.g. a worker killed by the scheduler that is stopping this run
                raise RunStopped(step, stop.signum) from None
            if isinstance(error, OSError) and error.errno is not None:  # a full or read-only disk: main.py's to name
                raise
            raise EvaluationFailed(step, plan.train_dirs, error) from error

    try:
        with deferred_stop() as stop:
            session.stop = stop
            if step and evaluation_due(step) and not session.runs.evaluated(step):
                evaluate(step)  # abandoned or failed before
            while step < run.train_steps:
                start = time.perf_counter()
                # Not kept in a variable: the rotation releases the previous slice when it hands over the next.
                keys = fold_in(session.keys.data, step)
                session.states, metrics = train_chunk(session.states, session.train_dataset(step), keys)
                first, step = step, step + run.steps_per_call
                session.step = step
                metrics = jax.device_get(metrics)
                check_finite(metrics, first, step, session.runs.checkpoints[0].latest_step(), plan.seeds)
                if step % run.log_every == 0:
                    val_data = session.validation_dataset(first)
                    val_metrics = jax.device_get(validate(session.states, val_data, fold_in(session.keys.val, step)))
                    del val_data
                    rate = (step - last_log[1]) / (time.perf_counter() - last_log[0])
                    last_log = (time.perf_counter(), step)
                    rows = train_rows(step, rate, metrics, val_metrics, len(plan.seeds))
                    if session.rotation is not None:
                        for row in rows:
                            row["data/slice"] = session.rotation.index(first)  # the slice this chunk trained on
                    for row, log, writer in zip(rows, session.runs.train_logs, session.runs.writers, strict=True):
                        log.write(row)
                        for k, v in row.items():
                            if k != "step":
                                writer.add_scalar(k, v, step)
                    postfix.update(bc=f"{row['train/policy/bc_loss']:.3f}", q=f"{row['train/critic/q_mean']:.1f}")
                jax.block_until_ready(session.states)
                chunk_seconds = time.perf_counter() - start
                seconds["train"] += chunk_seconds
                say(estimate.chunk(step, run.steps_per_call, chunk_seconds))  # from this timing: no sync added
                postfix["run_left"] = estimate.postfix(step)
                bar.set_postfix(postfix, refresh=False)
                bar.update(run.steps_per_call)
                if stop.requested or evaluation_due(step) or step % run.save_every == 0:
                    session.runs.save(step, session.states)
                if stop.requested:
                    raise RunStopped(step, stop.signum)
                if evaluation_due(step):
                    evaluate(step)
    finally:
        bar.close()
        session.close()
    reports = [os.path.join(d, "report.md") for d in plan.out_dirs]
    print(
        f"Done: data {seconds['data']:.0f} s, training {seconds['train']:.0f} s, evaluation {seconds['eval']:.0f} s. "
        f"Report(s): {', '.join(reports)}",
        flush=True,
    )
    return reports
