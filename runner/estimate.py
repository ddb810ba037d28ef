"""How long a run will take, said before it starts and measured on this machine as it goes.

Before the data is loaded the run says what it will do (`plan_line`): the data it must first download or
generate, the updates, the evaluations. The time of the updates is measured from the chunks of updates the train
loop already times (the first chunk, which compiles, is left out), so taking it adds no device synchronisation;
that of an evaluation once the first has run. Nothing is guessed: a time not measured yet is said to be unknown.
"""

LONG_ON_CPU_S = 3 * 3600  # a run's updates longer than this on a CPU get a hint of what to use instead
CPU_HINT = (
    "note: that is long for a CPU: a GPU runs it far faster (pip install -r requirements-cuda12.txt; the paper's "
    "500k updates took 13 min on one H100), or --preset=study trains docs/study.md's sizes, made for a CPU"
)


def format_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 20 min`, `4 d 6 h`."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def evaluation_steps(after: int, train_steps: int, eval_every: int) -> list[int]:
    """The steps above `after` at which the run evaluates: every `eval_every`, and the last step."""
    steps = list(range((after // eval_every + 1) * eval_every, train_steps + 1, eval_every))
    if train_steps > after and train_steps not in steps:
        steps.append(train_steps)
    return steps


def plan_line(data: str, train_steps: int, steps_per_call: int, evaluations: int, weights: int, episodes: int) -> str:
    """What a training run will do, before it loads anything; `data` is what it must first fetch (or "")."""
    first = f"{data}; then " if data else ""
    return (
        f"This run: {first}{train_steps} updates ({steps_per_call} per compiled call; their time is measured here "
        f"after the first compiled chunk), and {evaluations} evaluation(s) of {weights} weight(s) × {episodes} "
        "episodes (their time is stated once the first has run)."
    )


def run_plan_line(plan) -> str:
    """`plan_line` of a runner.config.RunPlan that trains."""
    from runner.run_data import data_to_obtain

    run = plan.run
    evaluations = len(evaluation_steps(0, run.train_steps, run.eval_every))
    data = data_to_obtain(plan.env_name, run, plan.data)
    return plan_line(data, run.train_steps, run.steps_per_call, evaluations, len(plan.weights), run.eval_episodes)


class Estimate:
    """The time left of a training run, from the chunk timings and evaluation times the train loop has.

    `chunk(step, seconds)` after each chunk of updates (the first, which compiles, is not counted) and
    `evaluation(seconds)` after each evaluation return a line to print when the estimate is first measured or
    changes in kind (an evaluation measured); `postfix(step)` is the progress bar's remaining time of the run."""

    def __init__(self, train_steps: int, eval_every: int, on_cpu: bool):
        self.train_steps, self.eval_every, self.on_cpu = train_steps, eval_every, on_cpu
        self.chunks = 0
        self.timed_steps, self.timed_seconds = 0, 0.0
        self.eval_seconds = None  # the last evaluation's

    def rate(self) -> float | None:
        """Updates per second, measured on the chunks after the first (None before)."""
        return self.timed_steps / self.timed_seconds if self.timed_seconds > 0 else None

    def left(self, step: int) -> float | None:
        """Seconds left for the whole run after `step`: updates and evaluations (None while not measured)."""
        rate = self.rate()
        if rate is None:
            return None
        seconds = (self.train_steps - step) / rate
        evaluations = len(evaluation_steps(step, self.train_steps, self.eval_every))
        if evaluations and self.eval_seconds is None:
            return None
        return seconds + evaluations * (self.eval_seconds or 0.0)

    def chunk(self, step: int, steps: int, seconds: float) -> list[str]:
        """A chunk of `steps` updates ending at `step` took `seconds`; the lines to print (the first estimate)."""
        self.chunks += 1
        if self.chunks == 1:  # it compiled: not a measure of the updates
            return []
        self.timed_steps += steps
        self.timed_seconds += seconds
        if self.chunks != 2 or step >= self.train_steps:
            return []
        updates = (self.train_steps - step) / self.rate()
        evaluations = len(evaluation_steps(step, self.train_steps, self.eval_every))
        if self.eval_seconds is not None or not evaluations:
            evaluated = (
                f", plus {evaluations} evaluation(s) of about {format_duration(self.eval_seconds)} each"
                if evaluations
                else ""
            )
            whole = f"; about {format_duration(self.left(step))} in all" if evaluations else ""
            evaluation_text = f"{evaluated}{whole}"
        else:
            evaluation_text = f", plus {evaluations} evaluation(s), whose time is stated once the first has run"
        lines = [
            f"Estimate, measured here: {self.rate():.3g} updates/s, so the {self.train_steps - step} updates left "
            f"take about {format_duration(updates)}{evaluation_text}."
        ]
        if self.on_cpu and updates > LONG_ON_CPU_S:
            lines.append(CPU_HINT)
        return lines

    def evaluation(self, step: int, seconds: float) -> list[str]:
        """The evaluation at `step` took `seconds`; the line restating the run's time left (the first one only)."""
        first = self.eval_seconds is None
        self.eval_seconds = seconds
        left = self.left(step)
        if not first or step >= self.train_steps or left is None:
            return []
        evaluations = len(evaluation_steps(step, self.train_steps, self.eval_every))
        return [
            f"Estimate: an evaluation takes about {format_duration(seconds)} here, so the rest of the run "
            f"({self.train_steps - step} updates and {evaluations} evaluation(s)) takes about "
            f"{format_duration(left)}."
        ]

    def postfix(self, step: int) -> str:
        """The progress bar's remaining time of the whole run (updates and evaluations), or what is not known."""
        left = self.left(step)
        if left is not None:
            return format_duration(left)
        if self.rate() is None:
            return "measuring"
        return f"{format_duration((self.train_steps - step) / self.rate())} + evaluations"
