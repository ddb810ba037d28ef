"""The pure pieces of `python -m bench.parity`: parameter transplant, verdicts, the table and its document.

Kept apart from bench/parity.py (which runs both codes) so that tests/test_parity.py checks them without an official
checkout.
"""

import re
from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------------------------------
# Parameter transplant: the official networks' parameter trees mapped onto ours by layer name and order.
# ---------------------------------------------------------------------------------------------------------------


def _numbered(tree: dict, kind: str) -> list:
    """The subtrees `kind_0, kind_1, ...` of `tree` in numeric order (Dense_10 after Dense_9)."""
    names = [n for n in tree if re.fullmatch(rf"{kind}_\d+", n)]
    return [tree[n] for n in sorted(names, key=lambda n: int(n.split("_")[1]))]


def official_layers(tree: dict) -> tuple[list, list]:
    """(Dense layers, LayerNorms) of an official MLP-based network in forward order.

    Official networks (BASELINES.md §1.6) hold their MLP as `value_net` (Value, ensemble axis first when present), or
    as `MLP_0` followed by a separate output `Dense_0` (ActorFlowField: the trunk's Dense layers, then the output).
    """
    if "value_net" in tree:
        mlp = tree["value_net"]
        return _numbered(mlp, "Dense"), _numbered(mlp, "LayerNorm")
    if "MLP_0" in tree:
        mlp = tree["MLP_0"]
        return _numbered(mlp, "Dense") + _numbered(tree, "Dense"), _numbered(mlp, "LayerNorm")
    raise ValueError(f"not an official MLP network: top-level names {sorted(tree)}")


def our_mlp(dense: list, layer_norms: list) -> dict:
    """networks.mlp.MLP's parameter tree: Dense_0..Dense_n (the last is the output), LayerNorm_i after hidden i."""
    return {
        **{f"Dense_{i}": dict(layer) for i, layer in enumerate(dense)},
        **{f"LayerNorm_{i}": dict(norm) for i, norm in enumerate(layer_norms)},
    }


def transplant(official: dict, template: dict) -> dict:
    """Our parameters `{'params': ...}` of the shapes of `template`, holding the official network's values.

    `template` is our freshly initialised network: either an MLP itself (`{'params': {'Dense_0': ...}}`) or a module
    with one MLP submodule (VelocityField's `MLP_0`, Critic's vmapped MLP) beside which other submodules (CFGRL's
    label embedding `Embed_0`) take the official submodule of the same name. Raises ValueError naming the first leaf
    whose path or shape differs, so that a mapping error never passes silently.
    """
    mlp = our_mlp(*official_layers(official))
    inner = template["params"]
    if any(name.startswith("Dense_") for name in inner):
        mapped = {"params": mlp}
    else:
        trunks = [name for name in inner if "MLP" in name]
        if len(trunks) != 1:
            raise ValueError(f"expected one MLP submodule in our parameters, got {sorted(inner)}")
        others = {name: official[name] for name in inner if name not in trunks and name in official}
        mapped = {"params": {trunks[0]: mlp, **others}}
    check_same_layout(mapped, template)
    return mapped


def transplant_by_name(official: dict, template: dict) -> dict:
    """Our parameters of the shapes of `template` taken from the official tree at the same paths, a 2-D leaf
    transposed where only its transpose fits (the DDPM noise predictor: the same module names on both sides, its
    Fourier kernel stored [F/2, 1] there and [1, F/2] here)."""
    theirs = leaves(official)
    mapped = {}
    for path, leaf in leaves(template).items():
        inner = path.split("/", 1)[1]
        if inner not in theirs:
            raise ValueError(f"transplant: the official network has no {inner}")
        value = np.asarray(theirs[inner])
        if value.shape != np.shape(leaf) and value.ndim == 2 and value.T.shape == np.shape(leaf):
            value = value.T
        mapped[path] = value
    tree = unflatten(mapped, "params")
    check_same_layout({"params": tree}, template)
    return {"params": tree}


def leaves(tree: dict, prefix: str = "") -> dict:
    """{'a/b/c': leaf} of a nested dict."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if hasattr(value, "items"):
            out.update(leaves(dict(value), path))
        else:
            out[path] = value
    return out


def check_same_layout(mapped: dict, template: dict) -> None:
    got, want = leaves(mapped), leaves(template)
    if sorted(got) != sorted(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(f"transplant: layers missing {missing[:3]}, unexpected {extra[:3]}")
    for path in want:
        if np.shape(got[path]) != np.shape(want[path]):
            raise ValueError(f"transplant: {path} has shape {np.shape(got[path])}, ours {np.shape(want[path])}")


def unflatten(arrays: dict, prefix: str) -> dict:
    """The nested dict under `prefix/` of a flat {'prefix/a/b': array} mapping (the exchange files' layout)."""
    tree: dict = {}
    for name, value in arrays.items():
        if not name.startswith(prefix + "/"):
            continue
        node = tree
        *path, last = name[len(prefix) + 1 :].split("/")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


# ---------------------------------------------------------------------------------------------------------------
# Rows, verdicts and the table.
# ---------------------------------------------------------------------------------------------------------------

VERDICTS = ("pass", "documented", "fail")


class Row(NamedTuple):
    check: str
    delta: float | None  # max |Δ|; None when there is nothing to compare (an error, or a note)
    tolerance: float | None
    verdict: str
    note: str = ""


def max_abs_difference(ours, official) -> float:
    """max |ours − official| over all entries; inf when the shapes differ or a value is finite on one side only."""
    a, b = np.asarray(ours, np.float64), np.asarray(official, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    finite = np.isfinite(a)
    return float(np.max(np.abs(a[finite] - b[finite]), initial=0.0))


def compare(check: str, ours, official, tolerance: float, documented: str = "") -> Row:
    """A row: `pass` within tolerance; over it `documented` when `documented` names the known difference, else
    `fail`. A documented difference that turns out within tolerance passes (and the note says it did not show)."""
    delta = max_abs_difference(ours, official)
    if delta <= tolerance:
        note = f"documented difference not visible here: {documented}" if documented else ""
        return Row(check, delta, tolerance, "pass", note)
    return Row(check, delta, tolerance, "documented" if documented else "fail", documented)


def failure(check: str, message: str) -> Row:
    return Row(check, None, None, "fail", message)


def overall(rows: list[Row]) -> str:
    """'fail' when any row fails, else 'pass' (documented rows do not fail a run)."""
    return "fail" if any(r.verdict == "fail" for r in rows) else "pass"


def format_delta(delta: float | None) -> str:
    if delta is None:
        return "—"
    if delta == 0:
        return "0"
    return f"{delta:.2g}" if np.isfinite(delta) else "inf"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (check, max |Δ|, tolerance, verdict, note)."""
    lines = ["| check | max \\|Δ\\| | tolerance | verdict | note |", "|---|---|---|---|---|"]
    for r in rows:
        tol = "—" if r.tolerance is None else f"{r.tolerance:g}"
        note = r.note.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.check} | {format_delta(r.delta)} | {tol} | {r.verdict} | {note} |")
    return "\n".join(lines)


def counts(rows: list[Row]) -> str:
    found = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    return ", ".join(f"{n} {v}" for v, n in found.items())
