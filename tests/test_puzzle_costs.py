"""scripts.puzzle_costs: Lights Out presses, the press timing of a dataset, and the discounted costs of pressing
nothing against solving, on known answers."""

import numpy as np

from scripts.puzzle_costs import (
    break_even_steps,
    cheapest_order,
    fewest_presses,
    press,
    solving_cost,
    staying_cost,
    steps_between_presses,
    wrong_lights_on_the_way,
)

ALL_LIT = np.ones(9, int)
TOP_LEFT_DARK = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1])  # puzzle-3x3 task 2's goal


def test_a_press_toggles_the_button_and_its_neighbours_inside_the_grid():
    assert press(np.zeros(9, int), 4, 3, 3).tolist() == [0, 1, 0, 1, 1, 1, 0, 1, 0]
    assert press(np.zeros(9, int), 0, 3, 3).tolist() == [1, 1, 0, 1, 0, 0, 0, 0, 0]
    assert press(np.zeros(6, int), 5, 2, 3).tolist() == [0, 0, 1, 0, 1, 1]  # 2 rows, 3 columns


def test_task_two_needs_five_presses_and_passes_through_more_wrong_lights_than_it_starts_with():
    presses = fewest_presses(ALL_LIT, TOP_LEFT_DARK, 3, 3)
    assert sorted(presses) == [0, 2, 5, 6, 7]  # 3x3 Lights Out has one solution per state pair
    state = ALL_LIT
    for button in presses:
        state = press(state, button, 3, 3)
    assert np.array_equal(state, TOP_LEFT_DARK)
    wrong = wrong_lights_on_the_way(ALL_LIT, TOP_LEFT_DARK, presses, 3, 3)
    assert wrong[0] == 1 and min(wrong[1:]) >= 2


def test_costs_are_the_geometric_sums():
    gamma, steps, wrong = 0.97, 7, [1, 4, 2]
    segment = (1 - gamma**steps) / (1 - gamma)  # one stretch of `steps` steps
    expected = sum(w * gamma ** (k * steps) * segment for k, w in enumerate(wrong))
    assert np.isclose(solving_cost(wrong, steps, gamma), expected)
    assert solving_cost(wrong, steps, 1.0) == 7 * sum(wrong)
    assert np.isclose(staying_cost(3, 0.99), 300.0)


def test_the_break_even_is_where_solving_starts_to_cost_more():
    wrong, gamma = [1, 2, 3, 3, 3], 0.99
    even = break_even_steps(wrong, gamma)
    assert solving_cost(wrong, even, gamma) > staying_cost(1, gamma) >= solving_cost(wrong, even - 1, gamma)
    assert break_even_steps([6, 3], gamma) is None  # six lights off: solving is always cheaper than waiting


def test_the_cheapest_order_at_least_matches_every_other_order():
    presses = fewest_presses(ALL_LIT, TOP_LEFT_DARK, 3, 3)
    order, wrong = cheapest_order(ALL_LIT, TOP_LEFT_DARK, presses, 3, 3, 32, 0.99)
    assert sorted(order) == sorted(presses)
    reverse = wrong_lights_on_the_way(ALL_LIT, TOP_LEFT_DARK, tuple(reversed(presses)), 3, 3)
    assert solving_cost(wrong, 32, 0.99) <= solving_cost(reverse, 32, 0.99)


def test_steps_between_presses_are_counted_within_each_episode():
    states = np.zeros((12, 2), int)
    states[3:, 0] = 1  # a press at row 3
    states[8:, 1] = 1  # and at row 8: 5 steps apart
    states[10:, 0] = 0  # the second episode (rows 10, 11) starts with other states: not a press
    terminals = np.zeros(12, bool)
    terminals[[9, 11]] = True
    assert steps_between_presses(states, terminals).tolist() == [5]
