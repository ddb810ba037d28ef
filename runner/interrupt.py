"""Ctrl-C during training: the first press stops the run at the next safe point, where it saves a checkpoint;
a second press ends the process at once.

A KeyboardInterrupt raised wherever Python happens to be could land between the update of the states and
that of the step counter, so the handler only records the request; the train loop asks `stop_requested()`
after each compiled chunk of updates and the evaluation at each decision (`check()` raises `StopRequested`).
After the first press SIGINT is back to the OS's default action, so the second one ends the process even
while it is inside a long compiled call; a checkpoint save cut short that way leaves the previous one intact.
"""

import contextlib
import signal
import sys


class StopRequested(Exception):
    """Raised at a safe point after a Ctrl-C."""


class CtrlC:
    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print(
            "\nCtrl-C: stopping at the next safe point to save a checkpoint (Ctrl-C again to quit at once)",
            file=sys.stderr,
            flush=True,
        )

    def stop_requested(self) -> bool:
        return self.requested

    def check(self) -> None:
        if self.requested:
            raise StopRequested


@contextlib.contextmanager
def deferred_ctrl_c():
    """Within the block, Ctrl-C sets `requested` on the yielded CtrlC instead of raising KeyboardInterrupt.
    Outside the main thread (where signals cannot be handled) nothing changes."""
    ctrl_c = CtrlC()
    try:
        previous = signal.signal(signal.SIGINT, ctrl_c._handle)
    except ValueError:  # not the main thread
        yield ctrl_c
        return
    try:
        yield ctrl_c
    finally:
        signal.signal(signal.SIGINT, previous)
