"""The optional W&B logger, against a fake `wandb` module: wandb is not a dependency of the project."""

import sys
import types

import pytest

import configs
from runner.wandb_logger import ScalarWriters, WandbOptions, WandbWriter, check_mode, import_wandb


class FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, data, step):
        self.logged.append((step, dict(data)))

    def finish(self):
        self.finished = True


def fake_wandb(version="0.21.0"):
    module = types.ModuleType("wandb")
    module.__version__ = version
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    return module


def test_scalars_of_a_step_go_to_wandb_in_one_log_call(tmp_path):
    wandb = fake_wandb()
    options = WandbOptions(project="p", entity="team", mode="offline", group="g")
    writer = WandbWriter(wandb, options, str(tmp_path), "cube/seed0", {"seed": 0})
    writer.add_scalar("train/loss", 1.5, 2)
    writer.add_scalar("val/loss", 2, 2)
    writer.add_scalar("train/loss", 0.5, 4)
    run = wandb.runs[0]
    assert run.logged == [(2, {"train/loss": 1.5, "val/loss": 2.0})]  # step 4 is still open
    writer.close()
    assert run.logged[-1] == (4, {"train/loss": 0.5}) and run.finished
    kwargs = run.init_kwargs
    assert (kwargs["project"], kwargs["entity"], kwargs["mode"], kwargs["group"]) == ("p", "team", "offline", "g")
    assert kwargs["name"] == "cube/seed0" and kwargs["config"] == {"seed": 0} and kwargs["dir"] == str(tmp_path)
    # Several seeds' runs stay open together; a rerun (resume) continues the same W&B run.
    assert kwargs["reinit"] == "create_new" and kwargs["resume"] == "allow"
    WandbWriter(wandb, options, str(tmp_path), "cube/seed0", {"seed": 0})
    assert wandb.runs[1].init_kwargs["id"] == kwargs["id"] == (tmp_path / "wandb_id").read_text().strip()
    other = tmp_path / "other"
    other.mkdir()
    WandbWriter(wandb, options, str(other), "cube/seed1", {"seed": 1})
    assert wandb.runs[2].init_kwargs["id"] != kwargs["id"]


def test_scalar_writers_fan_out_and_close_all():
    class Recorder:
        def __init__(self):
            self.calls = []

        def add_scalar(self, *args):
            self.calls.append(args)

        def close(self):
            self.calls.append("closed")

    a, b = Recorder(), Recorder()
    writers = ScalarWriters([a, b])
    writers.add_scalar("eval/success", 0.5, 10)
    writers.close()
    assert a.calls == b.calls == [("eval/success", 0.5, 10), "closed"]


def test_scalar_writers_close_the_others_when_one_cannot_close():
    """TensorBoard's file on a full disk fails to close: the W&B run beside it is finished all the same, and the
    first failure is raised."""
    import errno

    closed = []

    class Writer:
        def __init__(self, name, error=None):
            self.name, self.error = name, error

        def close(self):
            closed.append(self.name)
            if self.error:
                raise self.error

    full = OSError(errno.ENOSPC, "No space left on device")
    writers = ScalarWriters([Writer("tensorboard", full), Writer("wandb"), Writer("other", ValueError("second"))])
    with pytest.raises(OSError) as error:
        writers.close()
    assert error.value is full
    assert closed == ["tensorboard", "wandb", "other"]


def test_missing_or_old_wandb_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    with pytest.raises(configs.ConfigError, match=r"pip install wandb"):
        import_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb("0.19.9"))
    with pytest.raises(configs.ConfigError, match=r"wandb >= 0.19.10 \(found 0.19.9\)"):
        import_wandb()
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb("0.19.10rc1"))
    assert import_wandb().__version__ == "0.19.10rc1"


def test_wandb_mode_is_checked():
    check_mode(None)
    check_mode("offline")
    with pytest.raises(configs.ConfigError, match="'ofline' is not one of online, offline, disabled"):
        check_mode("ofline")
