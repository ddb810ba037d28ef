"""The paper-style table of a grid of runs: `python -m scripts.table --runs=<root> --name=<name>`.

Reads every run dir under `--runs` (a `config.json` with agent, env and seed) and its evaluations
`eval/<estimator>-bo<N>[-gs<L>-a<α>]-reset<R>/eval.csv` (those `scripts.sweep` launches), and writes
`results/<name>.md` (rows = tasks and per-family averages, columns = methods, success in % as mean ±
standard error over seeds) and `results/<name>.png` (the family averages as bars).

A method's guidance weight is chosen per task on the *held-out* episodes (reset seed 1000·seed + 500): the
weight of highest success averaged over seeds (the smaller weight on a tie). The table reports that
weight's success on the *reported* episodes (reset seed 1000·seed), never the best weight of the reported
episodes themselves. A method with one weight needs no held-out episodes.

Beside it, a second table follows the paper's convention, for comparing with the paper like for like: per
seed, the best weight's success on the reported episodes themselves (what the official code logs as
`evaluation/success`), then the mean over seeds. It is labelled optimistic: the weight is chosen on the
episodes it is measured on.
"""

import argparse
import collections
import csv
import json
import os

import numpy as np

from runner.run_dir import EVAL_TAG
from scripts.sweep import METHODS, heldout_reset_seed, method_by_name, reported_reset_seed


def method_name(agent: str, estimator: str, best_of_n: int, grad_steps: int = 0) -> str:
    for name, method in METHODS.items():
        if (method.agent, method.estimator, method.best_of_n, method.grad_step) == (
            agent,
            estimator,
            best_of_n,
            bool(grad_steps),
        ):
            return name
    if (agent, estimator, grad_steps) == ("qgf", "none", 0):
        return f"bfn{best_of_n}"  # Best-of-N of BC samples at an N that METHODS does not list.
    return f"{agent}:{estimator}-bo{best_of_n}" + (f"-gs{grad_steps}" if grad_steps else "")


def method_label(name: str) -> str:
    method = method_by_name(name)
    return method.label if method else name


def has_sweep(name: str) -> bool:
    method = method_by_name(name)
    return method is None or method.sweep


def last_rows(path: str) -> list:
    """The eval.csv rows of the last evaluated step, over all tasks (one per guidance weight)."""
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("task", "all") == "all"]
    if not rows:
        return []
    last = max(int(float(r["step"])) for r in rows)
    return [r for r in rows if int(float(r["step"])) == last]


def read_eval(path: str, column: str = "success") -> tuple[dict, float | None]:
    """{weight: `column`} of the last evaluated step (the all-tasks rows), and the FLOPs per decision."""
    rows = last_rows(path)
    if not rows:
        return {}, None
    flops = rows[0].get("flops_per_decision") or None
    return {float(r["guidance_weight"]): float(r[column]) for r in rows}, None if flops is None else float(flops)


def own_evaluation(directory: str, config: dict):
    """(method, path of eval.csv) of a finished training run's own final evaluation, or None.

    main.py evaluates a training run on reset seeds 1000·seed (the reported ones) with its config's
    estimator and best-of-N; an `--eval_only` evaluation of the same method, when present, replaces it.
    """
    path = os.path.join(directory, "eval.csv")
    agent_config, run = config.get("agent_config", {}), config.get("run", {})
    if not os.path.exists(path) or "estimator" not in agent_config or "train_steps" not in run:
        return None
    with open(path) as f:
        steps = [int(float(r["step"])) for r in csv.DictReader(f)]
    if not steps or max(steps) != run["train_steps"]:
        return None  # Unfinished.
    return own_method(config), path


def own_method(config: dict) -> str:
    """The method a training run evaluates itself with (its config's estimator and best-of-N)."""
    agent_config = config["agent_config"]
    return method_name(
        config["agent"], agent_config["estimator"], int(agent_config["best_of_n"]), agent_config.get("grad_steps", 0)
    )


def evaluations(root: str):
    """Every evaluation the table reads under `root`, as (task, method, seed, role, path of its eval.csv, run dir),
    role "reported" or "heldout": a run's own final evaluation first, then its `--eval_only` ones (which replace
    it where they evaluate the same method on the same episodes)."""
    for directory, _, files in sorted(os.walk(root)):
        if "config.json" not in files or os.path.basename(os.path.dirname(directory)) == "eval":
            continue
        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        if "agent" not in config or "env" not in config:
            continue
        seed = int(config["seed"])
        roles = {reported_reset_seed(seed): "reported", heldout_reset_seed(seed): "heldout"}
        own = own_evaluation(directory, config)
        if own is not None:
            yield config["env"], own[0], seed, "reported", own[1], directory
        evals = os.path.join(directory, "eval")
        for tag in sorted(os.listdir(evals)) if os.path.isdir(evals) else []:
            match, path = EVAL_TAG.match(tag), os.path.join(evals, tag, "eval.csv")
            if not match or int(match["reset"]) not in roles or not os.path.exists(path):
                continue
            grad_steps = int(match["grad_steps"] or 0)
            name = method_name(config["agent"], match["estimator"], int(match["best_of_n"]), grad_steps)
            yield config["env"], name, seed, roles[int(match["reset"])], path, directory


def collect(root: str, column: str = "success") -> dict:
    """{(task, method): {seed: {"reported": {w: value}, "heldout": {w: value}, "flops": x}}}, the values eval.csv's
    `column` (success, or e.g. return)."""
    results = collections.defaultdict(dict)
    for task, name, seed, role, path, _ in evaluations(root):
        values, flops = read_eval(path, column)
        entry = results[(task, name)].setdefault(seed, {})
        entry[role] = values
        if flops is not None:
            entry["flops"] = flops
    return dict(results)


def swept_weights(per_seed: dict) -> list:
    """The positive weights a method's runs evaluated: its grid. w = 0 is BC's row and never chosen for a guided
    method, as the official grid holds positive weights only; a lone w = 0 (a run evaluated at BC only) has none."""
    return sorted(w for w in set().union(*(s.get("reported", {}) for s in per_seed.values())) if w > 0)


def choose_weight(method: str, per_seed: dict) -> float | None:
    """The positive weight of highest held-out success (mean over seeds; the smaller on a tie); 0 for a method
    without a sweep; None when no positive weight was evaluated or no held-out episodes exist."""
    if not has_sweep(method):
        return 0.0
    weights = swept_weights(per_seed)
    if len(weights) <= 1:
        return weights[0] if weights else None
    heldout = [s["heldout"] for s in per_seed.values() if "heldout" in s]
    if not heldout:
        return None
    means = {w: np.mean([h[w] for h in heldout if w in h]) for w in weights if any(w in h for h in heldout)}
    return max(sorted(means), key=lambda w: means[w]) if means else None


def per_seed_best(method: str, per_seed: dict) -> list:
    """The paper's convention (optimistic): each seed's highest success over weights on its reported episodes."""
    if not has_sweep(method):
        return [s["reported"][0.0] for s in per_seed.values() if 0.0 in s.get("reported", {})]
    positive = [[v for w, v in s.get("reported", {}).items() if w > 0] for s in per_seed.values()]
    return [max(values) for values in positive if values]


def mean_and_stderr(values: list, scale: float = 100) -> tuple:
    """(mean, standard error over seeds) of `scale` × values (in % by default), (None, 0) without values."""
    values = [scale * v for v in values]
    mean = float(np.mean(values)) if values else None
    return mean, float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def summarize(results: dict, scale: float = 100) -> dict:
    """{(task, method): {"weight", "mean", "stderr", "seeds", "flops", "paper": {"mean", "stderr", "seeds"}}} of
    `scale` × collect's values (success in % by default): at the held-out weight, and under "paper" by the paper's
    convention (`per_seed_best`)."""
    cells = {}
    for key, per_seed in results.items():
        weight = choose_weight(key[1], per_seed)
        values = [s["reported"][weight] for s in per_seed.values() if weight in s.get("reported", {})]
        best = per_seed_best(key[1], per_seed)
        flops = [s["flops"] for s in per_seed.values() if "flops" in s]
        mean, stderr = mean_and_stderr(values, scale)
        paper_mean, paper_stderr = mean_and_stderr(best, scale)
        cells[key] = {
            "weight": weight,
            "mean": mean,
            "stderr": stderr,
            "seeds": len(values),
            "flops": float(np.mean(flops)) if flops else None,
            "paper": {"mean": paper_mean, "stderr": paper_stderr, "seeds": len(best)},
        }
    return cells


def family_of(task: str) -> str:
    import envs

    try:
        return envs.parse_name(task).family
    except ValueError:
        return task


def ordered_methods(cells: dict) -> list:
    present = {method for _, method in cells}
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def family_averages(cells: dict, tasks: list, methods: list) -> dict:
    """{family: {method: (mean, stderr)}}: the mean over the family's tasks, s.e. combined as independent.
    `cells` maps (task, method) to {"mean", "stderr"} (summarize's cells, or their "paper" entries)."""
    families = collections.defaultdict(list)
    for task in tasks:
        families[family_of(task)].append(task)
    averages = {}
    for family, members in families.items():
        averages[family] = {}
        for method in methods:
            found = [
                cells[(t, method)] for t in members if (t, method) in cells and cells[(t, method)]["mean"] is not None
            ]
            if len(found) == len(members):
                mean = float(np.mean([c["mean"] for c in found]))
                stderr = float(np.sqrt(np.sum([c["stderr"] ** 2 for c in found])) / len(found))
                averages[family][method] = (mean, stderr)
    return averages


def format_cell(mean, stderr) -> str:
    return "—" if mean is None else f"{mean:.1f} ± {stderr:.1f}"


def success_rows(cells: dict, tasks: list, methods: list) -> list:
    """Markdown rows of success per task, and per family the average, from {(task, method): {"mean", "stderr"}}."""
    averages = family_averages(cells, tasks, methods)
    lines = []
    for family in dict.fromkeys(family_of(t) for t in tasks):
        for task in [t for t in tasks if family_of(t) == family]:
            row = [
                format_cell(cells[(task, m)]["mean"], cells[(task, m)]["stderr"]) if (task, m) in cells else "—"
                for m in methods
            ]
            lines.append(f"| {task} | " + " | ".join(row) + " |")
        row = [format_cell(*averages[family][m]) if m in averages[family] else "—" for m in methods]
        lines.append(f"| **{family} (average)** | " + " | ".join(f"**{c}**" for c in row) + " |")
    return lines


def training_data(root: str) -> dict:
    """{task: sorted descriptions of the data its training runs trained on}: each run's data.json (what it loaded,
    runner.session), else its config.json's dataset (what it was to train on); runs older than both are left out."""
    found = collections.defaultdict(set)
    for directory, _, files in os.walk(root):
        if "config.json" not in files or os.path.basename(os.path.dirname(directory)) == "eval":
            continue
        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        dataset = config.get("dataset") if isinstance(config, dict) else None
        if "data.json" in files:
            with open(os.path.join(directory, "data.json")) as f:
                dataset = json.load(f)
        if dataset and "kind" in dataset and "env" in config:
            count = dataset.get("transitions") or dataset.get("expected_transitions")
            transitions = f", {count:,} transitions" if count else ""
            found[config["env"]].add(f"{dataset['kind']}{transitions} (`{dataset['path']}`)")
    return {task: sorted(kinds) for task, kinds in found.items()}


def format_markdown(name: str, cells: dict, data: dict | None = None) -> str:
    tasks = sorted({task for task, _ in cells}, key=lambda t: (family_of(t), t))
    methods = ordered_methods(cells)
    seeds = sorted({c["seeds"] for c in cells.values()})
    paper = {key: cell["paper"] for key, cell in cells.items()}
    paper_seeds = sorted({c["seeds"] for c in paper.values()})
    header = "| task | " + " | ".join(method_label(m) for m in methods) + " |"
    rule = "|---" * (len(methods) + 1) + "|"
    lines = [
        f"# {name}",
        "",
        f"Success rate (%) per task, mean ± standard error over seeds (seeds per cell: {'/'.join(map(str, seeds))}), "
        "and per task family the average over its tasks. Methods with a guidance-weight sweep are reported at "
        "the weight chosen on held-out evaluation episodes (reset seeds 1000·seed + 500), measured on separate "
        "episodes (reset seeds 1000·seed); the weight is never chosen on the episodes reported.",
        "",
        header,
        rule,
        *success_rows(cells, tasks, methods),
        "",
        "## The paper's convention (optimistic)",
        "",
        "For comparison with the paper like for like: per seed, the success of the best guidance weight on the "
        "reported episodes themselves (what the official code logs as `evaluation/success`), then mean ± standard "
        f"error over seeds (seeds per cell: {'/'.join(map(str, paper_seeds))}). The weight is chosen on the episodes "
        "it is measured on, so these numbers overstate success; the table above is the one to quote.",
        "",
        header,
        rule,
        *success_rows(paper, tasks, methods),
    ]

    lines += ["", "## Guidance weight chosen on held-out episodes", "", header, rule]
    for task in tasks:
        row = []
        for m in methods:
            weight = cells[(task, m)]["weight"] if (task, m) in cells else None
            row.append("—" if weight is None else f"{weight:g}")
        lines.append(f"| {task} | " + " | ".join(row) + " |")

    lines += [
        "",
        "## Compute",
        "",
        "FLOPs per decision (one action chunk for one environment; XLA's cost analysis of the compiled "
        "policy), averaged over the runs.",
        "",
        "| method | FLOPs per decision |",
        "|---|---|",
    ]
    for m in methods:
        flops = [cells[(t, m)]["flops"] for t in tasks if (t, m) in cells and cells[(t, m)]["flops"] is not None]
        lines.append(f"| {method_label(m)} | {np.mean(flops):.3g} |" if flops else f"| {method_label(m)} | — |")
    if data:
        lines += ["", "## Training data", ""]
        lines += [f"- {task}: {'; '.join(data[task])}" for task in tasks if task in data]
    return "\n".join(lines) + "\n"


def plot(path: str, name: str, cells: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({task for task, _ in cells}, key=lambda t: (family_of(t), t))
    methods = ordered_methods(cells)
    averages = family_averages(cells, tasks, methods)
    families = list(averages)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(families) * max(len(methods), 1) * 0.35 + 2), 3.4))
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(families))]
        values = [averages[f].get(method, (np.nan, 0.0)) for f in families]
        ax.bar(xs, [v[0] for v in values], width, yerr=[v[1] for v in values], capsize=2, label=method_label(method))
    ax.set_xticks(range(len(families)), families)
    ax.set_ylabel("success (%), ± standard error")
    ax.set_ylim(0, 100)
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7, ncol=min(len(methods), 4))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_table(runs: str, name: str, out_dir: str = "results") -> str:
    cells = summarize(collect(runs))
    if not cells:
        raise SystemExit(f"no evaluations found under {runs}")
    os.makedirs(out_dir, exist_ok=True)
    markdown = format_markdown(name, cells, training_data(runs))
    path = os.path.join(out_dir, f"{name}.md")
    with open(path, "w") as f:
        f.write(markdown)
    plot(os.path.join(out_dir, f"{name}.png"), name, cells)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="root of the run dirs (scripts.sweep's --root)")
    parser.add_argument("--name", required=True, help="the table's name: results/<name>.md and .png")
    parser.add_argument("--out_dir", default="results")
    args = parser.parse_args(argv)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise SystemExit(f"error: --out_dir={args.out_dir} is a file, not a directory; choose another --out_dir")
    path = write_table(args.runs, args.name, args.out_dir)
    print(open(path).read())
    print(f"Wrote {path} and {os.path.splitext(path)[0]}.png")


if __name__ == "__main__":
    main()
