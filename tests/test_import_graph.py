"""The import graph of docs/DESIGN.md §2: the product (runner/, agents/, guidance/, networks/, envs/) never
imports the launchers (scripts/) or the measurements (bench/), which sit above it."""

import ast
import os

from conftest import ROOT

PRODUCT = ("runner", "agents", "guidance", "networks", "envs")
ABOVE = ("scripts", "bench")


def imported_modules(source: str) -> list[str]:
    """Every absolute module name an `import` or `from ... import` names, at any depth (lazy imports count)."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_imported_modules_finds_lazy_and_from_imports():
    source = "import os\nfrom bench import flops\ndef f():\n    import scripts.table as t\n"
    assert imported_modules(source) == ["os", "bench", "bench.flops", "scripts.table"]


def test_the_product_imports_neither_scripts_nor_bench():
    offending = []
    for package in PRODUCT:
        for directory, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(directory, name)
                with open(path) as f:
                    modules = imported_modules(f.read())
                offending += [f"{os.path.relpath(path, ROOT)} imports {m}" for m in modules if m.split(".")[0] in ABOVE]
    assert not offending, offending
