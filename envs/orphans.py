"""Worker processes (evaluation, dataset generation) end with their parent, even one killed by SIGKILL, which
cannot stop them: an orphaned worker would otherwise go on importing, building envs or collecting episodes at
full CPU for tens of seconds. And they leave stop signals to their parent (`ignore_stop_signals`), which stops
them.

On Linux the kernel does it: `prctl(PR_SET_PDEATHSIG, SIGKILL)` has the worker killed the moment its parent
dies, whatever it is doing (a worker holds nothing that needs saving: its parent collects its results). The
kernel watches the parent *thread* that started the worker, so start workers from a thread that outlives
them (this project starts them from the main thread). Elsewhere a daemon thread polls the parent's pid.
Importing this module is cheap (the standard library only), so a worker can call it before its slow imports.
"""

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Sent to every process of a terminal's process group (Ctrl-C) or of a SLURM job step (SIGUSR1, its warning).
# Not SIGTERM: multiprocessing stops workers with it (at the latest at exit, and then waits for them).
STOP_SIGNALS = (signal.SIGINT, signal.SIGUSR1)


def _kernel_ends_orphans() -> bool:
    """Asks the kernel to SIGKILL this process when its parent dies; whether it agreed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no prctl in this libc
        return False


def _watch(parent_pid: int, poll_s: float) -> None:
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def ignore_stop_signals() -> None:
    """Ctrl-C and SIGUSR1 are the parent's to handle (runner.interrupt): it saves, then stops its workers (or,
    stopping at once, ends them by ending). A worker that died of one would fail the evaluation it serves instead
    (as one killed by a SIGTERM sent to every process does: the parent then reports its own stop)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def end_with_parent(parent_pid: int | None = None, poll_s: float = 0.5) -> None:
    """Ends this process when its parent does. With `parent_pid` (the pid that started it), a parent that died
    before this call (which only covers deaths after it) ends it now."""
    if not _kernel_ends_orphans():
        _watch(os.getppid() if parent_pid is None else parent_pid, poll_s)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
