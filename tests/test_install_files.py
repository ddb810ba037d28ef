"""The accelerator requirement files install the JAX version the CPU set pins (and the suite was run with)."""

import os
import re
from importlib import metadata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pins(name: str) -> dict:
    """{package (with its extra, if any): version} of the `==` pins of one requirements file, and its `-r` files."""
    found = {}
    with open(os.path.join(ROOT, name)) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r "):
                found.update(pins(line[3:].strip()))
            elif "==" in line:
                package, version = line.split("==")
                found[package.strip().lower()] = version.strip()
    return found


@pytest.mark.parametrize("name, extra", [("requirements-cuda12.txt", "cuda12"), ("requirements-tpu.txt", "tpu")])
def test_accelerator_files_pin_the_cpu_jax_version(name, extra):
    cpu, accelerator = pins("requirements.txt"), pins(name)
    assert accelerator[f"jax[{extra}]"] == cpu["jax"] == cpu["jaxlib"]
    assert {k: v for k, v in accelerator.items() if "[" not in k} == cpu  # The rest of the set is the CPU one.
    # The installed jax (the CPU pin) offers that extra and ties it to its own version.
    assert metadata.version("jax") == cpu["jax"]
    required = [r for r in metadata.requires("jax") if re.search(rf"extra == \"{extra}\"", r)]
    assert any(f"jaxlib<={cpu['jax']},>={cpu['jax']}" in r.replace(" ", "") for r in required), required
