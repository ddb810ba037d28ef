"""What a puzzle task's reward asks for: pressing nothing or solving, per discount.

    python -m scripts.puzzle_costs --env=puzzle-3x3-play-singletask-task2-v0

A single-task puzzle's reward is minus the number of lights that differ from the goal, every step, and success ends
the episode. From the task's start and goal (OGBench's task list) this finds the fewest presses that solve it (a
press toggles the button and its four neighbours, so the order does not change the end state but does change the
lights wrong on the way), and from the dataset how many steps the oracle takes between two presses. With T steps per
press and the goal held at reward 0 afterwards, solving costs sum_k wrong_k * sum_{t=kT}^{(k+1)T-1} gamma^t in
discounted reward (wrong_k: lights wrong before press k+1, in the cheapest order), while never pressing costs
wrong_0 / (1 - gamma). docs/study.md (part 2) reads the guided methods' "press nothing" against these numbers.
"""

import argparse
import itertools
import os

import numpy as np

from envs.datasets import dataset_paths, make_env
from envs.generate import quiet_known_warnings
from envs.specs import parse_name


def press(states: np.ndarray, button: int, rows: int, cols: int) -> np.ndarray:
    """The button states after pressing `button` (row-major): it and its four neighbours toggle."""
    states = states.copy()
    x, y = divmod(button, cols)
    for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        if 0 <= x + dx < rows and 0 <= y + dy < cols:
            states[(x + dx) * cols + y + dy] ^= 1
    return states


def fewest_presses(start: np.ndarray, goal: np.ndarray, rows: int, cols: int) -> tuple:
    """The smallest set of buttons whose presses turn `start` into `goal` (pressing one twice undoes it, so a
    solution is a set); the first found of that size."""
    buttons = range(rows * cols)
    for size in range(len(buttons) + 1):
        for subset in itertools.combinations(buttons, size):
            states = start
            for button in subset:
                states = press(states, button, rows, cols)
            if np.array_equal(states, goal):
                return subset
    raise ValueError("the goal cannot be reached from the start")


def wrong_lights_on_the_way(start, goal, order, rows: int, cols: int) -> list:
    """Lights wrong before each press of `order` (the start's first; the goal's 0 after the last is left out)."""
    states, wrong = start, []
    for button in order:
        wrong.append(int(np.sum(states != goal)))
        states = press(states, button, rows, cols)
    return wrong


def solving_cost(wrong: list, steps_per_press: int, gamma: float) -> float:
    """Discounted cost of `wrong[k]` lights wrong for the k-th stretch of `steps_per_press` steps, then 0."""
    per_step = np.repeat(wrong, steps_per_press)
    return float(np.sum(per_step * gamma ** np.arange(len(per_step))))


def staying_cost(wrong_at_start: int, gamma: float) -> float:
    return wrong_at_start / (1.0 - gamma)


# Orders are enumerated: 9 presses (3x3 task 4) make 362,880 of them, about 20 s per discount here.
MOST_PRESSES = 9


def cheapest_order(start, goal, presses: tuple, rows: int, cols: int, steps_per_press: int, gamma: float) -> tuple:
    """The order of `presses` whose lights wrong on the way cost least at `gamma`: (order, wrong lights)."""
    if len(presses) > MOST_PRESSES:
        raise ValueError(f"{len(presses)} presses: more than the {MOST_PRESSES} whose orders can be enumerated")
    orders = [
        (order, wrong_lights_on_the_way(start, goal, order, rows, cols)) for order in itertools.permutations(presses)
    ]
    return min(orders, key=lambda o: solving_cost(o[1], steps_per_press, gamma))


def steps_between_presses(button_states: np.ndarray, terminals: np.ndarray) -> np.ndarray:
    """Steps between consecutive changes of the button states within each recorded episode."""
    ends = np.flatnonzero(terminals)
    gaps = []
    for start, end in zip(np.r_[0, ends[:-1] + 1], ends, strict=True):
        changed = np.flatnonzero(np.any(button_states[start + 1 : end + 1] != button_states[start:end], axis=1))
        gaps.append(np.diff(changed))
    return np.concatenate(gaps)


def break_even_steps(wrong: list, gamma: float, longest: int = 1000) -> int | None:
    """The fewest steps per press from which solving costs more than never pressing (None: not up to `longest`)."""
    stay = staying_cost(wrong[0], gamma)
    return next((t for t in range(1, longest + 1) if solving_cost(wrong, t, gamma) > stay), None)


def start_and_goal(env_name: str) -> tuple[np.ndarray, np.ndarray]:
    """A single-task puzzle's button states at its start and at its goal (OGBench's task list)."""
    env = make_env(env_name)
    task = env.unwrapped.task_infos[parse_name(env_name).task_id - 1]
    env.close()
    return task["init_button_states"].astype(int), task["goal_button_states"].astype(int)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="puzzle-3x3-play-singletask-task2-v0")
    parser.add_argument("--dataset_dir", default="~/.ogbench/data/qgf-study-1000ep")
    parser.add_argument("--discounts", default="0.99,0.999")
    args = parser.parse_args()
    quiet_known_warnings()

    name = parse_name(args.env)
    if not (name.family == "puzzle-3x3" and name.singletask and name.task_id):
        # Larger boards need too many presses to enumerate their orders (4x4 tasks take up to 16).
        raise SystemExit(f"error: --env={args.env} is not a puzzle-3x3 task, e.g. puzzle-3x3-play-singletask-task2-v0")
    rows, cols = 3, 3
    start, goal = start_and_goal(args.env)
    path = os.path.expanduser(dataset_paths(args.env, args.dataset_dir)[0])
    if not os.path.exists(path):
        raise SystemExit(
            f"error: no dataset at {path}; pass the --dataset_dir that holds it, or generate it with "
            f"python -m envs.generate --dataset={name.dataset_name} --dir={args.dataset_dir}"
        )
    data = np.load(path)
    gaps = steps_between_presses(data["button_states"], data["terminals"])
    steps = int(round(float(np.median(gaps))))
    presses = fewest_presses(start, goal, rows, cols)
    print(
        f"{args.env}: start {start.tolist()}, goal {goal.tolist()} ({rows}x{cols}, {int(np.sum(start != goal))} wrong)"
    )
    print(f"fewest presses: {len(presses)} (buttons {', '.join(map(str, presses))})")
    print(
        f"steps between presses in {path}: median {steps:g}, "
        f"10th-90th percentile {np.percentile(gaps, 10):g}-{np.percentile(gaps, 90):g} ({len(gaps)} gaps)"
    )
    for gamma in (float(g) for g in args.discounts.split(",")):
        order, wrong = cheapest_order(start, goal, presses, rows, cols, steps, gamma)
        stay, solve = staying_cost(wrong[0], gamma), solving_cost(wrong, steps, gamma)
        better = "solving" if solve < stay else "pressing nothing"
        even = break_even_steps(wrong, gamma)
        beyond = f"from {even} steps per press" if even else "at no number of steps per press up to 1000"
        print(
            f"gamma {gamma:g}: never pressing costs {stay:.1f}; solving in the order {order} (lights wrong "
            f"{wrong}, then 0) costs {solve:.1f} at {steps:g} steps per press, so {better} scores better "
            f"(solving costs more {beyond})"
        )


if __name__ == "__main__":
    main()
