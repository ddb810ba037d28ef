"""The paper's remaining comparisons: GradStep, Robust-Q and CFGRL (known answers), and the per-family table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_fql_edp import BEST, STATE, tiny_config, toy_batch, train

import agents
import configs
import guidance
from agents.cfgrl import labelled_flow_loss
from agents.losses import flow_interpolation
from agents.robust_q import noise_conditioned_critic_loss
from guidance.gradient_steps import gradient_steps


def test_family_table_holds_every_methods_coefficients_and_presets_set_them():
    table = configs.FAMILY_SETTINGS
    # BASELINES.md §2.6 and §3.7, by family: GradStep (α, L), DAC α; FQL α and EDP bc_weight as before.
    assert [(table[f].grad_step_size, table[f].grad_steps) for f in ("cube-triple", "puzzle-4x4", "scene")] == [
        (0.01, 3),
        (0.01, 3),
        (0.01, 5),
    ]
    families = ("cube-triple", "cube-quadruple", "puzzle-4x4", "scene")
    assert [table[f].dac_alpha for f in families] == [100, 100, 300, 100]
    assert {(row.qam_inv_temp, row.qsm_inv_temp, row.qsm_alpha) for row in table.values()} == {(0.1, 0.1, 10.0)}
    assert table["puzzle-4x6"] == table["puzzle-4x4"]  # Families outside the paper take puzzle-4x4's values.
    for column, (agent, field) in configs.FAMILY_FIELDS.items():
        if agent in configs.AGENT_CONFIGS:  # Agents still being written may not be registered yet.
            assert configs.get_config(agent, "puzzle-4x4")[field] == getattr(table["puzzle-4x4"], column)
    # GradStep stays off under every preset; CFGRL keeps its own guidance grid under demo and family presets.
    assert configs.get_config("qgf", "scene").grad_steps == 0
    for preset in ("demo", "scene", "demo+scene"):
        assert configs.get_config("cfgrl", preset).guidance_weights == configs.CFGRL_GUIDANCE_WEIGHTS
    assert configs.get_config("robust_q", "demo+scene").guidance_weights == configs.PAPER_GUIDANCE_WEIGHTS


def quadratic_critic(center, curvature):
    """Q(s, a) = −(k/2) ‖a − c‖² per sample, so ∇_a Q = −k (a − c)."""
    return lambda observations, a: -0.5 * curvature * jnp.sum(jnp.square(a - center), axis=-1)


def test_gradstep_with_no_steps_is_plain_flow_sampling():
    noise = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    velocity_fn = lambda obs, a, t: 0.5 - a * t[:, None]  # noqa: E731
    critic_fn = quadratic_critic(jnp.array([0.9, -0.9, 0.0]), 2.0)
    kwargs = dict(guidance_weight=0.0, estimator="none", steps=4)
    plain = guidance.sample(velocity_fn, critic_fn, None, noise, **kwargs)
    refined = guidance.sample(velocity_fn, critic_fn, None, noise, grad_steps=0, grad_step_size=0.3, **kwargs)
    a = np.asarray(noise, np.float64)  # Euler integration in float64.
    for k in range(4):
        a = a + 0.25 * (0.5 - a * k / 4)
    np.testing.assert_allclose(np.asarray(refined), np.clip(a, -1, 1), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(refined), np.asarray(plain))


def test_gradstep_moves_the_action_by_the_computed_steps_and_best_of_n_ranks_the_refined_actions():
    center, curvature, alpha = np.array([0.9, -0.9, 0.2]), 4.0, 0.1
    critic_fn = quadratic_critic(jnp.asarray(center, jnp.float32), curvature)
    start = np.array([[0.0, 0.0, 0.0], [0.95, -0.5, 1.0]])
    moved = gradient_steps(critic_fn, None, jnp.asarray(start, jnp.float32), step_size=alpha, num_steps=2)
    expected = start.copy()  # a ← clip(a − α k (a − c)): with α k = 0.4, a moves 40% of the way to c per step.
    for _ in range(2):
        expected = np.clip(expected - alpha * curvature * (expected - center), -1, 1)
    np.testing.assert_allclose(np.asarray(moved), expected, atol=1e-6)
    np.testing.assert_allclose(expected[0], 0.64 * center)  # By hand: the distance to c shrinks by 0.6 twice.
    # A step that overshoots is clipped: α k = 2 reflects a through c, 2c − a = (2.3, −1.3, 0.4) → (1, −1, 0.4).
    overshoot = gradient_steps(critic_fn, None, jnp.array([[-0.5, -0.5, 0.0]]), step_size=0.5, num_steps=1)
    np.testing.assert_allclose(np.asarray(overshoot), [[1.0, -1.0, 0.4]], atol=1e-6)

    # Best-of-N ranks the refined candidates: a velocity field of zero leaves a_1 = clip(noise), GradStep then
    # moves every candidate, and the kept one is the refined candidate of highest Q.
    noise = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 3))
    zero_velocity = lambda obs, a, t: jnp.zeros_like(a)  # noqa: E731
    options = dict(guidance_weight=0.0, estimator="none", steps=2, grad_steps=3, grad_step_size=alpha)
    kept = guidance.best_of_n(zero_velocity, critic_fn, jnp.zeros((2, 1)), noise, **options)
    candidates = np.clip(np.asarray(noise, np.float64), -1, 1)
    for _ in range(3):
        candidates = np.clip(candidates - alpha * curvature * (candidates - center), -1, 1)
    best = np.argmax(-np.sum((candidates - center) ** 2, axis=-1), axis=1)
    np.testing.assert_allclose(np.asarray(kept), candidates[np.arange(2), best], atol=1e-5)


def test_cfgrl_policy_loss_equals_its_formula():
    observations = jnp.array([[1.0], [2.0], [-1.0]])
    clean = jnp.array([[0.5, -0.5], [0.1, 0.2], [-0.3, 0.9]])
    positive = jnp.array([1.0, 0.0, 1.0])
    key = jax.random.PRNGKey(3)

    def velocity_apply(params, obs, labels, noisy, times, goals):  # A stand-in network with a known output.
        return params * (1.0 + labels[:, None]) * noisy + obs * times[:, None]

    loss, _ = labelled_flow_loss(velocity_apply, 0.7, observations, clean, positive, key, 4, 0.1, None)
    noisy, times, target = (np.asarray(x, np.float64) for x in flow_interpolation(key, clean, 4))
    assert set(np.round(times * 4, 6)) <= {0, 1, 2, 3, 4}  # t on the grid {0, 1/4, ..., 1}.
    obs, p = np.asarray(observations, np.float64), np.asarray(positive, np.float64)
    v1 = 0.7 * 2 * noisy + obs * times[:, None]
    v0 = 0.7 * 1 * noisy + obs * times[:, None]
    expected = np.mean(p * np.mean((target - v1) ** 2, 1) + 0.1 * np.mean((target - v0) ** 2, 1))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_robust_q_critic_loss_equals_its_formula():
    observations = jnp.array([[1.0], [0.0]])
    clean = jnp.array([[0.5, -0.5, 0.25], [0.1, 0.2, -0.9]])
    target_q = jnp.array([-3.0, -1.5])
    key = jax.random.PRNGKey(4)

    def robust_apply(params, obs, noisy, times, goals):
        return params * jnp.sum(noisy, -1) + obs[:, 0] * times

    loss, _ = noise_conditioned_critic_loss(robust_apply, 2.0, observations, clean, target_q, key)
    noisy, times, _ = (np.asarray(x, np.float64) for x in flow_interpolation(key, clean, None))
    assert np.all((times > 0) & (times < 1)) and len(set(times)) == 2  # t ~ U(0, 1), not on a grid.
    q = 2.0 * noisy.sum(-1) + np.array([1.0, 0.0]) * times
    np.testing.assert_allclose(float(loss), np.mean((q - np.array([-3.0, -1.5])) ** 2), rtol=1e-5)


def mean_squared_distance_to_best(agent, state, weights):
    """Mean ‖a − BEST‖² of 200 chunks per guidance weight, all weights in one call."""
    num = 200
    obs = jnp.repeat(STATE, num * len(weights), axis=0)
    w = jnp.repeat(jnp.asarray(weights, jnp.float32), num)
    actions = jax.jit(lambda s, o, k, w: agent.act(s, o, k, guidance_weight=w))(state, obs, jax.random.PRNGKey(5), w)
    assert actions.shape == (num * len(weights), 2, 1) and float(jnp.abs(actions).max()) <= 1.0
    distance = jnp.sum(jnp.square(actions[:, :, 0] - BEST), axis=1).reshape(len(weights), num)
    return np.asarray(jnp.mean(distance, axis=1))


def checkpoint_round_trip(agent, state, directory):
    """The state as `--eval_only` restores it (runner.checkpoints into a freshly initialised template)."""
    from runner.checkpoints import Checkpoints

    Checkpoints(str(directory)).save(300, state)
    template = jax.jit(agent.init)(jax.random.PRNGKey(9), toy_batch(jax.random.PRNGKey(9)))
    return Checkpoints(str(directory)).restore(300, template)


@pytest.mark.parametrize("name, weights", [("cfgrl", (0.0, 1.0, 3.0)), ("robust_q", (0.0, 0.3, 1.0))])
def test_agent_trains_guides_toward_higher_q_and_restores(name, weights, tmp_path):
    """On the one-state problem (Q = −‖a − BEST‖²): 300 updates without NaN, then guidance moves chunks toward
    BEST (CFGRL: the positive-advantage label; Robust-Q: ∇Q_ρ), and the checkpoint restores to the same acts."""
    agent = agents.make(name, tiny_config(name))
    state, first, last = train(agent, 300)
    assert all(np.isfinite(float(v)) for v in last.values())
    key_loss = "policy/loss" if name == "cfgrl" else "robust_critic/loss"
    assert float(last[key_loss]) < float(first[key_loss])
    distance = mean_squared_distance_to_best(agent, state, weights)
    assert distance[2] < 0.6 * distance[0], distance
    restored = checkpoint_round_trip(agent, state, tmp_path / "checkpoints")
    np.testing.assert_array_equal(mean_squared_distance_to_best(agent, restored, weights), distance)


def test_sweep_plans_every_method_of_the_paper_and_the_table_names_each_evaluation():
    from scripts import sweep, table

    task = "scene-play-singletask-task1-v0"
    args = sweep.parse_args([f"--tasks={task}", "--methods=paper,bfn7", "--root=/nonexistent", "--train_steps=10"])
    jobs = sweep.plan(args)
    trained = [job[0].argv for job in jobs]
    agents_trained = ("qgf", "robust_q", "fql", "edp", "qam", "cfgrl", "dac", "qsm")
    assert [argv[2] for argv in trained] == [f"--agent={agent}" for agent in agents_trained]
    evaluations = [step.argv for job in jobs for step in job[1:]]
    gradstep = [a for a in evaluations if any(f.startswith("--agent.grad_steps") for f in a)]
    assert len(gradstep) == 1 and {"--agent.grad_steps=5", "--agent.grad_step_size=0.01"} <= set(gradstep[0])
    assert any("--agent.best_of_n=7" in a for a in evaluations)  # bfn<N> at any N.
    outputs = [step.output for job in jobs for step in job[1:]]
    assert any("/eval/none-bo1-gs5-a0.01-reset0/" in o for o in outputs)  # GradStep's evaluation, beside BC's:
    assert any("/eval/none-bo1-reset0/" in o for o in outputs)
    # Every method's evaluations come back under its own name, its own column title.
    for name in sweep.PAPER_METHODS:
        method = sweep.METHODS[name]
        assert table.method_name(method.agent, method.estimator, method.best_of_n, 5 if method.grad_step else 0) == name
    assert table.method_name("qgf", "none", 7) == "bfn7" and table.method_label("bfn7") == "BFN-7"
    with pytest.raises(SystemExit, match="unknown methods \\['bfn0'\\]"):
        sweep.plan(sweep.parse_args([f"--tasks={task}", "--methods=bfn0"]))
