"""Where a run's dataset files come from (--data): OGBench's downloader against a local HTTP server on
127.0.0.1 serving generated files (never the internet), generation when the download fails, 100M slice
directories, and a silent server that must fail in seconds."""

import contextlib
import functools
import http.server
import os
import shutil
import socket
import threading
import time

import ogbench.utils
import pytest
from conftest import TINY_TASK

import configs
import envs
import envs.download
from runner.config import Options, resolve
from runner.run_data import _official_names, obtain_missing_files

NAME = "cube-single-play-v0"  # TINY_TASK's dataset


@contextlib.contextmanager
def serving_with(handler):
    """An HTTP server on 127.0.0.1 answering with `handler`; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def serving(directory):
    """An HTTP server on 127.0.0.1 serving `directory`; yields its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    return serving_with(handler)


def run_config(dataset_dir, dataset_path=None):
    run = configs.get_run_config("demo")
    run.update(dataset_dir=str(dataset_dir), dataset_path=dataset_path, dataset_episodes=2, dataset_episode_steps=30)
    return run


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_download_fetches_both_files_with_ogbenchs_downloader(tiny_dataset_dir, tmp_path, monkeypatch):
    served = tmp_path / "server"
    served.mkdir()
    for suffix in (".npz", "-val.npz"):
        shutil.copy(os.path.join(tiny_dataset_dir, NAME + suffix), served)
    target = tmp_path / "data"
    monkeypatch.delenv(envs.download.URL_VARIABLE, raising=False)
    with serving(served) as url:
        monkeypatch.setattr(ogbench.utils, "DATASET_URL", url)  # read by OGBench's downloader at call time
        obtain_missing_files(TINY_TASK, run_config(target), str(target), "download", progress=False)
    for suffix in (".npz", "-val.npz"):
        assert read(target / (NAME + suffix)) == read(served / (NAME + suffix))
    assert sorted(os.listdir(target)) == [NAME + "-val.npz", NAME + ".npz"]  # no .tmp left behind
    assert ogbench.utils.DATASET_URL == url  # the test's own setting, untouched by the download


def test_auto_generates_when_the_server_lacks_the_file_and_says_it_is_not_official(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    target = tmp_path / "data"
    with serving(tmp_path / "empty") as url:
        monkeypatch.setenv(envs.download.URL_VARIABLE, url)
        with pytest.raises(envs.DatasetMissingError, match=f"cannot download {NAME}.npz from {url} .HTTP 404"):
            obtain_missing_files(TINY_TASK, run_config(target), str(target), "download", progress=False)
        obtain_missing_files(TINY_TASK, run_config(target), str(target), "auto", progress=False)
    printed = capsys.readouterr().out
    assert "HTTP 404" in printed and "not directly comparable" in printed
    assert os.path.exists(target / f"{NAME}.npz") and os.path.exists(target / f"{NAME}-val.npz")


@pytest.mark.parametrize("served", [[], [".npz"]], ids=["training-file-copied", "flaky-server"])
def test_a_present_training_file_is_kept_when_its_val_file_cannot_be_downloaded(
    tiny_dataset_dir, tmp_path, monkeypatch, served
):
    """Only the training file is present (copied alone, or delivered by a server that then fails on `-val.npz`):
    every --data source names the -val file and leaves the training file as it is (the downloaded one complete,
    not held in a buffer by the failed download), with nothing generated."""
    server = tmp_path / "server"
    server.mkdir()
    for suffix in served:
        shutil.copy(os.path.join(tiny_dataset_dir, NAME + suffix), server)
    official = read(os.path.join(tiny_dataset_dir, NAME + ".npz"))
    with serving(server) as url:
        monkeypatch.setenv(envs.download.URL_VARIABLE, url)
        for data in ("auto", "download") if served else ("auto", "download", "generate"):
            target = tmp_path / data
            target.mkdir()
            if not served:
                shutil.copy(os.path.join(tiny_dataset_dir, NAME + ".npz"), target)
            with pytest.raises(envs.DatasetMissingError) as error:
                obtain_missing_files(TINY_TASK, run_config(target), str(target), data, progress=False)
            message = str(error.value)
            if data != "generate":
                assert message.startswith(f"cannot download {NAME}-val.npz from {url} (HTTP 404"), message
            assert f"{target / NAME}.npz, present, is kept" in message and f"OGBench's {NAME}-val.npz" in message
            assert "\n" not in message
            print(message)
            assert os.listdir(target) == [NAME + ".npz"], data  # nothing generated or left behind
            assert read(target / (NAME + ".npz")) == official, data  # a downloaded file complete at once


def test_a_silent_server_fails_in_about_the_timeout(tmp_path, monkeypatch):
    listener = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    monkeypatch.setenv(envs.download.URL_VARIABLE, f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setattr(envs.download, "DOWNLOAD_TIMEOUT_S", 0.5)
    start = time.perf_counter()
    with pytest.raises(envs.DatasetMissingError, match="timed out.*OGBENCH_DATASET_URL.*--data=generate"):
        obtain_missing_files(TINY_TASK, run_config(tmp_path), str(tmp_path), "download", progress=False)
    assert time.perf_counter() - start < 5
    listener.close()


def test_local_and_present_files_never_download(tiny_dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(envs.download.URL_VARIABLE, "http://127.0.0.1:9")  # would refuse: nothing may try it
    obtain_missing_files(TINY_TASK, run_config(tmp_path), str(tmp_path), "local", progress=False)
    obtain_missing_files(TINY_TASK, run_config(tiny_dataset_dir), tiny_dataset_dir, "download", progress=False)
    assert os.listdir(tmp_path) == []


def test_a_100m_slice_directory_downloads_every_slice_and_download_completes_a_partial_one(
    tiny_dataset_dir, tmp_path, monkeypatch, capsys
):
    served = tmp_path / "server" / "cube-single-play-100m-v0"
    served.mkdir(parents=True)
    for i in range(2):
        for suffix in (".npz", "-val.npz"):
            shutil.copy(os.path.join(tiny_dataset_dir, NAME + suffix), served / f"{NAME}-{i:03d}{suffix}")
    slices = tmp_path / "data" / "cube-single-play-100m-v0"
    run = run_config(tmp_path / "unused", dataset_path=str(slices))
    monkeypatch.setattr(envs.download, "SLICES_PER_100M", 2)
    with serving(tmp_path / "server") as url:
        monkeypatch.setenv(envs.download.URL_VARIABLE, url)
        obtain_missing_files(TINY_TASK, run, str(tmp_path / "unused"), "auto", progress=False)
        assert sorted(os.listdir(slices)) == sorted(os.listdir(served))
        os.remove(slices / f"{NAME}-001.npz")
        obtain_missing_files(TINY_TASK, run, str(tmp_path / "unused"), "auto", progress=False)
        assert "holds 1 of OGBench's 2 slices" in capsys.readouterr().out
        assert not os.path.exists(slices / f"{NAME}-001.npz")
        obtain_missing_files(TINY_TASK, run, str(tmp_path / "unused"), "download", progress=False)
    assert read(slices / f"{NAME}-001.npz") == read(served / f"{NAME}-001.npz")
    assert not os.path.exists(tmp_path / "unused")  # slices never generate a dataset


def test_official_names_of_dataset_paths():
    assert _official_names("/d/cube-double-play-v0.npz") == (["cube-double-play-v0"], "/d")
    assert _official_names("/d/cube-triple-play-100m-v0/cube-triple-play-v0-007.npz") == (
        ["cube-triple-play-100m-v0/cube-triple-play-v0-007"],
        "/d",
    )
    names, directory = _official_names("/d/puzzle-4x4-play-100m-v0/")
    assert directory == "/d" and len(names) == envs.download.SLICES_PER_100M == 100
    assert names[0] == "puzzle-4x4-play-100m-v0/puzzle-4x4-play-v0-000" and names[-1].endswith("-v0-099")
    assert _official_names("/d/my-data.npz") == (None, None)
    assert _official_names("/d/my-slices") == (None, None)


def test_an_unknown_data_source_is_a_config_error():
    with pytest.raises(configs.ConfigError, match="unknown --data='dowload' .did you mean 'download'"):
        resolve(Options(data="dowload"))


def serving_bytes(body: bytes, length: int):
    """An HTTP server on 127.0.0.1 that answers every GET with status 200, a Content-Length of `length` and `body`
    (fewer bytes: the connection is cut short)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        def log_message(self, *args):
            pass

    return serving_with(Handler)


@pytest.mark.parametrize("answer", ["error-page", "cut-short"])
def test_what_is_not_an_npz_archive_is_never_saved_under_the_files_name(
    tiny_dataset_dir, tmp_path, monkeypatch, answer
):
    """An HTTP 200 error page, or a body cut short (Content-Length 10x what arrives), is named as a failed download
    and nothing is left under OGBench's file name."""
    official = read(os.path.join(tiny_dataset_dir, NAME + ".npz"))
    body, length = (b"<html>Quota exceeded</html>", 27) if answer == "error-page" else (official[:2048], len(official))
    target = tmp_path / "data"
    with serving_bytes(body, length) as url:
        monkeypatch.setenv(envs.download.URL_VARIABLE, url)
        with pytest.raises(envs.DatasetMissingError) as error:
            obtain_missing_files(TINY_TASK, run_config(target), str(target), "download", progress=False)
    message = str(error.value)
    sent = f"cannot download {NAME}.npz from {url} (the server sent {len(body)} bytes that are not an .npz archive"
    assert message.startswith(sent), message
    print(message)
    assert os.listdir(target) == []


def test_download_completes_a_slice_directory_that_lacks_only_a_val_file(tiny_dataset_dir, tmp_path, monkeypatch):
    """`--data=download` on a 100M slice directory missing one `-val.npz`: that file is fetched, or named."""
    slices = tmp_path / "cube-single-play-100m-v0"
    slices.mkdir()
    for name in (f"{NAME}-000.npz", f"{NAME}-000-val.npz", f"{NAME}-001.npz"):
        shutil.copy(os.path.join(tiny_dataset_dir, NAME + ".npz"), slices / name)
    (tmp_path / "empty").mkdir()
    run = run_config(tmp_path / "unused", dataset_path=str(slices))
    monkeypatch.setattr(envs.download, "SLICES_PER_100M", 2)
    obtain_missing_files(TINY_TASK, run, str(tmp_path / "unused"), "auto", progress=False)  # trains on them
    with serving(tmp_path / "empty") as url:
        monkeypatch.setenv(envs.download.URL_VARIABLE, url)
        with pytest.raises(
            envs.DatasetMissingError, match=f"^cannot download {slices.name}/{NAME}-001-val.npz from {url} .HTTP 404"
        ):
            obtain_missing_files(TINY_TASK, run, str(tmp_path / "unused"), "download", progress=False)
