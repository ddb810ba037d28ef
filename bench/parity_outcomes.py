"""Outcome parity (issue 27, level 2): the official main.py and ours trained on the same data with the same settings.

    python -m bench.parity_outcomes --official=<checkout> --official_python=<python> --out=<dir> --seeds=0,1,2

Both codes train `qgf` on cube-single task 2 from the study's generated dataset (200 + 20 episodes,
`~/.ogbench/data/qgf-study-200ep`, made by `python -m envs.generate` as the study makes it, below) with the study
preset's settings (3 × 256 networks, batch 256, γ = 0.99, 30k updates, action chunks of 5, 10 Euler steps), and
each evaluates BC (w = 0) and QGF at every weight of the study's grid, 30 episodes per weight, per seed:

- official: its `main.py` in its own environment (`--official_python`), with the flags of its launch script
  (`scripts/exp_qgf_train_test.py`) at the study's sizes, on the dataset through its `--ogbench_dataset_dir` loader
  (the loader of the paper's runs: masks 1 − terminals, as the study preset's `mask_convention=trajectory_end`;
  one file, so `--dataset_replace_interval` is set past the run's end and the file is read once), wandb disabled
  (`--debug`), a checkpoint every 10k updates, losses logged every 1000. Its evaluation:
  `bench/parity_outcomes_official.py`, in the official environment, restores the final checkpoint and runs the
  official evaluation loop (`utils.evaluation.eval_standard`) at each weight, recording every episode;
- ours: `main.py --preset=study` with w = 0 added to the grid (`--guidance_weights`), which trains and then
  evaluates at its final step (its `episodes.csv` holds every episode).

Every step is skipped when its output exists, so rerunning the same command continues a killed run: our main.py
resumes from its last checkpoint itself; an official training resumes from its last checkpoint
(`--restore_path/--restore_epoch`; its train.csv so far is kept as `train.until<epoch>.csv`, since the official
logger rewrites the file); an official evaluation redoes only the weights without a result file. Each step runs
under `flock <--lock>` (one background job at a time on a shared machine). After every step the results found so
far are collected into `<out>/outcomes.json`, `<out>/outcomes.md`, the loss-curve figure and, with `--doc`, the
"Outcomes" section of docs/parity.md (between its markers; the rest of the file is kept).
"""

import argparse
import csv
import datetime
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASK = "cube-single-play-singletask-task2-v0"
DATASET = "cube-single-play-v0"
PRESET = "cube-single+study"
DATA_DIR = "~/.ogbench/data/qgf-study-200ep"
RUN_GROUP = "parity"
# docs/parity.md: the Outcomes section lies between BEGIN and END (kept whole when bench.parity rewrites level 1);
# inside it, the driver rewrites only what lies between GEN_BEGIN and GEN_END, so hand-written analysis stays.
BEGIN, END = "<!-- outcomes:begin -->", "<!-- outcomes:end -->"
GEN_BEGIN, GEN_END = "<!-- outcomes:generated:begin -->", "<!-- outcomes:generated:end -->"
# The same comparison with the official side run by this project's python (`--stubs`): its own generated part, inside
# the Outcomes section, so that both comparisons stand in the document.
CURRENT_GEN_BEGIN = "<!-- outcomes:current-jax:generated:begin -->"
CURRENT_GEN_END = "<!-- outcomes:current-jax:generated:end -->"
CURRENT_HEADING = "### Ours against the official code run by this project's python (jax 0.10)"
# The loss curves compared: (label, our train.csv column, the official train.csv column).
CURVES = (
    ("critic loss", "train/critic/loss", "training/critic_loss"),
    ("value loss", "train/value/loss", "training/value_loss"),
    ("BC (flow-matching) loss", "train/policy/bc_loss", "training/bc_loss"),
)


def study_settings() -> dict:
    """The study preset's settings, read from configs (so the official flags follow any change to the preset)."""
    sys.path.insert(0, str(ROOT))
    import configs

    config = configs.get_config("qgf", PRESET)
    run = configs.get_run_config(PRESET, "qgf")
    return {
        "hidden": tuple(config.actor_hidden_dims),
        "critic_hidden": tuple(config.critic_hidden_dims),
        "batch_size": int(config.batch_size),
        "discount": float(config.discount),
        "expectile": float(config.expectile),
        "denoising_steps": int(config.denoising_steps),
        "horizon": int(config.horizon),
        "lr": float(config.lr),
        "target_rate": float(config.target_rate),
        "num_critics": int(config.num_critics),
        "weights": (0.0, *(float(w) for w in config.guidance_weights)),
        "train_steps": int(run.train_steps),
        "episodes": int(run.eval_episodes),
        "save_every": int(run.save_every),
        "log_every": int(run.log_every),
    }


def dims(values) -> str:
    return "(" + ",".join(str(v) for v in values) + ")"


def weights_flag(weights) -> str:
    return ",".join(f"{w:g}" for w in weights)


def official_train_command(python: str, s: dict, seed: int, save_dir: str, data_dir: str, restore=None) -> list:
    """The official main.py's command line: its launch script's flags at the study's sizes."""
    if s["hidden"] != s["critic_hidden"]:
        raise ValueError("the official qgf takes one width for the critic and value (value_network_kwargs)")
    command = [
        python,
        "main.py",
        f"--env_name={TASK}",
        f"--seed={seed}",
        f"--save_dir={save_dir}",
        f"--wandb_run_group={RUN_GROUP}",
        "--debug=True",  # wandb disabled
        f"--offline_steps={s['train_steps']}",
        "--online_steps=0",
        f"--log_interval={s['log_every']}",
        "--eval_interval=0",  # evaluated afterwards from the final checkpoint, every episode recorded
        f"--save_interval={s['save_every']}",
        "--eval_vecenv_size=1",  # no evaluation envs while training
        f"--eval_episodes={s['episodes']}",
        f"--guidance_weights={weights_flag(s['weights'])}",
        f"--ogbench_dataset_dir={data_dir}",
        "--dataset_replace_interval=1000000000",  # one file: never re-read within the run
        "--agent=agents/qgf.py",
        f"--agent.denoise_steps={s['denoising_steps']}",
        f"--agent.expectile={s['expectile']}",
        "--agent.denoised_action_approx=one_euler_step_approx",
        "--agent.apply_jacobian=False",
        f"--agent.batch_size={s['batch_size']}",
        f"--agent.actor_hidden_dims={dims(s['hidden'])}",
        f"--agent.value_network_kwargs.hidden_dims={dims(s['critic_hidden'])}",
        f"--agent.discount={s['discount']}",
        "--agent.action_chunking=True",
        f"--agent.horizon_length={s['horizon']}",
        f"--agent.bc_lr={s['lr']}",
        f"--agent.critic_lr={s['lr']}",
        f"--agent.value_lr={s['lr']}",
        f"--agent.tau={s['target_rate']}",
        f"--agent.num_qs={s['num_critics']}",
    ]
    if restore is not None:
        command += [f"--restore_path={restore[0]}", f"--restore_epoch={restore[1]}"]
    return command


def our_command(s: dict, seed: int, run_dir: str) -> list:
    return [
        sys.executable,
        str(ROOT / "main.py"),
        "--agent=qgf",
        f"--env={TASK}",
        f"--seed={seed}",
        f"--preset={PRESET}",
        f"--run_dir={run_dir}",
        f"--guidance_weights={weights_flag(s['weights'])}",
        f"--dataset_dir={DATA_DIR}",
        "--data=local",
        "--progress=false",
    ]


def official_run_dir(save_dir: str, seed: int) -> str | None:
    """The official main.py's save dir: <save_dir>/qgf/<group>/<group>_qgf_<env>_seed<NN>_<config hash>."""
    found = sorted(glob.glob(os.path.join(save_dir, "qgf", RUN_GROUP, f"{RUN_GROUP}_qgf_*_seed{seed:02d}_*")))
    return found[-1] if found else None


def checkpoints(run_dir: str | None) -> list[int]:
    if not run_dir:
        return []
    found = (re.fullmatch(r"params_(\d+)\.pkl", os.path.basename(p)) for p in glob.glob(f"{run_dir}/params_*.pkl"))
    return sorted(int(m.group(1)) for m in found if m)


def read_csv(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def official_curves(run_dir: str | None) -> dict:
    """{label: {step: value}} from the official train.csv, earlier segments (`train.until<E>.csv`, rows ≤ E) first."""
    curves = {label: {} for label, _, _ in CURVES}
    if not run_dir:
        return curves
    segments = []
    for path in glob.glob(os.path.join(run_dir, "train.until*.csv")):
        segments.append((int(re.search(r"until(\d+)", path).group(1)), path))
    segments.sort()
    segments.append((math.inf, os.path.join(run_dir, "train.csv")))
    start = 0
    for until, path in segments:
        for row in read_csv(path):
            step = int(float(row["step"]))
            if start < step <= until:
                for label, _, column in CURVES:
                    curves[label][step] = number(row.get(column))
        start = until if until != math.inf else start
    return curves


def our_curves(run_dir: str) -> dict:
    curves = {label: {} for label, _, _ in CURVES}
    for row in read_csv(os.path.join(run_dir, "train.csv")):
        step = int(float(row["step"]))
        for label, column, _ in CURVES:
            curves[label][step] = number(row.get(column))
    return curves


def our_episodes(run_dir: str, step: int) -> dict:
    """{weight: [episode dicts]} of our final evaluation (plain QGF, one sample) at `step`."""
    out = {}
    for row in read_csv(os.path.join(run_dir, "episodes.csv")):
        if int(float(row["step"])) != step or row.get("estimator", "qgf") != "qgf" or row.get("best_of_n", "1") != "1":
            continue
        if row.get("task", "all") != "all":
            continue
        episode = {"success": number(row["success"]), "return": number(row["return"]), "length": number(row["length"])}
        out.setdefault(round(float(row["guidance_weight"]), 6), []).append(episode)
    return out


def official_episodes(eval_dir: str) -> dict:
    out = {}
    for path in glob.glob(os.path.join(eval_dir, "w*.json")):
        with open(path) as f:
            record = json.load(f)
        out[round(float(record["weight"]), 6)] = record["episodes"]
    return out


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation / √n); n < 2 gives a NaN error."""
    values = [v for v in values if not math.isnan(v)]
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def summarise(episodes_by_seed: dict, weights, expected: int) -> dict:
    """{weight: {success, success_se, return, return_se, episodes, seeds}} pooling every complete seed's episodes.

    `episodes_by_seed`: {seed: {weight: [episodes]}}; a seed counts for a weight only with `expected` episodes there.
    """
    out = {}
    for w in weights:
        w = round(float(w), 6)
        pooled, seeds = [], []
        for seed, by_weight in sorted(episodes_by_seed.items()):
            episodes = by_weight.get(w, [])
            if len(episodes) == expected:
                pooled += episodes
                seeds.append(seed)
        success, success_se = mean_se([e["success"] for e in pooled])
        ret, ret_se = mean_se([e["return"] for e in pooled])
        out[w] = {
            "success": success,
            "success_se": success_se,
            "return": ret,
            "return_se": ret_se,
            "episodes": len(pooled),
            "seeds": seeds,
        }
    return out


def difference(ours: dict, official: dict) -> dict:
    """ours − official and its standard error (independent episodes: √(se₁² + se₂²)); `clear` when > 2 s.e."""
    out = {}
    for key in ("success", "return"):
        d = ours[key] - official[key]
        se = math.sqrt(ours[f"{key}_se"] ** 2 + official[f"{key}_se"] ** 2)
        out[key] = d
        out[f"{key}_se"] = se
        out[f"{key}_beyond_2se"] = bool(abs(d) > 2 * se) if se > 0 else bool(d != 0 and not math.isnan(d))
    return out


def fmt(value, se, scale=1.0, digits=1) -> str:
    if math.isnan(value):
        return "—"
    if math.isnan(se):
        return f"{value * scale:.{digits}f}"
    return f"{value * scale:.{digits}f} ± {se * scale:.{digits}f}"


def table(rows: dict) -> str:
    """The markdown table: per weight both codes' success (%) and return with s.e., and ours − official."""
    lines = [
        "| w | success ours (%) | success official (%) | Δ success (pp) | return ours | return official | Δ return "
        "| episodes (ours / official) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w, row in rows.items():
        o, f, d = row["ours"], row["official"], row["difference"]

        def flag(key, d=d):
            return " **(> 2 s.e.)**" if d.get(f"{key}_beyond_2se") else ""

        label = f"{w:g}" + (" (BC)" if w == 0 else "")
        lines.append(
            f"| {label} | {fmt(o['success'], o['success_se'], 100)} | {fmt(f['success'], f['success_se'], 100)} "
            f"| {fmt(d['success'], d['success_se'], 100)}{flag('success')} | {fmt(o['return'], o['return_se'])} "
            f"| {fmt(f['return'], f['return_se'])} | {fmt(d['return'], d['return_se'])}{flag('return')} "
            f"| {o['episodes']} / {f['episodes']} |"
        )
    return "\n".join(lines)


def per_seed_table(per_seed: dict, weights) -> str:
    """Success (%) per seed and weight, both codes: 'ours / official'."""
    seeds = sorted(per_seed)
    lines = ["| w | " + " | ".join(f"seed {s} (ours / official)" for s in seeds) + " |"]
    lines.append("|---|" + "---|" * len(seeds))
    for w in weights:
        w = round(float(w), 6)
        cells = []
        for s in seeds:
            parts = []
            for side in ("ours", "official"):
                episodes = per_seed[s][side].get(w, [])
                parts.append(f"{100 * mean_se([e['success'] for e in episodes])[0]:.1f}" if episodes else "—")
            cells.append(" / ".join(parts))
        lines.append(f"| {w:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(curves: dict, path: str) -> None:
    """One panel per loss; each code's mean over its seeds (thick) and each seed (thin)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.6))
    colours = {"ours": "tab:blue", "official": "tab:orange"}
    for ax, (label, _, _) in zip(axes, CURVES, strict=True):
        for side, colour in colours.items():
            per_seed = [c[label] for c in curves[side].values() if c[label]]
            for seed_curve in per_seed:
                steps = sorted(seed_curve)
                ax.plot(steps, [seed_curve[s] for s in steps], color=colour, alpha=0.25, lw=0.8)
            common = sorted(set.intersection(*(set(c) for c in per_seed))) if per_seed else []
            if common:
                mean = [sum(c[s] for c in per_seed) / len(per_seed) for s in common]
                seeds = ", ".join(str(s) for s, c in sorted(curves[side].items()) if c[label])
                ax.plot(common, mean, color=colour, lw=2, label=f"{side} (seeds {seeds})")
        ax.set_title(label)
        ax.set_xlabel("update")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{TASK}: training losses every 1000 updates (ours: mean of the 500-update chunk ending there; "
        "official: that one update's batch)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(out: str, seeds, s: dict, ours_out: str = "") -> dict:
    """Everything found under `out` (our runs: under `ours_out`, default `out`) so far: per seed and side the
    episodes and curves, pooled rows, differences."""
    per_seed, curves = {}, {"ours": {}, "official": {}}
    for seed in seeds:
        ours_dir = os.path.join(ours_out or out, "ours", f"seed{seed}")
        official_dir = official_run_dir(os.path.join(out, "official", f"seed{seed}"), seed)
        per_seed[seed] = {
            "ours": our_episodes(ours_dir, s["train_steps"]),
            "official": official_episodes(os.path.join(out, "official", f"seed{seed}", "eval")),
        }
        curves["ours"][seed] = our_curves(ours_dir)
        curves["official"][seed] = official_curves(official_dir)
    rows = {}
    for w in s["weights"]:
        w = round(float(w), 6)
        ours = summarise({k: v["ours"] for k, v in per_seed.items()}, [w], s["episodes"])[w]
        official = summarise({k: v["official"] for k, v in per_seed.items()}, [w], s["episodes"])[w]
        rows[w] = {"ours": ours, "official": official, "difference": difference(ours, official)}
    return {"per_seed": per_seed, "curves": curves, "rows": rows}


def finished_seeds(result: dict, weights, expected: int) -> dict:
    """{side: [seeds with every weight's `expected` episodes]}."""
    out = {}
    for side in ("ours", "official"):
        out[side] = [
            seed
            for seed, sides in sorted(result["per_seed"].items())
            if all(len(sides[side].get(round(float(w), 6), [])) == expected for w in weights)
        ]
    return out


def between(text: str, begin: str, end: str) -> tuple[str, str, str] | None:
    """(before, inside, after) of the first `begin` … `end` in `text`, or None."""
    if begin not in text:
        return None
    head, rest = text.split(begin, 1)
    if end not in rest:
        return None
    inside, tail = rest.split(end, 1)
    return head, inside, tail


def replace_section(document: str, generated: str, current_jax: bool = False) -> str:
    """`document` with its generated outcomes part (`current_jax`: the one of the official code under our pins)
    replaced by `generated`. Without one, that part is added: the main part as a new Outcomes section at the end,
    the current-jax part under its heading at the end of the Outcomes section (or a new one)."""
    begin, end = (CURRENT_GEN_BEGIN, CURRENT_GEN_END) if current_jax else (GEN_BEGIN, GEN_END)
    inner = f"{begin}\n{generated.strip()}\n{end}"
    parts = between(document, begin, end)
    if parts:
        return parts[0] + inner + parts[2]
    if current_jax:
        inner = f"{CURRENT_HEADING}\n\n{inner}"
        section = between(document, BEGIN, END)
        if section:
            return section[0] + BEGIN + section[1].rstrip("\n") + "\n\n" + inner + "\n\n" + END + section[2]
    block = f"{BEGIN}\n## Outcomes\n\n{inner}\n{END}"
    return document.rstrip("\n") + "\n\n" + block + "\n"


def keep_section(old: str, new: str) -> str:
    """`new` (a regenerated level-1 document) with `old`'s whole Outcomes section, if it had one, at its end."""
    parts = between(old, BEGIN, END)
    if not parts:
        return new
    return new.rstrip("\n") + "\n\n" + BEGIN + parts[1] + END + "\n"


def log(out: str, message: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = f"[{stamp} UTC] {message}"
    print(line, flush=True)
    with open(os.path.join(out, "driver.log"), "a") as f:
        f.write(line + "\n")


def run_step(out: str, name: str, command: list, cwd: str, env: dict, lock: str) -> float:
    """Runs `command` (under `flock lock`), its output appended to <out>/logs/<name>.log; returns its wall time."""
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    stamp = os.path.join(out, "logs", f"{name}.started")
    # Under the lock, the step first writes the time it got the lock, so its own wall time excludes the wait.
    started = ["sh", "-c", 'date +%s.%N > "$0" && exec "$@"', stamp]
    full = (["flock", lock] if lock else []) + started + command
    log(out, f"start {name}: {' '.join(command)}")
    start = time.time()
    with open(os.path.join(out, "logs", f"{name}.log"), "a") as output:
        done = subprocess.run(full, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
    end = time.time()
    try:
        with open(stamp) as f:
            got_lock = float(f.read().strip())
    except (OSError, ValueError):
        got_lock = start
    seconds, waited = end - got_lock, got_lock - start
    timings_path = os.path.join(out, "timings.json")
    timings = json.load(open(timings_path)) if os.path.exists(timings_path) else []
    load = os.getloadavg()
    timings.append(
        {"step": name, "seconds": seconds, "waited_s": waited, "exit": done.returncode, "load_avg_at_end": load[:2]}
    )
    with open(timings_path, "w") as f:
        json.dump(timings, f, indent=1)
    log(out, f"end {name}: exit {done.returncode}, {seconds:.0f} s after {waited:.0f} s waiting for the lock")
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed with exit {done.returncode}; see {out}/logs/{name}.log")
    return seconds


def prepare_data(out: str) -> str:
    """<out>/home/.ogbench/data with links to the generated pair: HOME for the official processes (its standard
    loader, used by its evaluation envs, reads ~/.ogbench/data) and its --ogbench_dataset_dir."""
    source = os.path.expanduser(DATA_DIR)
    pair = [os.path.join(source, f"{DATASET}{suffix}.npz") for suffix in ("", "-val")]
    missing = [p for p in pair if not os.path.exists(p)]
    if missing:
        raise SystemExit(
            f"error: {missing[0]} is missing; generate the study's dataset first: python -m envs.generate "
            f"--dataset={DATASET} --episodes=200 --dir={DATA_DIR} --seed=0 --max_episode_steps=1001"
        )
    data = os.path.join(out, "home", ".ogbench", "data")
    os.makedirs(data, exist_ok=True)
    for path in pair:
        link = os.path.join(data, os.path.basename(path))
        if not os.path.islink(link):
            os.symlink(path, link)
    return data


def official_side(args, s: dict, seed: int, data: str) -> None:
    out = args.out
    save_dir = os.path.join(out, "official", f"seed{seed}")
    env = {**os.environ, "HOME": os.path.join(out, "home"), "WANDB_MODE": "disabled", "JAX_PLATFORMS": "cpu"}
    env.pop("PYTHONPATH", None)
    if args.stubs:  # The official code run by an environment without distrax / wandb (this project's): stubbed.
        env["PYTHONPATH"] = write_stubs(args.out)
    run_dir = official_run_dir(save_dir, seed)
    saved = checkpoints(run_dir)
    if s["train_steps"] not in saved:
        restore = None
        if saved:
            epoch = saved[-1]
            shutil.move(os.path.join(run_dir, "train.csv"), os.path.join(run_dir, f"train.until{epoch}.csv"))
            restore = (run_dir, epoch)
        command = official_train_command(args.official_python, s, seed, save_dir, data, restore)
        run_step(out, f"official-train-seed{seed}", command, args.official, env, args.lock)
        run_dir = official_run_dir(save_dir, seed)
    eval_dir = os.path.join(save_dir, "eval")
    if len(official_episodes(eval_dir)) < len(s["weights"]):
        command = [
            args.official_python,
            str(ROOT / "bench" / "parity_outcomes_official.py"),
            f"--checkout={args.official}",
            f"--run={run_dir}",
            f"--epoch={s['train_steps']}",
            f"--weights={weights_flag(s['weights'])}",
            f"--episodes={s['episodes']}",
            f"--envs={args.eval_envs}",
            f"--out={eval_dir}",
        ]
        run_step(out, f"official-eval-seed{seed}", command, args.official, env, args.lock)


def our_side(args, s: dict, seed: int) -> None:
    run_dir = os.path.join(args.out, "ours", f"seed{seed}")
    episodes = our_episodes(run_dir, s["train_steps"])
    if all(len(episodes.get(round(w, 6), [])) == s["episodes"] for w in s["weights"]):
        return
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run_step(args.out, f"ours-seed{seed}", our_command(s, seed, run_dir), str(ROOT), env, args.lock)


# Stand-ins for the two packages this project's environment lacks and the official main.py imports: distrax (only
# its Gaussian actors use it, not qgf) and wandb (disabled in these runs). Our own minimal stubs, nothing else.
PIN_STUBS = {
    "distrax": "Transformed = object\nMultivariateNormalDiag = Block = Tanh = None\n",
    "wandb": (
        "class _Anything:\n    def __init__(self, *args, **kwargs):\n        pass\n\n\n"
        "Image = Video = Histogram = Settings = _Anything\n\n\n"
        "class _Config(dict):\n    def update(self, *args, **kwargs):\n        pass\n\n\n"
        "config = _Config()\n\n\n"
        "class _Run:\n    config = config\n\n    def log(self, *args, **kwargs):\n        pass\n\n"
        "    def finish(self, *args, **kwargs):\n        pass\n\n\n"
        "def init(*args, **kwargs):\n    return _Run()\n\n\n"
        "def log(*args, **kwargs):\n    pass\n\n\n"
        "def finish(*args, **kwargs):\n    pass\n"
    ),
}


def write_stubs(out: str) -> str:
    """PIN_STUBS as packages under <out>/pins/stubs (returned: the folder to put on PYTHONPATH)."""
    stubs = os.path.join(out, "pins", "stubs")
    for name, text in PIN_STUBS.items():
        os.makedirs(os.path.join(stubs, name), exist_ok=True)
        with open(os.path.join(stubs, name, "__init__.py"), "w") as f:
            f.write(text)
    return stubs


def pins_check(args, s: dict) -> dict:
    """The official main.py run by THIS project's python (its pinned jax / flax): a short training (200 updates at
    the study's sizes on the same data) with an evaluation of w = 0 and 0.1 (2 episodes each, the official
    vectorised evaluation envs), distrax and wandb stubbed (PIN_STUBS). Written to <out>/pins.json."""
    import importlib.metadata

    where = os.path.join(args.out, "pins")
    stubs = write_stubs(args.out)
    short = {**s, "train_steps": 200, "log_every": 100, "save_every": 200, "episodes": 2, "weights": (0.0, 0.1)}
    command = official_train_command(sys.executable, short, 0, os.path.join(where, "run"), prepare_data(args.out))
    command = [c for c in command if not c.startswith(("--eval_interval", "--eval_vecenv_size"))]
    command += ["--eval_interval=200", "--eval_vecenv_size=2"]
    env = {**os.environ, "HOME": os.path.join(args.out, "home"), "PYTHONPATH": stubs, "JAX_PLATFORMS": "cpu"}
    versions = {m: importlib.metadata.version(m) for m in ("jax", "flax", "optax", "numpy")}
    try:
        run_step(args.out, "official-under-our-pins", command, args.official, env, args.lock)
        error = ""
    except RuntimeError:
        lines = open(os.path.join(args.out, "logs", "official-under-our-pins.log")).read().strip().splitlines()
        error = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "")
    run_dir = official_run_dir(os.path.join(where, "run"), 0)
    evaluation = read_csv(os.path.join(run_dir, "eval.csv")) if run_dir else []
    result = {"versions": versions, "error": error, "eval": evaluation[-1] if evaluation else {}}
    with open(os.path.join(args.out, "pins.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def pins_text(out: str) -> str:
    path = os.path.join(out, "pins.json")
    if not os.path.exists(path):
        return "Not checked yet (`--pins_check`)."
    with open(path) as f:
        pins = json.load(f)
    versions = ", ".join(f"{k} {v}" for k, v in pins["versions"].items())
    if pins["error"]:
        return f"Run by this project's python ({versions}), distrax and wandb stubbed: it failed: `{pins['error']}`."
    evaluated = ", ".join(f"{k} = {v}" for k, v in pins["eval"].items() if k.endswith("/success"))
    return (
        f"Run by this project's python ({versions}), with distrax and wandb stubbed (this environment has neither; "
        "qgf does not use distrax, and wandb is disabled): the official main.py trained 200 updates at the study's "
        "sizes on the same data and evaluated w = 0 and 0.1 (2 episodes each) with its vectorised evaluation envs "
        "without error "
        f"(`--pins_check`; its eval.csv: {evaluated or 'no success column'})."
    )


def official_side_text(current_jax: bool) -> str:
    if not current_jax:
        return "The official side ran in its own environment (its pins: jax / jaxlib 0.4.30, CPU)."
    import jax  # This project's, the one the official side ran under (`--stubs`).

    return (
        f"The official side ran under this project's python (jax {jax.__version__}), with distrax and wandb stubbed "
        "(`--stubs`); our side's runs are the ones of the comparison above."
    )


def section(result: dict, s: dict, seeds, figure: str, out: str, command: str, current_jax: bool = False) -> str:
    """The "Outcomes" section of docs/parity.md: what finished, the pooled table, per-seed successes, the figure
    (`current_jax`: the official side was run by this project's python, `--stubs`)."""
    done = finished_seeds(result, s["weights"], s["episodes"])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    flagged = [w for w, r in result["rows"].items() if r["difference"].get("success_beyond_2se")]
    timings_path = os.path.join(out, "timings.json")
    timings = json.load(open(timings_path)) if os.path.exists(timings_path) else []
    timing_lines = "\n".join(
        f"- `{t['step']}`: {t['seconds'] / 60:.1f} min "
        + (
            f"after {t['waited_s'] / 60:.1f} min waiting for the lock "
            if "waited_s" in t
            else "(waiting for the lock included) "
        )
        + f"(exit {t['exit']}; load average {t['load_avg_at_end'][0]:.1f} at its end)"
        for t in timings
    )
    pins_paragraph = "" if current_jax else f"**The official code under this project's pins.** {pins_text(out)}\n\n"
    return f"""_Generated by `{command}` at {when}; it rewrites only this part of the
section (between the generated-outcomes markers)._

Both codes trained `qgf` on {TASK} from the study's generated dataset ({DATA_DIR}: 200 + 20
episodes) with the study preset's settings ({dims(s["hidden"])} networks, batch {s["batch_size"]}, γ = {s["discount"]},
{s["train_steps"]:,} updates, chunks of {s["horizon"]}, {s["denoising_steps"]} Euler steps), and were evaluated at BC
(w = 0) and every weight of the study's grid, {s["episodes"]} episodes per weight and seed. How each side runs:
bench/parity_outcomes.py's docstring. {official_side_text(current_jax)}

**Finished seeds** (every weight evaluated): ours {done["ours"] or "none"}; official {done["official"] or "none"}
(asked for: {list(seeds)}). A weight's row pools the episodes of the seeds finished on that side; ± is the
standard error over those episodes (sample standard deviation / √n), so it does not count training-seed variation.
Δ = ours − official, ± √(s.e.₁² + s.e.₂²); **(> 2 s.e.)** marks a difference beyond two standard errors.
Weights where success differs beyond 2 s.e.: {", ".join(f"{w:g}" for w in flagged) or "none"}.

{table(result["rows"])}

Success (%) per seed, ours / official:

{per_seed_table(result["per_seed"], s["weights"])}

![training losses of both codes]({os.path.basename(figure)})

The figure: training losses logged every 1000 updates, each code's seeds (thin) and their mean (thick), log scale.
Ours logs the mean over the 500-update chunk ending at that step, the official main.py the loss of that one update's
batch, so the official curves are noisier by construction; their levels are what compares.

{pins_paragraph}Steps and their wall times (a shared 2-core machine with other jobs running: upper bounds, not speeds):

{timing_lines or "- none yet"}
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="a checkout of zhouzypaul/qgf@bc44a67")
    parser.add_argument("--official_python", required=True, help="python of an environment with the official pins")
    parser.add_argument("--out", required=True, help="where the runs and results go")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sides", default="official,ours", help="which codes to run (collecting reads both)")
    parser.add_argument("--eval_envs", type=int, default=10, help="the official evaluation's vectorised envs")
    parser.add_argument("--lock", default="/tmp/bg.lock", help="each step runs under `flock LOCK` ('' for none)")
    parser.add_argument("--doc", default="", help="write the Outcomes section into this file (docs/parity.md)")
    parser.add_argument("--figure", default="", help="the loss-curve PNG (default: next to --doc, or in --out)")
    parser.add_argument("--collect_only", action="store_true", help="only collect what exists")
    parser.add_argument("--pins_check", action="store_true", help="only run the official main.py under our pins")
    parser.add_argument(
        "--stubs",
        action="store_true",
        help="stub distrax and wandb for the official side (to run it with this project's python: its jax / flax)",
    )
    parser.add_argument(
        "--ours_out",
        default="",
        help="read our side's runs from this --out instead (to compare the --stubs runs with ours)",
    )
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)
    args.ours_out = os.path.abspath(args.ours_out) if args.ours_out else ""
    args.official = os.path.abspath(args.official)
    os.makedirs(args.out, exist_ok=True)
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    sides = [x for x in args.sides.split(",") if x]
    s = study_settings()
    figure_name = "parity_losses_current_jax.png" if args.stubs else "parity_losses.png"
    figure = args.figure or (
        os.path.join(os.path.dirname(args.doc), figure_name) if args.doc else os.path.join(args.out, figure_name)
    )
    command = "python -m bench.parity_outcomes --official=<checkout> --official_python=<python> --out=<dir> " + (
        f"--seeds={args.seeds}"
        + (" --stubs" if args.stubs else "")
        + (" --ours_out=<dir of the runs above>" if args.ours_out else "")
        + (f" --doc={args.doc}" if args.doc else "")
    )

    def write_results() -> None:
        result = collect(args.out, seeds, s, args.ours_out)
        serialisable = {
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
            "rows": {f"{w:g}": r for w, r in result["rows"].items()},
            "finished": finished_seeds(result, s["weights"], s["episodes"]),
            "per_seed": {
                str(seed): {side: {f"{w:g}": e for w, e in v.items()} for side, v in sides_.items()}
                for seed, sides_ in result["per_seed"].items()
            },
        }
        with open(os.path.join(args.out, "outcomes.json"), "w") as f:
            json.dump(serialisable, f, indent=1)
        text = section(result, s, seeds, figure, args.out, command, current_jax=args.stubs)
        with open(os.path.join(args.out, "outcomes.md"), "w") as f:
            f.write(text)
        if any(c[label] for side in result["curves"].values() for c in side.values() for label, _, _ in CURVES):
            plot_curves(result["curves"], figure)
        if args.doc:
            doc = Path(args.doc)
            doc.write_text(replace_section(doc.read_text() if doc.exists() else "", text, current_jax=args.stubs))

    if args.pins_check:
        print(json.dumps(pins_check(args, s), indent=1))
        return 0
    if not args.collect_only:
        data = prepare_data(args.out)
        for seed in seeds:
            if "official" in sides:
                official_side(args, s, seed, data)
                write_results()
            if "ours" in sides:
                our_side(args, s, seed)
                write_results()
    write_results()
    log(
        args.out,
        "collected: "
        + json.dumps(finished_seeds(collect(args.out, seeds, s, args.ours_out), s["weights"], s["episodes"])),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
