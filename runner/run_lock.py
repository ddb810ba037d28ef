"""One process at a time per run directory: `<run dir>/run.lock`, held while a run uses the directory.

The lock is an advisory `flock` on the file, which the OS releases whenever the holder ends (even by
SIGKILL), so a lock is never stale in the kernel's eyes; the file itself also records the holder's PID,
host and start time, so a second run can name who holds it, and a run that finds a file left by a dead
process (the file outlives a kill; the lock does not) says that it takes it over.
"""

import fcntl
import json
import os
import socket
import time

LOCK_NAME = "run.lock"


class RunDirLockedError(RuntimeError):
    """Another process holds the run directory (the message names it), or its lock file cannot be one."""


def _holder(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # written at this instant, or by something else
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"process {holder.get('pid')} on host {holder.get('host')} (since {since})"


class RunLock:
    """`RunLock(run_dir)` takes the lock or raises RunDirLockedError; `release()` (or the process ending)
    gives it back. `took_over` describes the dead holder whose file was found, or is None."""

    def __init__(self, run_dir: str, elsewhere: str = "choose another --run_dir"):
        """`elsewhere`: the advice, after waiting, when another process holds the dir."""
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, LOCK_NAME)
        self.took_over = None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except IsADirectoryError:
                raise RunDirLockedError(
                    f"{self.path} is a directory, where a run keeps its lock file; remove it, or choose another "
                    "--run_dir"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirLockedError(
                    f"{run_dir} is in use by {_describe(_holder(self.path))}; wait for that run to end (or stop "
                    f"it), or {elsewhere}"
                ) from None
            # The holder before us may have removed the file between our open and our flock: then we locked
            # a file no one else can see, so start again on the new one.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _holder(self.path)
        if previous:
            self.took_over = _describe(previous)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError:  # a full disk: leave no empty lock file behind
            os.remove(self.path)
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        """Removes the file, then unlocks it (in that order, so a waiting run never locks a removed file)."""
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
