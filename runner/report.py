"""The report of an evaluation: success per guidance weight as a markdown table, a terminal table and a plot."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from runner.evaluation import headline_rows  # noqa: E402
from runner.videos import format_video_links  # noqa: E402

ESTIMATOR_METHODS = {"qgf": "QGF", "jacobian": "QGF-Jacobian", "noisy": "QFQL", "bptt": "BPTT", "none": "BC"}
# Agents whose policy is their own: one evaluation, no guidance weight (EDP's guidance is optional, on top).
OWN_POLICY_METHODS = {"fql": "FQL", "qam": "QAM", "dac": "DAC", "qsm": "QSM", "edp": "EDP", "cfgrl": "CFGRL"}


def method_label(
    agent_name: str, estimator: str, best_of_n: int = 1, grad_steps: int = 0, grad_step_size: float = 0.0
) -> str:
    """The method an evaluation is, in the paper's words: `QGF`, `QFQL`, `BC`, `best-of-16`,
    `GradStep L = 3, α = 0.01`, `QGF + best-of-4`, `FQL`, `EDP + QGF guidance`, `Robust-Q`, ..."""
    if agent_name in OWN_POLICY_METHODS:
        name = OWN_POLICY_METHODS[agent_name]
        if agent_name == "edp" and estimator != "none":
            name += f" + {ESTIMATOR_METHODS[estimator]} guidance"
    elif agent_name == "robust_q":
        name = "Robust-Q"
    else:
        name = ESTIMATOR_METHODS[estimator]
        if agent_name == "gcqgf":
            name = f"goal-conditioned {name}"
    if grad_steps:
        step = f"GradStep L = {grad_steps}, α = {grad_step_size:g}"
        name = step if name == "BC" else f"{name} + {step}"
    if best_of_n > 1:
        name = f"best-of-{best_of_n}" if name == "BC" else f"{name} + best-of-{best_of_n}"
    return name


def zero_weight_label(
    agent_name: str, estimator: str = "none", best_of_n: int = 1, grad_steps: int = 0, grad_step_size: float = 0.0
) -> str:
    """What the row of guidance weight 0 is: BC (or its best-of-N, or GradStep after it) for the guided flow agents,
    the method's own policy (`— (FQL)`) for an agent with no guidance weight."""
    if agent_name in OWN_POLICY_METHODS:
        own = method_label(agent_name, "none", best_of_n)
        return f"— ({own})" if estimator == "none" else f"0 ({own})"
    guided = "robust_q" if agent_name == "robust_q" else "qgf"
    return f"0 ({method_label(guided, 'none', best_of_n, grad_steps, grad_step_size)})"


def weight_label(weight: float, best_of_n: int = 1, zero: str | None = None) -> str:
    """A weight, and for w = 0 what its row is (`zero`, else BC or, with best-of-N, the highest-Q of N BC samples:
    not BC any more)."""
    if weight != 0:
        return f"{weight:g}"
    return zero or zero_weight_label("qgf", "none", best_of_n)


def best_weight(rows: list[dict]) -> float | None:
    """The positive guidance weight of highest success, the smaller on a tie (scripts.table.choose_weight's rule);
    None when nothing distinguishes the positive weights (fewer than two, or every one at the same success, e.g.
    all at 0 %). w = 0 is BC's row, which a guided method's best never reports."""
    success = {r["guidance_weight"]: r["success"] for r in rows if r["guidance_weight"] > 0}
    if len(set(success.values())) < 2:
        return None
    return max(sorted(success), key=lambda w: success[w])


def format_table(rows: list[dict], best_of_n: int = 1, zero: str | None = None) -> str:
    lines = [
        "| guidance weight | success | ± s.e. | return | ± s.e. | length | episodes |",
        "|---|---|---|---|---|---|---|",
    ]
    best = best_weight(rows)
    for r in rows:
        mark = " ◀ best" if r["guidance_weight"] == best else ""
        lines.append(
            f"| {weight_label(r['guidance_weight'], best_of_n, zero)} | {r['success']:.3f}{mark} | "
            f"{r['success_stderr']:.3f} | {r['return']:.1f} | {r.get('return_stderr', float('nan')):.1f} | "
            f"{r['length']:.0f} | {r['episodes']} |"
        )
    return "\n".join(lines)


def format_task_table(rows: list[dict], best_of_n: int = 1, zero: str | None = None) -> str:
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
        lines.append(f"| {weight_label(w, best_of_n, zero)} | {cells} | {success[(w, 'all')]:.3f} |")
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


def success_figure(rows: list[dict], method: str, env_name: str, best_of_n: int = 1, zero: str | None = None):
    """success_vs_weight.png's figure: success per weight (headline rows), its error bars labelled as standard
    errors, titled by the method (`QGF on <env>`)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    positions = range(len(rows))
    ax.errorbar(
        positions,
        [r["success"] for r in rows],
        yerr=[r["success_stderr"] for r in rows],
        marker="o",
        capsize=3,
        label="success ± standard error",
    )
    ax.set_xticks(list(positions), [weight_label(r["guidance_weight"], best_of_n, zero) for r in rows])
    ax.set_xlabel("guidance weight w")
    ax.set_ylabel(f"success ({rows[0]['episodes']} episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{method} on {env_name}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


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
    grad_steps: int = 0,
    grad_step_size: float = 0.0,
    videos: list[dict] | None = None,
) -> str:
    """Writes report.md and success_vs_weight.png into `run_dir`; returns the markdown table(s). `videos`
    (runner.videos.write_videos' entries) are linked in a section of their own."""
    rows = headline_rows(all_rows)
    zero = zero_weight_label(agent_name, estimator, best_of_n, grad_steps, grad_step_size)
    method = method_label(agent_name, estimator, best_of_n, grad_steps, grad_step_size)
    table = format_table(rows, best_of_n, zero)
    if len(rows) != len(all_rows):
        table += "\n\nSuccess per evaluation task:\n\n" + format_task_table(all_rows, best_of_n, zero)
    text = (
        f"# {method}: {agent_name} on {env_name}, step {step}\n\n"
        f"Method: {method} (agent `{agent_name}`, estimator `{estimator}`, best-of-{best_of_n}"
        + (f", GradStep L = {grad_steps}, α = {grad_step_size:g}" if grad_steps else "")
        + "). Every weight ran the same reset seeds; "
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

    fig = success_figure(rows, method, env_name, best_of_n, zero)
    fig.savefig(os.path.join(run_dir, "success_vs_weight.png"), dpi=120)
    plt.close(fig)
    return table
