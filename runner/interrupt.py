"""Stopping a run: Ctrl-C (SIGINT), SIGTERM (what `scancel`, `docker stop`, systemd and Kubernetes send) and
SIGUSR1 (SLURM's advance warning of a time limit or preemption, `sbatch --signal=USR1@<seconds>`).

Before training begins (imports, data, compilation) and while `--eval_only` evaluates, nothing needs saving:
`stop_at_once()`, the first statement of main.py, makes each of these signals end the process at once with one
line. It leaves with `os._exit`, as a kill would: every file the run writes is complete or replaced atomically,
so a kill loses nothing, whereas a KeyboardInterrupt raised wherever Python happens to be was swallowed by
callbacks (the run went on), printed import tracebacks, or crashed the interpreter's shutdown while XLA's
threads were still running.

While training, `deferred_stop()` only records the request: a KeyboardInterrupt raised mid-loop could land
between the update of the states and that of the step counter. The train loop asks after each compiled chunk
of updates and the evaluation at each decision (`check()` raises `StopRequested`), then saves a checkpoint of
the step reached. After a first request a Ctrl-C ends the process at once, even inside a long compiled call (a
checkpoint save cut short that way leaves the previous one intact); a repeated SIGTERM or SIGUSR1 changes
nothing, since schedulers send them more than once (to every process of a job step, then again as a requeue
warning) and follow with SIGKILL themselves.
"""

import contextlib
import os
import signal
import sys

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1"}


def exit_status(signum: int) -> int:
    """The shell's status of a process ended by `signum` (130 for Ctrl-C), which a stopped run exits with."""
    return 128 + signum


class StopRequested(Exception):
    """Raised at a safe point after a stop signal."""


_KEPT = ["the checkpoints are as they were"]  # what a stop at once leaves, innermost `keeping` last


def at_once_message(signum: int) -> str:
    """The line a stop at once prints: what is kept (the checkpoints, or what `keeping` says) and what to do."""
    return f"\nstopped ({STOP_SIGNALS[signum]}); {_KEPT[-1]}: rerun the same command to go on\n"


@contextlib.contextmanager
def keeping(what: str):
    """Within the block, a stop at once says `what` is kept (e.g. while generating the dataset, before any
    checkpoint exists: "the episodes generated so far are kept") instead of the checkpoints."""
    _KEPT.append(what)
    try:
        yield
    finally:
        _KEPT.pop()


def _exit_at_once(signum, frame) -> None:
    with contextlib.suppress(Exception):  # the main thread may have been writing to stdout: never mind
        sys.stdout.flush()
    os.write(sys.stderr.fileno(), at_once_message(signum).encode())
    os._exit(exit_status(signum))


def stop_at_once() -> None:
    """Each stop signal ends this process at once, with one line (the main thread only)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_at_once)


class StopRequest:
    def __init__(self):
        self.signum = None  # the first stop signal received

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a repeated SIGTERM or SIGUSR1 (a repeated Ctrl-C never gets here)
            return
        self.signum = signum
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print(
            f"\n{STOP_SIGNALS[signum]}: stopping at the next safe point to save a checkpoint (Ctrl-C to quit at once)",
            file=sys.stderr,
            flush=True,
        )

    def check(self) -> None:
        if self.requested:
            raise StopRequested


@contextlib.contextmanager
def deferred_stop():
    """Within the block, a stop signal sets `requested` on the yielded StopRequest instead of acting at once.
    Outside the main thread (where signals cannot be handled) nothing changes."""
    stop = StopRequest()
    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, stop._handle)
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
