"""OGBench's official dataset files, fetched with OGBench's own downloader (`ogbench.utils.download_datasets`).

OGBench's server holds `<dataset>.npz` and `<dataset>-val.npz` (e.g. `cube-double-play-v0`), and each
100M-transition dataset as a directory `<family>-<type>-100m-v0/` of `SLICES_PER_100M` slices
`<family>-<type>-v0-000.npz` ... `-099.npz`, each with its `-NNN-val.npz`. The downloader writes a file
as `<file>.tmp` and renames it when complete, and skips files already present, so an interrupted download
resumes file by file.

The base URL is OGBench's `ogbench.utils.DATASET_URL`, which its downloader reads at call time; the
environment variable `OGBENCH_DATASET_URL` replaces it for the call (a mirror, e.g. on a cluster without
internet access). The downloader opens its URLs without a timeout, so an unreachable or stalled server
would hang it: during a download every socket operation here (connect, each read) gives up after
`timeout` seconds (`socket.setdefaulttimeout`, restored afterwards).
"""

import contextlib
import glob
import http.client
import os
import re
import socket
import traceback
import urllib.error
import zipfile

DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: a dead or stalled server fails in seconds, not hours
SLICES_PER_100M = 100  # slices 000..099 of every OGBench 100M-transition dataset
URL_VARIABLE = "OGBENCH_DATASET_URL"
_100M_DIRECTORY = re.compile(r"^(?P<stem>[a-z0-9x-]+-(?:play|noisy))-100m-(?P<version>v\d+)$")


class DownloadError(OSError):
    """A dataset file could not be downloaded; the message names the file, the URL and why. `file` is the
    file's name (`<name>.npz` or `<name>-val.npz`)."""

    def __init__(self, message: str, file: str):
        super().__init__(message)
        self.file = file


def base_url() -> str:
    """Where the files come from: $OGBENCH_DATASET_URL, else OGBench's own URL."""
    import ogbench.utils

    return os.environ.get(URL_VARIABLE) or ogbench.utils.DATASET_URL


def slice_names(directory: str, count: int | None = None) -> list[str] | None:
    """OGBench's names (`<family>-<type>-100m-v0/<family>-<type>-v0-NNN`) of the slices of a 100M directory,
    or None when the directory's name is not OGBench's `<family>-<type>-100m-v0`."""
    name = os.path.basename(os.path.normpath(directory))
    match = _100M_DIRECTORY.match(name)
    if match is None:
        return None
    count = SLICES_PER_100M if count is None else count
    return [f"{name}/{match['stem']}-{match['version']}-{i:03d}" for i in range(count)]


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


@contextlib.contextmanager
def _base_url(url: str):
    import ogbench.utils

    previous = ogbench.utils.DATASET_URL
    ogbench.utils.DATASET_URL = url
    try:
        yield
    finally:
        ogbench.utils.DATASET_URL = previous


class _DeferredRenames:
    """Stands in for the `os` module inside OGBench's downloader: its rename of a completed `<file>.tmp` to the
    file's name is only recorded, so that the file can be checked first (`finish`), once the downloader has
    closed it (it renames a file before closing it)."""

    def __init__(self):
        self.renames = []

    def rename(self, src: str, dst: str) -> None:
        self.renames.append((src, dst))

    def __getattr__(self, name):
        return getattr(os, name)

    def finish(self, url: str) -> None:
        """Renames each downloaded file that is an .npz archive to its name; raises DownloadError for one that is
        not (an HTTP error page sent with status 200, or a body cut short: the downloader takes whatever arrives),
        which is removed."""
        renames, self.renames = self.renames, []
        for src, dst in renames:
            if not zipfile.is_zipfile(src):
                size = os.path.getsize(src)
                os.remove(src)
                file = os.path.basename(dst)
                raise DownloadError(
                    f"cannot download {file} from {url} (the server sent {size} bytes that are not an .npz archive: "
                    "an error page, or a connection cut short)",
                    file,
                )
            os.replace(src, dst)


@contextlib.contextmanager
def _checked_renames():
    import ogbench.utils

    previous = ogbench.utils.os
    ogbench.utils.os = deferred = _DeferredRenames()
    try:
        yield deferred
    finally:
        ogbench.utils.os = previous


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def download(names: list[str], directory: str, timeout: float | None = None) -> None:
    """`<name>.npz` and `<name>-val.npz` of every name into `directory` (a name may hold a subdirectory, as
    100M slices do), skipping files already there; `timeout` (default DOWNLOAD_TIMEOUT_S) bounds each socket
    operation. Raises DownloadError naming the file that failed."""
    import ogbench.utils

    directory = os.path.expanduser(directory)
    timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
    url = base_url()
    for name in names:
        os.makedirs(os.path.dirname(os.path.join(directory, name)) or directory, exist_ok=True)
        try:
            with _socket_timeout(timeout), _base_url(url), _checked_renames() as downloaded:
                try:
                    ogbench.utils.download_datasets([name], directory)
                except BaseException as error:
                    # OGBench's downloader renames a file before closing it (its tqdm wrapper leaves the file
                    # open), so the last bytes of a file it completed stay buffered for as long as its frame lives,
                    # which this error's traceback would prolong: closing it now writes them.
                    traceback.clear_frames(error.__traceback__)
                    downloaded.finish(url)  # a file completed before the failure is kept
                    raise
                downloaded.finish(url)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            for partial in glob.glob(os.path.join(directory, f"{name}*.npz.tmp")):
                os.remove(partial)  # A failed file restarts from scratch; its partial copy is useless.
            if isinstance(error, DownloadError):  # not an archive (_DeferredRenames.finish)
                raise
            # OGBench's downloader fetches the pair in order and skips files present: the failed one is the
            # first still missing.
            pair = (f"{name}.npz", f"{name}-val.npz")
            file = next((f for f in pair if not os.path.exists(os.path.join(directory, f))), pair[0])
            raise DownloadError(f"cannot download {file} from {url} ({_reason(error)})", file) from error
