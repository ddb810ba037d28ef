"""The report of an evaluation: success per guidance weight as a markdown table, a terminal table and a plot."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from runner.evaluation import headline_rows  # noqa: E402
from runner.videos import format_video_links  # noqa: E402


def weight_label(weight: float, best_of_n: int = 1) -> str:
    """Weight 0 is plain BC, or, with best-of-N, the highest-Q of N BC samples: not BC any more."""
    if weight != 0:
        return f"{weight:g}"
    return "0 (BC)" if best_of_n == 1 else f"0 (best-of-{best_of_n})"


def format_table(rows: list[dict], best_of_n: int = 1) -> str:
    lines = [
        "| guidance weight | success | ± s.e. | return | ± s.e. | length | episodes |",
        "|---|---|---|---|---|---|---|",
    ]
    # 'best' among positive weights only: w = 0 is BC's row, which a guided method's best never reports.
    guided = [r for r in rows if r["guidance_weight"] > 0]
    best = max(guided, key=lambda r: r["success"]) if len(rows) > 1 and guided else None
    for r in rows:
        mark = " ◀ best" if r is best else ""
        lines.append(
            f"| {weight_label(r['guidance_weight'], best_of_n)} | {r['success']:.3f}{mark} | "
            f"{r['success_stderr']:.3f} | {r['return']:.1f} | {r.get('return_stderr', float('nan')):.1f} | "
            f"{r['length']:.0f} | {r['episodes']} |"
        )
    return "\n".join(lines)


def format_task_table(rows: list[dict], best_of_n: int = 1) -> str:
    """Success per weight (rows) and evaluation task (columns), for goal-conditioned envs."""
    tasks = [t for t in dict.fromkeys(r["task"] for r in rows) if t != "all"]
    weights = list(dict.fromkeys(r["guidance_weight"] for r in rows))
    success = {(r["guidance_weight"], r["task"]): r["success"] for r in rows}
    lines = [
        "| guidance weight | " + " | ".join(f"task {t}" for t in tasks) + " | mean |",
        "|---" * (len(tasks) + 2) + "|",
    ]
    for w in weights:
        cells = " | ".join(f"{success[(w, t)]:.2f}" for t in tasks)
        lines.append(f"| {weight_label(w, best_of_n)} | {cells} | {success[(w, 'all')]:.3f} |")
    return "\n".join(lines)


def format_flops(flops: float | None) -> str:
    """The report's compute line: FLOPs of one decision (one action chunk for one environment)."""
    if flops is None:
        return "FLOPs per decision: not available (no XLA cost analysis on this backend)."
    return (
        f"FLOPs per decision (one action chunk, one environment; XLA cost analysis of the compiled policy, "
        f"loops unrolled): {flops:.4g}."
    )


# What each agent.mask_convention means, for reports (None: a goal-conditioned agent, whose masks come from goals).
MASK_DESCRIPTIONS = {
    "success": "`success` (OGBench's: bootstrapping stops on states that solve the task)",
    "trajectory_end": "`trajectory_end` (1 − terminals, the official 100M loader's: bootstrapping goes on through "
    "success and stops at the end of each recorded trajectory)",
    None: "from the relabelled goals (goal-conditioned)",
}


def format_data(data: dict) -> str:
    """The report's data line: what the run trained on (runner.config.describe_dataset's kind and path, when the
    run's config.json names them) and the transitions loaded (with slices: the first slice's times their number)."""
    slices = data.get("slices", 1)
    transitions = f"{data['transitions']:,} transitions"
    counted = f"{slices} slices, about {transitions}" if slices > 1 else transitions
    if "kind" not in data:  # A run written before config.json named its data.
        return f"Training data: {counted}."
    return f"Training data: {data['kind']}, `{data['path']}` ({counted})."


def write_report(
    run_dir: str,
    all_rows: list[dict],
    *,
    step: int,
    env_name: str,
    agent_name: str,
    estimator: str,
    best_of_n: int,
    mask_convention: str | None,
    command: str,
    data_line: str = "",
    videos: list[dict] | None = None,
) -> str:
    """Writes report.md and success_vs_weight.png into `run_dir`; returns the markdown table(s). `videos`
    (runner.videos.write_videos' entries) are linked in a section of their own."""
    rows = headline_rows(all_rows)
    table = format_table(rows, best_of_n)
    if len(rows) != len(all_rows):
        table += "\n\nSuccess per evaluation task:\n\n" + format_task_table(all_rows, best_of_n)
    text = (
        f"# {agent_name} on {env_name}, step {step}\n\n"
        f"Estimator `{estimator}`, best-of-{best_of_n}. Every weight ran the same reset seeds; "
        "'best' is chosen on these same episodes, so it is optimistic: choose a weight on held-out seeds "
        "before quoting one number.\n\n"
        + (f"{data_line}\n\n" if data_line else "")
        + f"Bootstrap masks of the training data: {MASK_DESCRIPTIONS[mask_convention]}.\n\n"
        f"{format_flops(rows[0].get('flops_per_decision'))}\n\n"
        f"{table}\n\nCommand:\n\n    {command}\n"
    )
    if videos:
        text += "\n" + format_video_links(videos) + "\n"
    tmp = os.path.join(run_dir, "report.md.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(run_dir, "report.md"))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    positions = range(len(rows))
    ax.errorbar(
        positions, [r["success"] for r in rows], yerr=[r["success_stderr"] for r in rows], marker="o", capsize=3
    )
    ax.set_xticks(list(positions), [weight_label(r["guidance_weight"], best_of_n) for r in rows])
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel(f"success ({rows[0]['episodes']} episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{agent_name} ({estimator}) on {env_name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "success_vs_weight.png"), dpi=120)
    plt.close(fig)
    return table
