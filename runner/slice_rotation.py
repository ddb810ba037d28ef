"""Training on a directory of dataset slices: the slice in use follows from the step; the next one loads ahead.

OGBench's 100M-transition datasets are directories of 1M-transition `.npz` slices, too large to hold at
once. As the official QGF loop does, training moves to the next slice (in name order, cycling) every
`slice_every` update steps: the steps [k·slice_every, (k+1)·slice_every) train on slice k mod n. Because the
slice follows from the step, a resumed run continues on the slice it stopped on. While one slice trains, a
background thread reads the next one, relabels it and puts it on the device, so a swap costs no pause as long
as loading a slice takes less time than training on one. At most two slices are alive: the one in use and
the one loading (the caller must not keep the datasets it was handed earlier).

Slices of different lengths are different array shapes, so the train step compiles once per distinct length
(OGBench's 100M slices are described as 1M transitions each: one compilation).
"""

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import jax


class SliceRotation:
    """`rotation.dataset(step)` is the device dataset for the chunk of update steps that starts at `step`.

    `load(path) -> device dataset` reads one slice (e.g. load_file, the mask convention, to_device_dataset);
    it runs on a background thread, so it must not touch state shared with the training loop. `first` is
    slice 0 when the caller has already loaded it (the start-up data checks read it).
    """

    def __init__(self, paths: Sequence[str], slice_every: int, load: Callable[[str], dict], first: dict | None = None):
        if slice_every < 1:
            raise ValueError(f"slice_every={slice_every} must be >= 1")
        if not paths:
            raise ValueError("no slices to rotate through")
        self.paths = list(paths)
        self.slice_every = slice_every
        self._load = load
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slice-loader")
        self._current: tuple[int, dict] | None = None if first is None else (0, first)
        self._next: tuple[int, Future] | None = None

    def index(self, step: int) -> int:
        """The slice that update step `step` (0-based: the number of updates done before it) trains on."""
        return (step // self.slice_every) % len(self.paths)

    def dataset(self, step: int) -> dict:
        """The slice for the chunk of steps from `step`, which must not cross a slice boundary (slice_every is
        a multiple of the chunk length). Waits only when the next slice has not finished loading."""
        index = self.index(step)
        if self._current is None or self._current[0] != index:
            self._current = None  # Released before another slice is taken: at most two alive.
            pending, self._next = self._next, None
            if pending is not None and pending[0] == index:
                self._current = (index, pending[1].result())  # Re-raises a failed load's error here.
            else:  # The first call, or a jump (a resumed run): load it now, after any other pending load ends.
                if pending is not None and not pending[1].cancel():
                    pending[1].exception()  # Waits for it to end; its slice (or its error) is not needed.
                del pending
                self._current = (index, self._load_ready(self.paths[index]))
        following = (index + 1) % len(self.paths)
        if self._next is None and following != index:
            self._next = (following, self._executor.submit(self._load_ready, self.paths[following]))
        return self._current[1]

    def _load_ready(self, path: str) -> dict:
        # Wait for the host-to-device copy here, on the loading thread, not at the slice's first use.
        return jax.block_until_ready(self._load(path))

    def close(self) -> None:
        """Stops loading ahead (a load already running finishes first) and releases both slices."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._current = self._next = None
