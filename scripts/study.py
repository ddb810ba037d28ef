"""The study's results document (issue 18): `python -m scripts.study --runs=runs/study --out=docs`; its part 2
(docs/study.md, OGBench's data size): `python -m scripts.study --preset=study-1000ep` (into docs/study-1000ep/).

Reads whatever the study (`python -m scripts.sweep --preset=study --tasks=<task> --seeds=<s>`) has left under
`--runs` for the seeds `--seeds` names (default 0, 1, 2; other seeds' run dirs are left out) and writes

- `<out>/study.csv`: one row per task, method, seed, guidance weight and episode set (held-out or reported):
  success and its standard error over episodes, mean return and its standard error, episodes, FLOPs per decision
  and the evaluation's wall time (from the run dir's step_times.csv; unknown for a training run's own final
  evaluation, which is timed with its training);
- the generated part of `<out>/study.md`, between the markers BEGIN and END below (the file is created with a
  title and the markers when missing; everything outside the markers is kept byte for byte): finished and
  missing cells, success and return per task and method at the weight chosen on held-out episodes beside the
  paper's optimistic per-seed best (scripts.table's choice), paired differences of QGF against every other method
  on the same reset seeds (episodes.csv), successes counted over every weight and both episode sets (and, on a
  puzzle, the episodes that left it untouched), the evaluations of runs evaluated at several steps, FLOPs per
  decision, the critics' validation losses, wall times and the commands; its figures go to `<out>/study/`.
"""

import argparse
import csv
import glob
import json
import math
import os
import re

import numpy as np

import configs
import envs
from runner.report import weight_label
from scripts import sweep, table

# The study's cells (issue 18): one task per family, three seeds.
STUDY_TASKS = (
    "cube-single-play-singletask-task2-v0",
    "cube-double-play-singletask-task2-v0",
    "scene-play-singletask-task1-v0",
    "puzzle-3x3-play-singletask-task2-v0",
)
STUDY_SEEDS = (0, 1, 2)
# Part 2 (OGBench's data size) asks again on the two tasks where nothing succeeded in part 1.
PART_TWO_TASKS = ("cube-double-play-singletask-task2-v0", "puzzle-3x3-play-singletask-task2-v0")


def default_tasks(preset: str) -> tuple:
    """The tasks of the study's part that `preset` runs: part 1's four, or part 2's two (its rungs included)."""
    return STUDY_TASKS if configs.study_part(preset) == "study" else PART_TWO_TASKS


def default_out(preset: str) -> str:
    """Where a part's tables go: part 1's into docs/ (docs/study.md), every other preset's into docs/<preset>/, so
    that no part overwrites another's."""
    return "docs" if preset == "study" else os.path.join("docs", preset)


def study_command(runs: str, out: str, preset: str, tasks, seeds) -> str:
    """The scripts.study command that writes these tables again (the preset's defaults left out)."""
    flags = [] if preset == "study" else [f"--preset={preset}"]
    flags += [] if os.path.normpath(runs) == os.path.normpath(sweep.study_root(preset)) else [f"--runs={runs}"]
    flags += [] if os.path.normpath(out) == os.path.normpath(default_out(preset)) else [f"--out={out}"]
    flags += [] if tuple(tasks) == default_tasks(preset) else [f"--tasks={','.join(tasks)}"]
    flags += [] if tuple(seeds) == STUDY_SEEDS else [f"--seeds={','.join(map(str, seeds))}"]
    return " ".join(["python -m scripts.study", *flags])


QGF = "qgf"
COMPARED = tuple(m for m in sweep.STUDY_METHODS if m != QGF)  # Each paired against QGF: QGF − method.
BEGIN, END = "<!-- study:generated:begin -->", "<!-- study:generated:end -->"
CSV_FIELDS = (
    "task",
    "method",
    "seed",
    "episode_set",
    "guidance_weight",
    "success",
    "success_stderr",
    "return",
    "return_stderr",
    "episodes",
    "flops_per_decision",
    "eval_wall_s",
    "heldout_choice",
)
NOTHING_YET = "No finished evaluation yet."
METRICS = {"success": ("success", 100.0, "success (%)"), "return": ("return", 1.0, "return")}


# Reading the run dirs.


def latest_evaluations(root: str) -> dict:
    """{(task, method, seed, role): (eval.csv path, run dir)}: scripts.table's evaluations, a later one replacing
    an earlier one of the same method and episodes (an `--eval_only` evaluation replaces the run's own)."""
    return {(task, m, seed, role): (path, run) for task, m, seed, role, path, run in table.evaluations(root)}


def results_of_seeds(results: dict, seeds) -> dict:
    """scripts.table.collect's results restricted to `seeds`: a report over the seeds asked for, whatever else
    the run dirs hold (a seed still training beside them, say)."""
    kept = {key: {s: entry for s, entry in per_seed.items() if s in seeds} for key, per_seed in results.items()}
    return {key: per_seed for key, per_seed in kept.items() if per_seed}


def step_times(run: str) -> list:
    """The rows of a run dir's step_times.csv (scripts.sweep: output, seconds, finished, command), [] without one."""
    path = os.path.join(run, "step_times.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def eval_wall_seconds(path: str, run: str) -> float | None:
    """The wall time scripts.sweep recorded for the step that wrote the eval.csv at `path` (its last record)."""
    output = os.path.relpath(path, run)
    times = [float(r["seconds"]) for r in step_times(run) if r["output"] == output]
    return times[-1] if times else None


def csv_rows(evaluations: dict, chosen: dict) -> list:
    """study.csv's rows; `chosen` maps (task, method) to the weight chosen on held-out success."""
    rows = []
    for (task, method, seed, role), (path, run) in sorted(evaluations.items()):
        wall = eval_wall_seconds(path, run)
        for r in table.last_rows(path):
            weight = float(r["guidance_weight"])
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "seed": seed,
                    "episode_set": role,
                    "guidance_weight": weight,
                    "success": float(r["success"]),
                    "success_stderr": float(r["success_stderr"]),
                    "return": float(r["return"]),
                    "return_stderr": r.get("return_stderr", ""),  # Absent before commit 58b68d9.
                    "episodes": int(float(r["episodes"])),
                    "flops_per_decision": r.get("flops_per_decision", ""),
                    "eval_wall_s": "" if wall is None else wall,
                    "heldout_choice": int(same_weight(chosen.get((task, method)), weight)),
                }
            )
    return rows


def same_weight(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def episode_outcomes(path: str) -> list:
    """The episodes.csv beside an eval.csv: its last step's rows, [] when there is none."""
    episodes = os.path.join(os.path.dirname(path), "episodes.csv")
    if not os.path.exists(episodes):
        return []
    with open(episodes) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    last = max(int(float(r["step"])) for r in rows)
    return [r for r in rows if int(float(r["step"])) == last]


def outcomes_at(evaluations: dict, task: str, method: str, weight: float) -> dict:
    """{seed: {(episode task, reset seed): {"success": s, "return": r}}}: `method`'s reported episodes at `weight`."""
    found = {}
    for (t, m, seed, role), (path, _) in evaluations.items():
        if (t, m, role) != (task, method, "reported"):
            continue
        episodes = {
            (r["task"], int(r["reset_seed"])): {"success": float(r["success"]), "return": float(r["return"])}
            for r in episode_outcomes(path)
            if same_weight(float(r["guidance_weight"]), weight)
        }
        if episodes:
            found[seed] = episodes
    return found


def paired_difference(a: dict, b: dict, metric: str) -> dict | None:
    """a − b in `metric` over the episodes both ran (same seed, same reset seed), from outcomes_at's dicts.

    "stderr" is the standard error of the mean of the per-episode differences (all seeds' episodes pooled: it
    counts episode noise, not the variation between training seeds); "seed_stderr" that of the per-seed mean
    differences (None below two seeds). None when no episode is shared."""
    differences, per_seed = [], []
    for seed in sorted(set(a) & set(b)):
        shared = sorted(set(a[seed]) & set(b[seed]))
        d = [a[seed][k][metric] - b[seed][k][metric] for k in shared]
        if d:
            differences += d
            per_seed.append(float(np.mean(d)))
    if not differences:
        return None
    n = len(differences)
    return {
        "mean": float(np.mean(differences)),
        "stderr": float(np.std(differences, ddof=1) / np.sqrt(n)) if n > 1 else 0.0,
        "pairs": n,
        "seeds": len(per_seed),
        "seed_stderr": float(np.std(per_seed, ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else None,
    }


def evaluations_during_training(root: str) -> dict:
    """{(task, method, seed): {step: {weight: (success, return)}}}: every training run's own evaluations (its
    eval.csv, all-task rows, reported episodes) where it has evaluated at more than one step."""
    found = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(root), "*", "*", "seed*", "eval.csv"))):
        run = os.path.dirname(path)
        if not os.path.exists(os.path.join(run, "config.json")):
            continue
        with open(os.path.join(run, "config.json")) as f:
            config = json.load(f)
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if r.get("task", "all") == "all"]
        by_step = {}
        for r in rows:
            weights = by_step.setdefault(int(float(r["step"])), {})
            weights[float(r["guidance_weight"])] = (float(r["success"]), float(r["return"]))
        if len(by_step) > 1 and "estimator" in config.get("agent_config", {}):
            found[(config["env"], table.own_method(config), int(config["seed"]))] = by_step
    return found


def episode_counts(evaluations: dict, task: str, counted) -> dict:
    """{(method, seed, weight): (episodes for which `counted(row)` holds, episodes)} over both episode sets of
    `task`'s last evaluations (episodes.csv rows)."""
    counts = {}
    for (t, method, seed, _), (path, _) in evaluations.items():
        if t != task:
            continue
        for r in episode_outcomes(path):
            key = (method, seed, float(r["guidance_weight"]))
            n_counted, n = counts.get(key, (0, 0))
            counts[key] = (n_counted + bool(counted(r)), n + 1)
    return counts


def succeeded(row: dict) -> bool:
    return float(row["success"]) > 0


def held_the_start(start_reward: float):
    """Whether an episode's return is `start_reward` held for every step. On a puzzle that is a puzzle left
    untouched: any press changes the lights wrong for the steps it lasts, barring one that leaves their number
    unchanged."""
    return lambda row: math.isclose(float(row["return"]), start_reward * float(row["length"]), abs_tol=1e-6)


def puzzle_start_reward(task: str) -> float | None:
    """A single-task puzzle's reward at its start (minus the lights that differ from the goal); None for a task of
    another family."""
    name = envs.parse_name(task)
    if not (name.family.startswith("puzzle") and name.singletask and name.task_id):
        return None
    from scripts.puzzle_costs import start_and_goal

    start, goal = start_and_goal(task)
    return -float(np.sum(start != goal))


def critic_curves(root: str) -> dict:
    """{(task, agent, seed): {"steps": [...], "loss": [...], "train_steps": n}}: val/critic/loss of every training
    run under `root` (scripts.sweep's layout <task>/<agent>/seed<S>) that has logged one."""
    curves = {}
    for path in sorted(glob.glob(os.path.join(glob.escape(root), "*", "*", "seed*", "train.csv"))):
        run = os.path.dirname(path)
        seed = re.fullmatch(r"seed(\d+)", os.path.basename(run))
        if seed is None or not os.path.exists(os.path.join(run, "config.json")):
            continue
        with open(path) as f:
            rows = [r for r in csv.DictReader(f) if r.get("val/critic/loss") not in (None, "")]
        if not rows:
            continue
        with open(os.path.join(run, "config.json")) as f:
            train_steps = json.load(f).get("run", {}).get("train_steps")
        agent_dir = os.path.dirname(run)
        key = (os.path.basename(os.path.dirname(agent_dir)), os.path.basename(agent_dir), int(seed[1]))
        curves[key] = {
            "steps": [int(float(r["step"])) for r in rows],
            "loss": [float(r["val/critic/loss"]) for r in rows],
            "train_loss": [float(r.get("train/critic/loss") or "nan") for r in rows],
            "train_steps": train_steps,
        }
    return curves


def step_finished(step: sweep.Step) -> bool:
    """scripts.sweep's test of a step, or for a training step whose checkpoints are not kept (scripts.records):
    its run's own evaluation at its last update, which main.py makes only once that update's checkpoint is saved."""
    done = step.done()
    if done or step.output:
        return done
    try:
        with open(os.path.join(step.run, "config.json")) as f:
            train_steps = json.load(f)["run"]["train_steps"]
        with open(os.path.join(step.run, "eval.csv")) as f:
            evaluated = {int(float(r["step"])) for r in csv.DictReader(f)}
    except (OSError, KeyError, ValueError):
        return False
    return train_steps in evaluated


def cell_status(root: str, task: str, seed: int, preset: str = "study") -> tuple[bool, str]:
    """(finished, what is there) of one cell: every step scripts.sweep plans for it (trainings and evaluations)."""
    args = sweep.parse_args([f"--preset={preset}", f"--tasks={task}", f"--seeds={seed}", f"--root={root}"])
    steps = [step for job in sweep.plan(args) for step in job]
    finished = [step_finished(step) for step in steps]
    done = sum(finished)
    if done == len(steps):
        return True, "done"
    notes = []
    for step, step_done in zip(steps, finished, strict=True):
        if step.output or step_done:
            continue
        agent, path = os.path.basename(os.path.dirname(step.run)), os.path.join(step.run, "train.csv")
        if os.path.exists(path):
            with open(path) as f:
                logged = [int(float(r["step"])) for r in csv.DictReader(f)]
            notes.append(f"{agent} trained to step {max(logged) if logged else 0}")
        elif os.path.exists(os.path.join(step.run, "config.json")):
            notes.append(f"{agent} started")
    if not done and not notes:
        return False, "missing"
    return False, "; ".join([f"{done} of {len(steps)} steps done", *notes])


def training_loop_seconds(run: str, up_to: int | None = None) -> float | None:
    """The training loop's wall time for the updates a run's train.csv keeps (up to step `up_to`): the sum over
    its rows of the steps since the previous row over the row's steps/s. Each rate is timed from the previous log
    (or from its attempt's start), so the sum covers the chunks, compiles, validations, saves and evaluations
    during training of every attempt; not the data loading, the evaluation after the last row, nor updates a stop
    threw away between a save and the next log. None without rates."""
    path = os.path.join(run, "train.csv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("steps_per_s")]
    previous, seconds = 0, 0.0
    for r in rows:
        step = int(float(r["step"]))
        if up_to is not None and step > up_to:
            break
        seconds += (step - previous) / float(r["steps_per_s"])
        previous = step
    return seconds if rows else None


def training_seconds(run: str, record: dict) -> tuple[float, str]:
    """A training step's wall time from its step_times.csv row, and a mark: "" when it ran in one attempt; "†"
    when it resumed from a checkpoint (its last attempt plus train.csv's time for the updates before it, see
    `training_loop_seconds`); "‡" for a row recorded before scripts.sweep wrote `from_step` whose train.csv sums
    to more than the row (a resumed run: train.csv's time alone, without its data loading and final evaluation)."""
    seconds, from_step = float(record["seconds"]), record.get("from_step") or ""
    if from_step:
        earlier = training_loop_seconds(run, up_to=int(from_step)) or 0.0
        return seconds + earlier, "†" if int(from_step) else ""
    loop = training_loop_seconds(run)
    return (loop, "‡") if loop is not None and loop > seconds else (seconds, "")


def cell_wall_times(root: str, task: str, seed: int) -> dict:
    """{"train": {agent: s}, "marks": {agent: mark}, "eval": s, "evals": n} from the cell's step_times.csv files
    (scripts.sweep); the marks say how a resumed training step was timed (`training_seconds`)."""
    times = {"train": {}, "marks": {}, "eval": 0.0, "evals": 0}
    directory = os.path.join(root, task)
    for agent in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        run = sweep.run_dir(root, task, agent, seed)
        for r in step_times(run):
            if r["output"] == "train":  # The training step includes the run's own final evaluation.
                seconds, mark = training_seconds(run, r)
                times["train"][agent] = times["train"].get(agent, 0.0) + seconds
                times["marks"][agent] = times["marks"].get(agent, "") + mark
            else:
                times["eval"] += float(r["seconds"])
                times["evals"] += 1
    return times


# Formatting.


def ordered_tasks(tasks: list, found: set) -> list:
    return list(tasks) + sorted(found - set(tasks))


def cell_text(mean, stderr, seeds: int, scale: float) -> str:
    if mean is None:
        return "—"
    digits = 1 if scale != 1 or abs(mean) < 1e3 else 0
    if seeds < 2:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {stderr:.{digits}f}"


def results_table(cells: dict, tasks: list, scale: float, label: str) -> list:
    """Rows task × method: the held-out choice (weight, mean ± s.e. over seeds) and the optimistic per-seed best."""
    lines = [
        f"| task | method | weight (held-out choice) | {label} | seeds | optimistic: per-seed best {label} |",
        "|---|---|---|---|---|---|",
    ]
    methods = table.ordered_methods(cells)
    for task in tasks:
        first = True
        for method in methods:
            cell = cells.get((task, method))
            if cell is None:
                continue
            paper = cell["paper"]
            lines.append(
                f"| {task if first else ''} | {table.method_label(method)} | {weight_text(method, cell['weight'])} | "
                f"{cell_text(cell['mean'], cell['stderr'], cell['seeds'], scale)} | {cell['seeds']} | "
                f"{cell_text(paper['mean'], paper['stderr'], paper['seeds'], scale)} |"
            )
            first = False
    return lines if len(lines) > 2 else [NOTHING_YET]


def weight_text(method: str, weight: float | None) -> str:
    """A chosen weight as the reader should see it: none for a method without a sweep (it acts at 0, unguided)."""
    if not table.has_sweep(method):
        return "(none)"
    found = sweep.method_by_name(method)
    return "—" if weight is None else weight_label(weight, found.best_of_n if found else 1)


def difference_text(d: dict | None, scale: float) -> str:
    if d is None:
        return "—"
    seeds = "—" if d["seed_stderr"] is None else f"{scale * d['seed_stderr']:.1f}"
    return f"{scale * d['mean']:+.1f} ± {scale * d['stderr']:.1f} (seeds: ± {seeds})"


def paired_table(evaluations: dict, chosen: dict, tasks: list) -> list:
    """QGF − method per task, in success (pp) and return, each metric at the weights chosen on its held-out value."""
    lines = [
        "| task | comparison | Δ success (pp) | weights (QGF, other) | pairs (seeds) | Δ return | weights (QGF, other) "
        "| pairs (seeds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        first = True
        for method in COMPARED:
            cells = []
            for metric in METRICS:
                w_qgf, w_other = chosen[metric].get((task, QGF)), chosen[metric].get((task, method))
                if w_qgf is None or w_other is None:
                    cells += ["—", "—", "—"]
                    continue
                a = outcomes_at(evaluations, task, QGF, w_qgf)
                b = outcomes_at(evaluations, task, method, w_other)
                d = paired_difference(a, b, metric)
                cells += [
                    difference_text(d, METRICS[metric][1]),
                    f"{weight_text(QGF, w_qgf)}, {weight_text(method, w_other)}",
                    "0" if d is None else f"{d['pairs']} ({d['seeds']})",
                ]
            if all(c == "—" for c in cells):
                continue
            label = f"QGF − {table.method_label(method)}"
            lines.append(f"| {task if first else ''} | {label} | " + " | ".join(cells) + " |")
            first = False
    return lines if len(lines) > 2 else [NOTHING_YET]


def goal_coverage(rewards: np.ndarray, terminals: np.ndarray) -> dict:
    """How often a single-task dataset is at its task's goal (reward 0, the task reward's maximum: no subtask left):
    episodes (ending at each terminal) that reach it, and the share of transitions there."""
    from envs.chunks import episode_index_arrays

    at_goal = np.asarray(rewards) == 0
    _, episode_ids = episode_index_arrays(terminals)
    reaching = len(np.unique(episode_ids[at_goal]))
    return {"episodes": int(episode_ids[-1]) + 1, "reaching": reaching, "share": float(np.mean(at_goal))}


def dataset_coverage(tasks: list, dataset_dir: str) -> dict:
    """{task: goal_coverage} of each task whose dataset files are under `dataset_dir`."""
    import envs
    from envs.datasets import dataset_paths

    coverage = {}
    for task in tasks:
        if all(os.path.exists(p) for p in dataset_paths(task, dataset_dir)):
            env, train, _ = envs.make_env_and_datasets(task, dataset_dir=dataset_dir)
            env.close()
            coverage[task] = goal_coverage(train["rewards"], train["terminals"])
    return coverage


def coverage_table(coverage: dict) -> list:
    if not coverage:
        return ["No dataset found."]
    lines = [
        "| task | training episodes | episodes reaching the goal | transitions at the goal (%) |",
        "|---|---|---|---|",
    ]
    for task, c in coverage.items():
        lines.append(f"| {task} | {c['episodes']} | {c['reaching']} | {100 * c['share']:.3f} |")
    return lines


def one_weight_table(success: dict, tasks: list, method: str = QGF) -> list:
    """`method`'s success (%) per weight and task, mean over seeds of the reported episodes with the held-out mean
    in parentheses, and the weight of highest held-out success averaged over tasks: does one weight serve all?"""
    per_task = {t: success[(t, method)] for t in tasks if (t, method) in success}
    if not per_task:
        return [f"No {table.method_label(method)} evaluation yet."]

    def percent(value: float) -> str:
        return "—" if math.isnan(value) else f"{value:.1f}"

    def mean_over_seeds(task: str, role: str, weight: float) -> float:
        values = [s[role][weight] for s in per_task[task].values() if weight in s.get(role, {})]
        return 100 * float(np.mean(values)) if values else float("nan")

    def mean_over_tasks(role: str, weight: float) -> float:
        known = [v for v in (mean_over_seeds(t, role, weight) for t in per_task) if not math.isnan(v)]
        return float(np.mean(known)) if known else float("nan")

    weights = sorted(set().union(*(s.get("reported", {}) for seeds in per_task.values() for s in seeds.values())))
    heldout_mean = {w: mean_over_tasks("heldout", w) for w in weights}
    judged = [w for w in weights if not math.isnan(heldout_mean[w])]
    shared = max(judged, key=lambda w: (heldout_mean[w], -w)) if judged else None
    lines = [
        "| weight | " + " | ".join(per_task) + " | mean over tasks |",
        "|---" * (len(per_task) + 2) + "|",
    ]
    for w in weights:
        reported = [percent(mean_over_seeds(t, "reported", w)) for t in per_task]
        heldout = [percent(mean_over_seeds(t, "heldout", w)) for t in per_task]
        cells = " | ".join(f"{r} ({h})" for r, h in zip(reported, heldout, strict=True))
        reported_mean = mean_over_tasks("reported", w)
        mark = " ◀ shared choice" if w == shared else ""
        lines.append(f"| {w:g}{mark} | {cells} | {percent(reported_mean)} ({percent(heldout_mean[w])}) |")
    own = {t: table.choose_weight(method, per_task[t]) for t in per_task}
    choice = f"w = {shared:g}" if shared is not None else "none yet (no held-out evaluation)"
    lines += [
        "",
        f"The one weight of highest held-out success averaged over these {len(per_task)} task(s): {choice}. "
        "Each task's own held-out choice: " + ", ".join(f"{t}: {weight_text(method, w)}" for t, w in own.items()) + ".",
    ]
    return lines


def during_training_table(by_step: dict) -> list:
    """Rows weight, columns step: success (%) and mean return of one run's own evaluations."""
    steps = sorted(by_step)
    weights = sorted(set().union(*(by_step[s] for s in steps)))

    def cell(step: int, weight: float) -> str:
        if weight not in by_step[step]:
            return "—"
        success, ret = by_step[step][weight]
        return f"{100 * success:.1f} ({ret:.1f})"

    return [
        "| weight | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
        *[f"| {w:g} | " + " | ".join(cell(s, w) for s in steps) + " |" for w in weights],
    ]


def count_table(counts: dict, seeds: list) -> list:
    """Per method, episode_counts' counts over every weight and both episode sets, per seed of `seeds` and in all;
    then per weight for the methods with a weight sweep."""
    if not counts:
        return ["No episodes.csv in these evaluations (runs before commit 58b68d9 wrote none)."]
    seeds = sorted(seeds)
    methods = table.ordered_methods({(None, m): None for m, _, _ in counts})

    def total(method: str, seed=None, weight=None) -> str:
        found = [
            c
            for (m, s, w), c in counts.items()
            if m == method and (seed is None or s == seed) and (weight is None or w == weight)
        ]
        return f"{sum(h for h, _ in found)} of {sum(n for _, n in found)}" if found else "—"

    lines = [
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | all |",
        "|---" * (len(seeds) + 2) + "|",
        *[f"| {table.method_label(m)} | " + " | ".join(total(m, s) for s in seeds) + f" | {total(m)} |"
          for m in methods],
    ]  # fmt: skip
    swept = [m for m in methods if len({w for mm, _, w in counts if mm == m}) > 1]
    weights = sorted({w for m, _, w in counts if m in swept})
    if swept:
        lines += [
            "",
            "| weight | " + " | ".join(table.method_label(m) for m in swept) + " |",
            "|---" * (len(swept) + 1) + "|",
            *[f"| {w:g} | " + " | ".join(total(m, weight=w) for m in swept) + " |" for w in weights],
        ]
    return lines


def flops_table(cells: dict, tasks: list) -> list:
    if not tasks:
        return [NOTHING_YET]
    methods = table.ordered_methods(cells)
    lines = ["| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for method in methods:
        row = [cells.get((t, method), {}).get("flops") for t in tasks]
        lines.append(
            f"| {table.method_label(method)} | " + " | ".join("—" if f is None else f"{f:.3g}" for f in row) + " |"
        )
    return lines


def thirds(values: list) -> list:
    """Means of the first, middle and last third of `values` (a TD critic's loss on one batch is noisy; a third
    of a run's logged steps averages it)."""
    parts = np.array_split(np.asarray(values, float), 3)
    return [float(np.mean(p)) if len(p) else float("nan") for p in parts]


def critic_table(curves: dict) -> list:
    lines = [
        "| task | agent | seed | logged steps | val loss by third | train loss by third | val / train by third |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, agent, seed), c in sorted(curves.items()):
        unfinished = c["train_steps"] is not None and c["steps"][-1] < c["train_steps"]
        val, train = thirds(c["loss"]), thirds(c["train_loss"])
        ratio = [v / t if t else float("nan") for v, t in zip(val, train, strict=True)]
        steps = f"{c['steps'][0]}–{c['steps'][-1]}{' (running)' if unfinished else ''}"
        row = lambda xs, spec: ", ".join(format(x, spec) for x in xs)  # noqa: E731
        lines.append(
            f"| {task} | {agent} | {seed} | {steps} | {row(val, '.3g')} | {row(train, '.3g')} | {row(ratio, '.2f')} |"
        )
    return lines if curves else ["No run has logged a validation loss yet."]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def wall_table(root: str, tasks: list, seeds: list) -> list:
    cells = {(t, s): cell_wall_times(root, t, s) for t in tasks for s in seeds}
    cells = {k: v for k, v in cells.items() if v["train"] or v["evals"]}
    agents = sorted({a for v in cells.values() for a in v["train"]})
    lines = [
        "| task | seed | " + " | ".join(f"training {a} (min)" for a in agents) + " | evaluations (min) | total (min) |",
        "|---" * (len(agents) + 4) + "|",
    ]
    totals = {"train": dict.fromkeys(agents, 0.0), "eval": 0.0, "evals": 0}
    for (task, seed), v in cells.items():
        train = [v["train"].get(a) for a in agents]
        total = sum(x for x in train if x) + v["eval"]
        marks = [v["marks"].get(a, "") for a in agents]
        lines.append(
            f"| {task} | {seed} | "
            + " | ".join("—" if x is None else minutes(x) + m for x, m in zip(train, marks, strict=True))
            + f" | {minutes(v['eval'])} ({v['evals']}) | {minutes(total)} |"
        )
        for a in agents:
            totals["train"][a] += v["train"].get(a, 0.0)
        totals["eval"] += v["eval"]
        totals["evals"] += v["evals"]
    grand = sum(totals["train"].values()) + totals["eval"]
    lines.append(
        "| **all** | | "
        + " | ".join(f"**{minutes(totals['train'][a])}**" for a in agents)
        + f" | **{minutes(totals['eval'])} ({totals['evals']})** | **{minutes(grand)}** |"
    )
    return lines if cells else ["No step_times.csv yet."]


RECORDS_FILE = "records.json"  # scripts.records marks a records tree with it: run dirs' CSV and JSON, no checkpoints


def sweep_root(runs: str, preset: str) -> str:
    """The root of the sweep that finishes a cell of `runs`: `runs` itself, but for records (scripts.records) the
    preset's run root, since records keep no checkpoint to resume from and are no place to train."""
    return sweep.study_root(preset) if os.path.exists(os.path.join(runs, RECORDS_FILE)) else runs


def sweep_command(task: str, seed: int, root: str, preset: str = "study") -> str:
    where = "" if os.path.normpath(root) == os.path.normpath(sweep.study_root(preset)) else f" --root={root}"
    return f"python -m scripts.sweep --preset={preset} --tasks={task} --seeds={seed}{where}"


# Figures.


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def method_style(method: str) -> dict:
    """One colour and marker per method, the same in every figure."""
    names = list(dict.fromkeys([*sweep.STUDY_METHODS, *sweep.METHODS]))  # The study's seven: distinct colours.
    index = names.index(method) if method in names else len(names) + sum(map(ord, method)) % 7
    return {"color": f"C{index % 10}", "marker": "osD^vP*Xhp"[index % 10]}


def plot_success_vs_weight(path: str, task: str, success: dict) -> None:
    """Every method's reported success per weight (mean over seeds, s.e. bars over seeds); one-weight methods as
    horizontal lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for method in table.ordered_methods({k: None for k in success if k[0] == task}):
        per_seed = [s["reported"] for s in success[(task, method)].values() if s.get("reported")]
        if not per_seed:
            continue
        swept = table.has_sweep(method) and len(set().union(*per_seed)) > 1
        weights = sorted(set().union(*per_seed)) if swept else [0.0]
        values = [[100 * r[w] for r in per_seed if w in r] for w in weights]
        means = [np.mean(v) if v else np.nan for v in values]
        errors = [np.std(v, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0 for v in values]
        label = table.method_label(method)
        style = method_style(method)
        if swept:
            ax.errorbar(weights, means, yerr=errors, capsize=3, label=label, **style)
        else:  # A method without a sweep acts at weight 0 (scripts.table reports that).
            ax.axhline(means[0], linestyle="--", linewidth=1.2, color=style["color"], label=f"{label} (one weight)")
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel("success (%), reported episodes")
    ax.set_ylim(-2, 102)
    ax.set_title(task, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_success_vs_flops(path: str, cells: dict, tasks: list) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for method in table.ordered_methods(cells):
            cell = cells.get((task, method))
            if cell is None or cell["mean"] is None or cell["flops"] is None:
                continue
            label = table.method_label(method)
            ax.errorbar(cell["flops"], cell["mean"], yerr=cell["stderr"], capsize=3, linestyle="none", label=label,
                        **method_style(method))  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlim(1e5, 1e8)  # Every method's cost here; one range, so panels compare and only decades are labelled.
        ax.set_xlabel("FLOPs per decision")
        ax.set_ylim(-2, 102)
        ax.set_title(task, fontsize=8)
    axes[0][0].set_ylabel("success (%), held-out choice")
    entries = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    axes[0][0].legend(entries.values(), entries.keys(), fontsize=7)  # Every method, whichever task it is in.
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_critic(path: str, task: str, curves: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (t, agent, seed), c in sorted(curves.items()):
        if t == task:
            line = ax.plot(c["steps"], c["loss"], marker=".", label=f"{agent} seed {seed} (validation)")[0]
            ax.plot(
                c["steps"], c["train_loss"], ls="--", color=line.get_color(), label=f"{agent} seed {seed} (training)"
            )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("critic loss")
    ax.set_title(task, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# The document.


def replace_generated(text: str, generated: str) -> str:
    """`text` with what lies between BEGIN and END replaced by `generated`; everything else is unchanged."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"needs exactly one {BEGIN} followed by one {END}")
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + generated.strip("\n") + "\n" + text[stop:]


def write_document(path: str, generated: str) -> None:
    """Writes the generated part into the markdown at `path` (created with a title and the markers if missing)."""
    text = f"# The study\n\n{BEGIN}\n{END}\n"
    if os.path.exists(path):
        with open(path, newline="") as f:  # newline="": line endings stay as they are.
            text = f.read()
    try:
        text = replace_generated(text, generated)
    except ValueError as error:
        raise SystemExit(f"error: {path} {error}: add them where the generated part goes") from None
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def figure_name(kind: str, task: str) -> str:
    return f"{kind}_{task}.png"


def generate(
    runs: str, out: str, tasks: list, seeds: list, dataset_dir: str | None = None, preset: str = "study"
) -> tuple[str, list]:
    """The generated markdown and study.csv's rows; writes the figures under `<out>/study/`. With `dataset_dir`,
    also how often each task's dataset reaches its goal."""
    evaluations = {k: v for k, v in latest_evaluations(runs).items() if k[2] in seeds}
    results = {
        metric: results_of_seeds(table.collect(runs, column), seeds) for metric, (column, _, _) in METRICS.items()
    }
    cells = {metric: table.summarize(results[metric], METRICS[metric][1]) for metric in METRICS}
    chosen = {metric: {k: c["weight"] for k, c in cells[metric].items()} for metric in METRICS}
    command = study_command(runs, out, preset, tasks, seeds)
    tasks = ordered_tasks(tasks, {t for t, _ in cells["success"]})
    with_data = [t for t in tasks if any(k[0] == t for k in cells["success"])]
    figures = os.path.join(out, "study")
    os.makedirs(figures, exist_ok=True)

    status = {(t, s): cell_status(runs, t, s, preset) for t in tasks for s in seeds}
    finished = [k for k, (done, _) in status.items() if done]
    missing = [k for k, (done, note) in status.items() if not done and note == "missing"]
    lines = [
        f"_Generated by `{command}` from the run dirs under `{runs}`; "
        "rerunning it replaces this part and keeps the text outside it._",
        "",
        "## Cells",
        "",
        f"{len(finished)} of {len(status)} cells (task × seed) finished: every training and evaluation "
        f"`scripts.sweep --preset={preset}` plans for them is done.",
        "",
        "| task | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---" * (len(seeds) + 1) + "|",
        *[f"| {t} | " + " | ".join(status[(t, s)][1] for s in seeds) + " |" for t in tasks],
        "",
        "Missing (nothing run yet): " + (", ".join(f"{t} seed {s}" for t, s in missing) or "none") + ".",
    ]
    if dataset_dir:
        lines += [
            "",
            "## Dataset coverage",
            "",
            f"How often each task's training dataset (`{dataset_dir}`) is at the task's goal (reward 0: no subtask "
            "left): what behaviour cloning can imitate and the critic can learn a value of.",
            "",
            *coverage_table(dataset_coverage(tasks, os.path.expanduser(dataset_dir))),
        ]
    for metric, (_, scale, label) in METRICS.items():
        lines += [
            "",
            f"## {label[0].upper() + label[1:]} per task and method",
            "",
            f"Mean ± standard error over seeds of each seed's {label} on its reported episodes (reset seeds "
            "1000·seed + e), at the guidance weight of highest mean held-out "
            f"{metric} (reset seeds 1000·seed + 500 + e; the smaller weight on a tie); methods with one weight use it. "
            "Beside it the paper's convention, optimistic: per seed the best weight on the reported episodes "
            "themselves, then the mean over seeds. (none): a method without a guidance-weight sweep; —: no held-out "
            "evaluation yet.",
            "",
            *results_table(cells[metric], with_data, scale, label),
        ]
    lines += [
        "",
        "## Paired differences: QGF against each method on the same episodes",
        "",
        "Every method's reported episodes of a seed start from the same reset seeds (1000·seed + e), so QGF and "
        "another method are compared episode by episode (episodes.csv). Each difference is the mean over all paired "
        "episodes of all seeds of QGF's outcome minus the other method's, each method at its weight chosen on "
        "held-out episodes (for success the held-out success, for return the held-out return). ± is the standard "
        "error of the per-episode paired differences (episode noise only, seeds pooled); `seeds: ±` is the "
        "standard error of the per-seed mean differences over seeds, which also counts training-seed variation. "
        "0 pairs: no episodes.csv at those weights (runs before commit 58b68d9) or no reset seed in common.",
        "",
        *paired_table(evaluations, chosen, with_data),
        "",
        "## Success against guidance weight",
        "",
        "Reported episodes; mean over seeds with standard-error bars over seeds; methods without a sweep as "
        "horizontal lines.",
        "",
    ]
    for task in with_data:
        name = figure_name("success_vs_weight", task)
        plot_success_vs_weight(os.path.join(figures, name), task, results["success"])
        lines.append(f"![success against guidance weight, {task}](study/{name})")
    if with_data:
        plot_success_vs_flops(os.path.join(figures, "success_vs_flops.png"), cells["success"], with_data)
    for task in with_data:
        lines += [
            "",
            f"## Successes over every weight and both episode sets: {task}",
            "",
            "Episodes that succeeded, counted in every evaluation's episodes.csv (the last one of each method and "
            "episode set): the rare successes that the held-out choice above can miss.",
            "",
            *count_table(episode_counts(evaluations, task, succeeded), seeds),
        ]
        start_reward = puzzle_start_reward(task)
        if start_reward is not None:
            lines += [
                "",
                f"## Puzzle left untouched: {task}",
                "",
                f"Episodes whose return is the start's reward ({start_reward:g}: lights wrong at the start) held for "
                "every step, that is, no button pressed (barring a press that leaves the number of wrong lights "
                "unchanged), over every weight and both episode sets.",
                "",
                *count_table(episode_counts(evaluations, task, held_the_start(start_reward)), seeds),
            ]
    during = {k: v for k, v in evaluations_during_training(runs).items() if k[0] in with_data and k[2] in seeds}
    if during:
        lines += [
            "",
            "## Evaluations during training",
            "",
            "Runs that evaluated at more than one step (`eval_every` below the training steps): success (%) and, in "
            "parentheses, mean return of the run's own evaluation at each step, on its reported episodes (the same "
            "reset seeds at every step).",
        ]
        for (task, method, seed), by_step in sorted(during.items()):
            lines += ["", f"{task}, {table.method_label(method)}, seed {seed}:", "", *during_training_table(by_step)]
    lines += [
        "",
        "## One guidance weight across tasks",
        "",
        "QGF's success (%) at every weight of the grid: reported episodes, mean over seeds, with the held-out "
        "episodes' mean in parentheses. The shared choice is the weight of highest held-out success averaged over "
        "tasks; compare its reported success with each task's own choice above.",
        "",
        *one_weight_table(results["success"], with_data),
        "",
        "## Compute: FLOPs per decision",
        "",
        "One decision (one action chunk for one environment), XLA's cost analysis of the compiled policy "
        "(eval.csv's flops_per_decision), mean over seeds.",
        "",
        *flops_table(cells["success"], with_data),
        "",
        *(["![success against FLOPs per decision](study/success_vs_flops.png)"] if with_data else []),
    ]
    curves = {k: v for k, v in critic_curves(runs).items() if k[2] in seeds}
    lines += [
        "",
        "## The critics' validation loss",
        "",
        "val/critic/loss and train/critic/loss from each run's train.csv (every log_every steps; validation on one "
        "batch of the validation episodes in these runs, at commit 3bdda7c, and on the mean of "
        "runner.train_loop.VALIDATION_BATCHES batches in runs since; training as the mean over the chunk's "
        "updates), each averaged over the first, middle and last third of the logged steps. "
        "A TD critic's loss grows while Q's magnitude grows, on training and validation data alike, so the sign "
        "of overfitting is the ratio val / train growing.",
        "",
        *critic_table(curves),
        "",
    ]
    for task in dict.fromkeys(t for t, _, _ in curves):
        name = figure_name("critic_val_loss", task)
        plot_critic(os.path.join(figures, name), task, curves)
        lines.append(f"![critic validation loss, {task}](study/{name})")
    lines += [
        "",
        "## Wall times",
        "",
        "Per cell, from the run dirs' step_times.csv (scripts.sweep times each step it runs). Training includes "
        "loading the data, compiling and the run's own evaluations; evaluations are the `--eval_only` steps (their "
        "number in parentheses). A training step cut and resumed is marked: † its last attempt plus the training "
        "loop's time for the updates before it, from train.csv (the steps per second of each log interval); ‡ "
        "(recorded before scripts.sweep noted where an attempt started) train.csv's time alone, without loading "
        "the data or the final evaluation. Neither counts the work a cut threw away.",
        "",
        *wall_table(runs, tasks, seeds),
        "",
        "## Commands",
        "",
        "Each cell (the sweep skips what is done, so rerunning one resumes it):",
        "",
        *[f"    {sweep_command(t, s, sweep_root(runs, preset), preset)}" for t in tasks for s in seeds],
        "",
        "This part and study.csv:",
        "",
        f"    {command}",
    ]
    return "\n".join(lines) + "\n", csv_rows(evaluations, chosen["success"])


def write_study(
    runs: str, out: str, tasks=None, seeds=STUDY_SEEDS, dataset_dir=None, preset: str = "study"
) -> tuple[str, str]:
    """Writes `<out>/study.csv`, the generated part of `<out>/study.md` and its figures; returns both paths."""
    if not os.path.isdir(runs):
        raise SystemExit(f"error: --runs={runs} is not a directory (the study's run dirs, scripts.sweep's --root)")
    if not table.summarize(results_of_seeds(table.collect(runs), seeds)):  # Never replace results with nothing.
        raise SystemExit(
            f"error: no evaluations of seeds {list(seeds)} found under --runs={runs} (the study's run dirs, "
            "scripts.sweep's --root); "
            f"{os.path.join(out, 'study.csv')} and study.md are left as they were"
        )
    os.makedirs(out, exist_ok=True)
    generated, rows = generate(runs, out, list(tasks or default_tasks(preset)), list(seeds), dataset_dir, preset)
    csv_path, md_path = os.path.join(out, "study.csv"), os.path.join(out, "study.md")
    with open(csv_path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(csv_path + ".tmp", csv_path)
    write_document(md_path, generated)
    return csv_path, md_path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        default="study",
        help="the study's part: study (1), study-1000ep (2), or a rung of part 2 (`study-1000ep+size-0.8m`)",
    )
    parser.add_argument(
        "--runs", default=None, help="the study's run dirs (scripts.sweep's --root; default: the preset's)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="where study.md, study.csv and study/ (figures) go (default: docs/ for part 1, "
        "docs/<preset>/ for the others)",
    )
    parser.add_argument(
        "--tasks", type=lambda s: s.split(","), default=None, help="default: the part's (part 1: four, part 2: two)"
    )
    parser.add_argument(
        "--seeds",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(STUDY_SEEDS),
        help="the seeds reported, comma-separated (default 0,1,2); run dirs of other seeds under --runs are left out",
    )
    parser.add_argument(
        "--dataset_dir",
        default=None,
        help="the study's datasets, for the coverage table (default: the preset's; '' to leave it out)",
    )
    args = parser.parse_args(argv)
    from envs.generate import quiet_known_warnings

    quiet_known_warnings()  # the coverage table and the sweep's plan make environments
    try:
        configs.preset_parts(args.preset)
    except configs.ConfigError as error:
        raise SystemExit(f"error: --preset: {error}") from None
    if configs.study_part(args.preset) is None:
        raise SystemExit(
            f"error: --preset={args.preset} holds no study preset ({', '.join(configs.STUDY_PRESETS)}); "
            "choose one, alone or joined with modifiers (e.g. study-1000ep+size-0.8m)"
        )
    args.runs = args.runs or sweep.study_root(args.preset)
    args.tasks = args.tasks or list(default_tasks(args.preset))
    args.out = args.out or default_out(args.preset)
    if args.dataset_dir is None:
        args.dataset_dir = configs.get_run_config(args.preset).dataset_dir
    for task in args.tasks:
        try:
            envs.parse_name(task)
        except ValueError as error:
            raise SystemExit(f"error: --tasks: {error}") from None
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise SystemExit(f"error: --out={args.out} is a file, not a directory; choose another --out")
    csv_path, md_path = write_study(args.runs, args.out, args.tasks, args.seeds, args.dataset_dir, args.preset)
    print(f"Wrote {md_path} (generated part), {csv_path} and {os.path.join(args.out, 'study')}/")


if __name__ == "__main__":
    main()
