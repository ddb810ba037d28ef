"""Every default and named preset of qgf, as `ml_collections.ConfigDict`s.

`get_config(agent, preset)` returns the agent's defaults with the preset applied. Defaults follow the
QGF paper's network shapes at a size that trains on one GPU in hours; `paper` is the paper's generic setting;
`demo` is the small setting `python main.py` runs on a laptop CPU in minutes. One preset per task family
(the paper's `scene`, `puzzle-4x4`, `cube-triple`, `cube-quadruple`, and `puzzle-4x5`, `puzzle-4x6`, `cube-single`,
`cube-double`, `puzzle-3x3`) is the paper's setting with that family's coefficients of every method and, where
OGBench publishes them, its 100M slices as data; a run with `--env` takes its task's family preset by default
(runner.config.task_preset). `size-0.8m`, `size-3.2m`, `size-12.7m` set the model size. Presets compose with
"+", left to right: `--preset=scene+size-0.8m`. The goal-conditioned agent (`gcqgf`) keeps OGBench's
goal-conditioned discount and goal relabelling under every preset (one setting serves every manipulation family,
as in OGBench); a family preset then only picks its `<family>-play-v0` task.
"""

import difflib
import math
from typing import NamedTuple

import ml_collections


class ConfigError(ValueError):
    """A setting given by the user is invalid; the message names it and what to do."""


def closest(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or ''."""
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# The paper's grid of guidance weights for single-task OGBench: the official scripts' nine positive weights. BC
# (w = 0) is not one of them: it is its own method (estimator `none`), and a weight is only ever chosen among
# positive ones, so a guided method's row never reports BC's result.
PAPER_GUIDANCE_WEIGHTS = (0.004, 0.008, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)
# The demo preset's shorter grid, with BC's row (w = 0) in front: the demo shows what guidance adds in one table.
DEMO_GUIDANCE_WEIGHTS = (0.0, 0.03, 0.1, 0.3)


def qgf_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.agent_name = "qgf"  # Registry name of the agent these settings belong to.
    c.lr = 3e-4  # Adam learning rate of the velocity field, critic and value.
    c.batch_size = 256  # Action chunks per update.
    c.actor_hidden_dims = (512, 512, 512, 512)  # Velocity-field MLP widths.
    c.critic_hidden_dims = (512, 512, 512, 512)  # Widths of each critic and of the value.
    c.activation = "gelu"  # Hidden activation of every MLP.
    c.actor_layer_norm = True  # LayerNorm in the velocity field.
    c.critic_layer_norm = True  # LayerNorm in the critic and the value.
    c.discount = 0.99  # Per-step discount γ; a chunk of H steps bootstraps with γ^H.
    c.expectile = 0.9  # IQL expectile τ of the value regression.
    c.target_rate = 0.005  # Polyak rate of the target critic.
    c.num_critics = 2  # Critic ensemble size (the ensemble axis exists even for 1).
    c.critic_aggregation = "min"  # How ensemble members combine: "min" or "mean".
    c.denoising_steps = 10  # Euler steps K of the flow (BC times on the grid {0, 1/K, ..., 1}).
    c.horizon = 5  # Action-chunk length H; 1 turns chunking off.
    c.estimator = "qgf"  # Guidance gradient: "qgf", "jacobian", "noisy", "bptt" or "none".
    c.guidance_weight = 0.04  # Weight w used by `act` when the caller gives none.
    c.guidance_weights = PAPER_GUIDANCE_WEIGHTS  # The sweep evaluated in one batch.
    c.best_of_n = 1  # Guided candidates per decision; the highest-Q one is executed.
    # "bfloat16": the networks' matmuls in bfloat16 with float32 accumulation (networks/mixed_precision.py);
    # parameters, optimiser state, losses, the guidance gradient and the Euler state stay float32.
    c.compute_dtype = "float32"
    # The next five default to the settings the demo and default runs were tuned with; `paper` (and every family
    # preset) sets the official ones (PAPER_AGENT_SETTINGS, paper_preset).
    c.time_embedding = "raw"  # Velocity field's time input: "raw" (the scalar t) or "sinusoidal" (official 16-d).
    # LayerNorm also on the velocity field's last hidden layer (True), or on all hidden layers but the last
    # (False, the official actor's).
    c.actor_layer_norm_last_hidden = True
    # Kernel init of the velocity field's output layer: "glorot_uniform" (as every hidden layer) or "lecun_normal"
    # (the official actor's).
    c.actor_output_init = "glorot_uniform"
    # Critic whose gradient guides the flow and that ranks best-of-N and GradStep: "online" (Q) or "target" (Q̄, the
    # official sampler's), aggregated by critic_aggregation.
    c.guidance_critic = "online"
    # Polyak step toward the critic as it was before this update's Adam step (True, the official code's one-step
    # lag) or after it (False).
    c.polyak_pre_update = False
    # Bootstrap masks: "success" (OGBench's: 0 on solved states) or "trajectory_end" (1 - terminals, the official
    # 100M loader's: bootstrapping goes on through success and stops at each recorded trajectory's end).
    c.mask_convention = "success"
    # Dataset actions clipped into [−1 + 1e-5, 1 − 1e-5] at load, as the official loaders do for every agent but FQL
    # and CFGRL (OGBench's actions lie in [−1, 1]: this moves only those on a bound, by 1e-5).
    c.clip_dataset_actions = True
    # GradStep: L steps a ← clip(a + α ∇Q(s, a), −1, 1) after the flow sample (before best-of-N ranks them).
    c.grad_steps = 0  # L; 0 is off (FAMILY_SETTINGS holds the paper's L per family).
    c.grad_step_size = 0.01  # α, the paper's value for every family.
    return c


def run_config() -> ml_collections.ConfigDict:
    """Settings of a run rather than of an agent; `main.py` flags of the same name override them."""
    c = ml_collections.ConfigDict()
    c.env_name = "cube-double-play-singletask-task2-v0"  # OGBench task trained and evaluated.
    c.train_steps = 500_000  # Gradient steps in total.
    c.steps_per_call = 1000  # Update steps per compiled call (a lax.scan on the device).
    c.log_every = 5000  # Steps between train.csv / TensorBoard rows.
    c.eval_every = 100_000  # Steps between evaluation sweeps (one more at the end).
    c.save_every = 50_000  # Steps between checkpoints (one more at the end).
    c.eval_episodes = 30  # Episodes per guidance weight.
    c.eval_envs = 64  # Most environments alive at once (each holds ~110 MB); more episodes run in waves.
    c.dataset_dir = ""  # Where datasets live ("" is OGBench's ~/.ogbench/data).
    c.dataset_path = ""  # A dataset .npz file or a directory of .npz slices, instead of dataset_dir.
    c.dataset_episodes = 0  # Episodes to generate when the dataset is missing (0: OGBench's count).
    c.dataset_episode_steps = 1001  # Steps per generated episode (OGBench's recipe: 1001).
    c.slice_every = 1000  # With a directory of slices: update steps per slice before the next (official: 1000).
    # Which of OGBench's files a run trains on when no dataset_path is given: "standard" (`<dataset>.npz`, 1M-5M
    # transitions) or "100m" (the `<dataset-stem>-100m-v0/` directory of 100 slices of 1M transitions, which every
    # run of the paper trained on; the family presets set it where OGBench publishes one, FAMILIES_WITH_100M).
    c.dataset_size = "standard"
    return c


def fql_config() -> ml_collections.ConfigDict:
    """FQL (agents/fql.py): qgf's networks and RL settings, plus the one-step policy's distillation weight."""
    c = qgf_config()
    c.agent_name = "fql"
    del c.guidance_critic  # FQL has no test-time guidance.
    # Critic: "td" (FQL's own: Q toward R + γ^H m agg Q̄(s', clip(μ(s', z'))), no value network) or "iql" (the shared
    # IQL critic of agents/iql.py, which the paper ran; `expectile` is its value's τ).
    c.critic_loss = "td"
    c.clip_dataset_actions = False  # The official FQL loads its actions unclipped.
    # The actor's Q term divided by stop_grad(mean |Q|) (True), or raw (False, the paper's: its α assume raw Q).
    c.normalize_q_loss = True
    c.flow_times = "uniform"  # Times of the flow-matching loss: "uniform" (t ~ U(0, 1), FQL's) or "grid" (qgf's).
    del c.grad_steps, c.grad_step_size  # Its one-step policy has no test-time refinement.
    c.alpha = 300.0  # Distillation weight α of the one-step policy (family presets set the paper's values).
    c.actor_q_aggregation = "mean"  # Ensemble reduction of the actor's Q term (the TD target uses critic_aggregation).
    c.estimator = "none"  # FQL has no test-time guidance; must stay "none".
    c.guidance_weight = 0.0  # Accepted by `act` and ignored.
    c.guidance_weights = (0.0,)  # One evaluation per run.
    return c


def edp_config() -> ml_collections.ConfigDict:
    """EDP (agents/edp.py): qgf's networks and IQL critic; the velocity field is also trained to raise Q."""
    c = qgf_config()
    c.agent_name = "edp"
    c.bc_weight = 100.0  # Weight of the flow-matching loss against −Q(s, â) in the actor loss.
    c.actor_q_aggregation = "mean"  # Ensemble reduction of the actor's Q term (official: "min", set by `paper`).
    c.actor_q_critic = "online"  # Critic of the actor's Q term: "online" (Q) or "target" (Q̄, official, `paper`).
    c.estimator = "none"  # Plain flow sampling; another estimator adds qgf's test-time guidance on top.
    c.guidance_weight = 0.0  # Weight used by `act` when the caller gives none.
    c.guidance_weights = (0.0,)  # One evaluation per run, unless guidance is added on top.
    return c


# CFGRL's guidance weights (the official sweep, every family): w = 1 is the label-1 (positive-advantage) flow
# alone, larger w extrapolates away from the unconditional one.
CFGRL_GUIDANCE_WEIGHTS = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0)


def cfgrl_config() -> ml_collections.ConfigDict:
    """CFGRL (agents/cfgrl.py): a velocity field conditioned on an optimality label, guided classifier-free."""
    c = qgf_config()
    c.agent_name = "cfgrl"
    del c.time_embedding  # Its velocity field always takes the 16-d sinusoidal embedding of t (and of its label).
    c.clip_dataset_actions = False  # The official CFGRL loads its actions unclipped.
    c.unconditional_weight = 0.1  # Weight of the label-0 (all samples) flow loss; label 1 fits adv > 0 only.
    c.advantage_threshold = 0.0  # Label 1 marks chunks with Q̄(s, A) − V(s) above this.
    c.estimator = "none"  # CFGRL guides by its labels' velocity contrast; must stay "none".
    c.guidance_weight = 3.0  # Weight w of v = v₀ + w (v₁ − v₀) used by `act` when the caller gives none.
    c.guidance_weights = CFGRL_GUIDANCE_WEIGHTS
    return c


def robust_q_config() -> ml_collections.ConfigDict:
    """Robust-Q (agents/robust_q.py): qgf's base model plus a noise-conditioned critic Q_ρ(s, a_t, t) whose
    gradient at the noisy a_t guides the flow, at qgf's guidance weights."""
    c = qgf_config()
    c.agent_name = "robust_q"
    c.estimator = "none"  # The guidance is ∇Q_ρ at a_t (not one of qgf's estimators); must stay "none".
    return c


def qam_config() -> ml_collections.ConfigDict:
    """QAM (agents/qam.py): slow (BC) and fast (adjoint-matched) velocity fields and the IQL critic."""
    c = qgf_config()
    c.agent_name = "qam"
    del c.guidance_critic, c.grad_steps, c.grad_step_size  # Its policy has no test-time guidance or refinement.
    c.actor_layer_norm = False  # The official QAM velocity fields have no LayerNorm (and raw time, the default).
    c.inv_temp = 0.1  # β of the tilted policy ∝ behaviour · exp(β Q) (the paper: 0.1 for every family).
    c.actor_q_aggregation = "mean"  # Ensemble reduction of the target critic in the adjoint (official: mean).
    c.clip_grad_norm = 1.0  # Global-norm clip of each group (the velocity fields; critic and value) before Adam.
    c.estimator = "none"  # QAM has no test-time guidance; must stay "none".
    c.guidance_weight = 0.0  # Accepted by `act` and ignored.
    c.guidance_weights = (0.0,)  # One evaluation per run.
    return c


def ddpm_config(agent_name: str) -> ml_collections.ConfigDict:
    """DAC and QSM (agents/ddpm.py): a DDPM noise predictor on the vp schedule, and the IQL critic."""
    c = qgf_config()
    c.agent_name = agent_name
    del c.guidance_critic, c.grad_steps, c.grad_step_size  # Its policy has no test-time guidance or refinement.
    # The noise predictor has no LayerNorm and takes the integer step through Fourier features.
    del c.actor_layer_norm, c.actor_layer_norm_last_hidden, c.time_embedding
    c.actor_activation = "mish"  # Activation of the noise predictor's MLPs (the critic keeps `activation`).
    c.time_features = 64  # Learnable Fourier features of the integer denoising step.
    c.alpha = 100.0  # Weight α of the DDPM BC loss against the method's Q term (family presets: the paper's).
    c.actor_q_aggregation = "mean"  # Ensemble reduction of the target critic whose ∇Q the actor uses.
    c.clip_grad_norm = 1.0  # One global-norm clip over every network's gradients before Adam.
    c.estimator = "none"  # No test-time guidance; must stay "none".
    c.guidance_weight = 0.0  # Accepted by `act` and ignored.
    c.guidance_weights = (0.0,)  # One evaluation per run.
    return c


def dac_config() -> ml_collections.ConfigDict:
    """DAC (agents/dac.py): the noise predictor pushed toward −∇Q by a linear term, plus α · DDPM BC."""
    return ddpm_config("dac")


def qsm_config() -> ml_collections.ConfigDict:
    """QSM (agents/qsm.py): the noise predictor matched to −β ∇Q, plus α · DDPM BC."""
    c = ddpm_config("qsm")
    c.alpha = 10.0  # The paper's QSM α for every family.
    c.inv_temp = 0.1  # β of the matched score −β ∇Q (the paper: 0.1 for every family).
    return c


# Guidance weights of goal-conditioned tasks. Their Q values (reward −1 per step until the goal, γ = 0.99) are
# far smaller in magnitude than the paper's single-task ones (γ = 0.999), so the weights are larger. Measured
# only on cube-single-play-v0 with the demo preset (mean success over OGBench's 5 goals: BC 0.00, w = 0.03:
# 0.85, 0.1: 0.95, 0.3: 0.70); that the same grid brackets the best weight for other families and for the
# paper's larger networks is a guess.
GOAL_CONDITIONED_GUIDANCE_WEIGHTS = (0.0, 0.03, 0.1, 0.3)


def gcqgf_config() -> ml_collections.ConfigDict:
    """Goal-conditioned QGF: the same networks with the goal as an extra input, IQL on relabelled goals.

    The discount and goal relabelling are the defaults of OGBench's goal-conditioned agents (e.g. GCIQL), which
    OGBench's per-task settings keep for every cube, scene and puzzle task; no preset changes them.
    """
    c = qgf_config()
    c.agent_name = "gcqgf"
    c.goal_conditioned = True  # Batches carry relabelled goals; evaluation runs OGBench's 5 tasks.
    del c.mask_convention  # Rewards and masks come from the relabelled goals, not from the dataset.
    c.discount = 0.99  # OGBench's goal-conditioned discount for the manipulation tasks.
    # Goals of the critic and value (the rewards' goals): OGBench's value-goal proportions.
    c.p_cur = 0.2  # Goal = the chunk's start state.
    c.p_traj = 0.5  # Goal = a later state of the same trajectory, offset geometric with the discount.
    c.p_rand = 0.3  # Goal = a random dataset state.
    # Goals of the velocity field's behaviour cloning, drawn separately: OGBench's actor-goal proportions.
    c.actor_p_cur = 0.0  # Goal = the chunk's start state.
    c.actor_p_traj = 1.0  # Goal = a later state of the same trajectory.
    c.actor_p_rand = 0.0  # Goal = a random dataset state.
    c.actor_geom_sample = False  # Trajectory offset geometric (True) or uniform over the rest of the trajectory.
    c.guidance_weight = 0.1  # The demo's best weight (see GOAL_CONDITIONED_GUIDANCE_WEIGHTS).
    c.guidance_weights = GOAL_CONDITIONED_GUIDANCE_WEIGHTS
    return c


AGENT_CONFIGS = {
    "qgf": qgf_config,
    "gcqgf": gcqgf_config,
    "fql": fql_config,
    "edp": edp_config,
    "cfgrl": cfgrl_config,
    "robust_q": robust_q_config,
    "qam": qam_config,
    "dac": dac_config,
    "qsm": qsm_config,
}


# The official networks and loss choices of each agent (BASELINES.md §1.6, §2.1-2.2, §3.1, §3.2), set by `paper` and
# so by every family preset; agents not listed keep their own defaults. docs/differences.md lists what stays
# different.
_OFFICIAL_QGF_NETWORKS = {
    "time_embedding": "sinusoidal",
    "actor_layer_norm_last_hidden": False,
    "actor_output_init": "lecun_normal",
}
PAPER_AGENT_SETTINGS = {
    "qgf": {**_OFFICIAL_QGF_NETWORKS, "guidance_critic": "target"},
    "gcqgf": {**_OFFICIAL_QGF_NETWORKS, "guidance_critic": "target"},
    "robust_q": {**_OFFICIAL_QGF_NETWORKS, "guidance_critic": "target"},
    # CFGRL's velocity field always embeds t (sinusoidal) and its label; best-of-N ranks by the online critic.
    "cfgrl": {"actor_layer_norm_last_hidden": False, "actor_output_init": "lecun_normal"},
    "edp": {
        **_OFFICIAL_QGF_NETWORKS,
        "guidance_critic": "target",
        "actor_q_critic": "target",
        "actor_q_aggregation": "min",
    },
    "fql": {
        "time_embedding": "raw",
        "actor_layer_norm": False,
        "actor_output_init": "lecun_normal",
        "critic_loss": "iql",
        "normalize_q_loss": False,
        "flow_times": "uniform",
    },
    # QAM's three velocity fields are the official ActorFlowField without LayerNorm, with raw time (its defaults).
    "qam": {"actor_output_init": "lecun_normal"},
}


def paper_preset(c: ml_collections.ConfigDict) -> None:
    """The paper's main single-task setting (4×1024 networks, batch 1024, γ = 0.999, the 100M loader's masks
    1 - terminals). A goal-conditioned agent takes the networks and batch (also OGBench's goal-conditioned batch
    size) and keeps its own γ = 0.99 and relabelled-goal masks."""
    c.actor_hidden_dims = (1024, 1024, 1024, 1024)
    c.critic_hidden_dims = (1024, 1024, 1024, 1024)
    c.batch_size = 1024
    c.update(PAPER_AGENT_SETTINGS.get(c.agent_name, {}))
    if "polyak_pre_update" in c:  # Every official agent steps its target toward the pre-update critic.
        c.polyak_pre_update = True
    if not c.get("goal_conditioned", False):
        c.discount = 0.999
        c.mask_convention = "trajectory_end"


def demo_preset(c: ml_collections.ConfigDict) -> None:
    """Small networks and a short sweep, sized for a 2-core CPU in minutes."""
    c.actor_hidden_dims = (256, 256, 256)
    c.critic_hidden_dims = (256, 256, 256)
    c.batch_size = 256
    c.discount = 0.99
    if tuple(c.guidance_weights) == PAPER_GUIDANCE_WEIGHTS:  # Other grids (one weight, CFGRL's) stay.
        c.guidance_weights = DEMO_GUIDANCE_WEIGHTS


def demo_run(r: ml_collections.ConfigDict) -> None:
    r.env_name = "cube-single-play-singletask-task1-v0"
    r.train_steps = 20_000
    r.steps_per_call = 500
    r.log_every = 1000
    r.eval_every = 20_000
    r.save_every = 10_000
    r.eval_episodes = 20
    r.eval_envs = 16  # The 80 episodes in 5 waves: the same env steps, 16 envs (~1.8 GB) alive instead of 80.
    # A small dataset of its own (named by its size), so it never stands in for OGBench's full-size file.
    r.dataset_episodes = 50
    r.dataset_dir = f"~/.ogbench/data/qgf-demo-{r.dataset_episodes}ep"
    r.dataset_episode_steps = 1001
    r.dataset_size = "standard"


class FamilyCoefficients(NamedTuple):
    """One family's coefficients of every compared method that has one (BASELINES.md §2.6, §3.7)."""

    fql_alpha: float  # FQL: distillation weight α of the one-step policy.
    edp_bc_weight: float  # EDP: weight of flow matching against −Q(s, â).
    grad_step_size: float  # GradStep: ascent step α of a ← clip(a + α ∇Q).
    grad_steps: int  # GradStep: number of ascent steps L.
    qam_inv_temp: float  # QAM: inverse temperature β of exp(β Q).
    dac_alpha: float  # DAC: weight α of the diffusion BC loss.
    qsm_inv_temp: float  # QSM: inverse temperature β of the matched score −β ∇Q.
    qsm_alpha: float  # QSM: weight α of the diffusion BC loss.


# Per-family coefficients of every method, one row per family (the paper's values, BASELINES.md §2.6 and
# §3.7). puzzle-4x5 / 4x6 are not in the paper and take puzzle-4x4's values. cube-single, cube-double and
# puzzle-3x3 (the study's families, docs/study.md) are not in the paper either: their FQL α is the FQL paper's
# published value for the family (300, 300, 1000); every other column takes cube-triple's (cube) or puzzle-4x4's.
_FC = FamilyCoefficients
FAMILY_SETTINGS = {
    # family:        FQL α    EDP bc  GradStep α, L  QAM β  DAC α  QSM β, α
    "cube-single": _FC(300.0, 100.0, 0.01, 3, 0.1, 100.0, 0.1, 10.0),
    "cube-double": _FC(300.0, 100.0, 0.01, 3, 0.1, 100.0, 0.1, 10.0),
    "puzzle-3x3": _FC(1000.0, 300.0, 0.01, 3, 0.1, 300.0, 0.1, 10.0),
    "scene": _FC(300.0, 30.0, 0.01, 5, 0.1, 100.0, 0.1, 10.0),
    "puzzle-4x4": _FC(1000.0, 300.0, 0.01, 3, 0.1, 300.0, 0.1, 10.0),
    "puzzle-4x5": _FC(1000.0, 300.0, 0.01, 3, 0.1, 300.0, 0.1, 10.0),
    "puzzle-4x6": _FC(1000.0, 300.0, 0.01, 3, 0.1, 300.0, 0.1, 10.0),
    "cube-triple": _FC(1000.0, 100.0, 0.01, 3, 0.1, 100.0, 0.1, 10.0),
    "cube-quadruple": _FC(1000.0, 300.0, 0.01, 3, 0.1, 100.0, 0.1, 10.0),
}

# The agent config field each column sets under a family preset (only on that agent's config). GradStep's
# columns set none: GradStep is an evaluation of a qgf checkpoint, and a preset that turned it on would change
# every qgf run; `scripts.sweep --methods=gradstep` passes the family's α and L as --agent.grad_step_size /
# --agent.grad_steps.
FAMILY_FIELDS = {
    "fql_alpha": ("fql", "alpha"),
    "edp_bc_weight": ("edp", "bc_weight"),
    "qam_inv_temp": ("qam", "inv_temp"),
    "dac_alpha": ("dac", "alpha"),
    "qsm_inv_temp": ("qsm", "inv_temp"),
    "qsm_alpha": ("qsm", "alpha"),
}


def family_preset(family: str):
    """The paper's setting for one task family: its networks, its methods' coefficients, task 1 by default."""

    def agent_preset(c: ml_collections.ConfigDict) -> None:
        paper_preset(c)
        # qgf's grid after the demo's; other grids (one weight, CFGRL's, gcqgf's goal-conditioned one) stay.
        if tuple(c.guidance_weights) == DEMO_GUIDANCE_WEIGHTS and not c.get("goal_conditioned", False):
            c.guidance_weights = PAPER_GUIDANCE_WEIGHTS
        for column, (agent, field) in FAMILY_FIELDS.items():
            if c.agent_name == agent:
                c[field] = getattr(FAMILY_SETTINGS[family], column)

    def run_preset(r: ml_collections.ConfigDict) -> None:
        r.env_name = f"{family}-play-singletask-task1-v0"
        r.dataset_size = "100m" if family in FAMILIES_WITH_100M else "standard"

    return agent_preset, run_preset


# Families whose play (and noisy) datasets OGBench also publishes as a 100M-transition directory of 100 slices
# (`<family>-play-100m-v0/`): the paper's four (cube-triple, cube-quadruple, puzzle-4x4, scene, whose runs all
# trained on them), cube-double, and puzzle-4x5 / 4x6 (the horizon-reduction work's). cube-single and puzzle-3x3
# have none: their family presets train on the standard file.
FAMILIES_WITH_100M = ("cube-double", "cube-triple", "cube-quadruple", "scene", "puzzle-4x4", "puzzle-4x5", "puzzle-4x6")
DATASET_SIZES = ("standard", "100m")
# Presets that only change a size or a protocol and compose with the task's family preset: with `--env`, a preset
# made of these alone is applied after the family's (`--preset=size-0.8m --env=scene-…` is `scene+size-0.8m`).


# Task of a goal-conditioned agent when none is given: the goal-conditioned task of the last preset that names
# one (presets' run settings name single-task tasks), else DEFAULT_GOAL_CONDITIONED_ENV.
GOAL_CONDITIONED_ENVS = {
    "demo": "cube-single-play-v0",
    **{family: f"{family}-play-v0" for family in FAMILY_SETTINGS},
}
DEFAULT_GOAL_CONDITIONED_ENV = "cube-double-play-v0"


# Model-size scaling: actor (velocity field) parameter counts of about 0.8M, 3.2M and 12.7M at the paper's
# sizes (the official actor under `paper`: 4 hidden layers, input s + H·A + 16 (sinusoidal t), output H·A; e.g.
# cube-triple: obs 46, H·A = 25: 0.85M, 3.27M, 12.9M), reached by width 512, 1024 and 2048. The critic is scaled
# alike. tests/test_fql_edp.py checks the counts, tests/test_official_networks.py the exact official ones.
MODEL_SIZES = {"size-0.8m": 512, "size-3.2m": 1024, "size-12.7m": 2048}


def size_preset(width: int):
    def agent_preset(c: ml_collections.ConfigDict) -> None:
        c.actor_hidden_dims = (width,) * 4
        c.critic_hidden_dims = (width,) * 4

    return agent_preset, lambda r: None


# The study (docs/study.md, `scripts.sweep --preset=study`): the paper's protocol sized for a 2-core CPU. It
# composes after a family preset (the family's coefficients and the official networks' shapes of layer), then
# shrinks what a CPU cannot afford. Measurements behind each number are in docs/study.md ("The preset").
STUDY_DATASET_EPISODES = 200  # 200 + 20 (val) episodes of 1001 steps per family, generated with OGBench's oracles.
STUDY_DISCOUNT = 0.99  # γ: Q's horizon 100 steps, which STUDY_TRAIN_STEPS updates propagate (docs/study.md).
# On cube-single task 2 with 200 episodes, a 50k-step qgf run's critic validation/training loss ratio (means of 10
# logged steps) was 1.36, 1.42 over 11-20k and 21-30k, then rose to 1.73 and 2.55 over 31-40k and 41-50k: the
# critic overfits after ~30k updates, so the study stops there (docs/study.md, "The preset"). That did not hold on
# every seed: on seed 1 the ratio rose within the 30k updates on every task, on seed 2 it stayed flat on cube-single
# and scene and rose on cube-double and puzzle (docs/study.md, "What this does not show").
STUDY_TRAIN_STEPS = 30_000
# The paper's grid × 10: Q's scale 1/(1 − γ) is 100 at γ = 0.99 against the paper's 1000 at γ = 0.999, so the
# same w moves actions 10× less; scaling the grid keeps w ∇Q's size (the grid is fixed before any study run).
STUDY_GUIDANCE_WEIGHTS = tuple(round(10 * w, 6) for w in PAPER_GUIDANCE_WEIGHTS)


def study_preset(c: ml_collections.ConfigDict) -> None:
    c.actor_hidden_dims = (256, 256, 256)
    c.critic_hidden_dims = (256, 256, 256)
    c.batch_size = 256
    c.discount = STUDY_DISCOUNT
    if tuple(c.guidance_weights) in (PAPER_GUIDANCE_WEIGHTS, DEMO_GUIDANCE_WEIGHTS):  # Other grids (CFGRL's) stay.
        c.guidance_weights = STUDY_GUIDANCE_WEIGHTS


def study_run(r: ml_collections.ConfigDict) -> None:
    r.train_steps = STUDY_TRAIN_STEPS
    r.steps_per_call = 500
    r.log_every = 1000  # A validation row every 1000 steps: the critic's validation curve.
    r.eval_every = STUDY_TRAIN_STEPS  # One evaluation, at the end.
    r.save_every = 10_000
    r.eval_episodes = 30
    r.eval_envs = 32  # ~3.5 GB of envs; each weight's 30 episodes in one wave.
    r.dataset_episodes = STUDY_DATASET_EPISODES
    r.dataset_dir = f"~/.ogbench/data/qgf-study-{r.dataset_episodes}ep"
    r.dataset_episode_steps = 1001
    r.dataset_size = "standard"  # Its own generated files, never OGBench's 100M slices.


# The study's part 2 (docs/study.md): part 1's protocol on OGBench's standard data size, 1000 + 100 generated
# episodes of 1001 steps per family (the size of OGBench's own files), to test part 1's reason for the hard tasks'
# 0 % (coverage: 4 and 8 of 200 episodes reach their goals). Its update count is part 1's 30k, by part 1's rule on
# one 50k-update run at this size (the critic's validation / training loss ratio by thirds: 0.88, 1.01, 1.34 on
# cube-double task 2, flat for two thirds and rising in the last, as part 1's 1.52, 1.50, 2.16; docs/study.md).
STUDY_1000EP_DATASET_EPISODES = 1000


def study_1000ep_run(r: ml_collections.ConfigDict) -> None:
    study_run(r)
    r.dataset_episodes = STUDY_1000EP_DATASET_EPISODES
    r.dataset_dir = f"~/.ogbench/data/qgf-study-{r.dataset_episodes}ep"


# Part 2's first rung (docs/study.md, "Part 2"): 3× the study's updates. The study's evaluation every 30k stays, so
# the run also evaluates at 30k and 60k.
STUDY_RUNG_TRAIN_STEPS = 90_000


def updates_90k_run(r: ml_collections.ConfigDict) -> None:
    r.train_steps = STUDY_RUNG_TRAIN_STEPS


# Part 2's third rung (docs/study.md, "Part 2"): the paper's γ = 0.999 and its guidance grid on top of a study
# preset, whose γ = 0.99 and 10× grid were chosen for part 1's 30k updates. Single-task agents only, as the paper's.
def paper_discount_preset(c: ml_collections.ConfigDict) -> None:
    if c.get("goal_conditioned", False):
        return
    c.discount = 0.999
    if tuple(c.guidance_weights) == STUDY_GUIDANCE_WEIGHTS:  # Other grids (CFGRL's) stay.
        c.guidance_weights = PAPER_GUIDANCE_WEIGHTS


# Each preset changes the agent config and the run config in place. Presets compose with "+", applied
# left to right: `scene+size-0.8m` is the scene setting with 4×512 networks.
PRESETS = {
    "default": (lambda c: None, lambda r: None),
    "paper": (paper_preset, lambda r: None),
    "demo": (demo_preset, demo_run),
    "study": (study_preset, study_run),
    "study-1000ep": (study_preset, study_1000ep_run),
    **{family: family_preset(family) for family in FAMILY_SETTINGS},
    **{name: size_preset(width) for name, width in MODEL_SIZES.items()},
    "updates-90k": (lambda c: None, updates_90k_run),
    "paper-discount": (paper_discount_preset, lambda r: None),
}


STUDY_PRESETS = ("study", "study-1000ep")  # Part 1 and part 2 of docs/study.md.
MODIFIER_PRESETS = (*MODEL_SIZES, *STUDY_PRESETS, "updates-90k", "paper-discount")


def study_part(preset: str | None) -> str | None:
    """The study preset among `preset`'s parts (`study-1000ep+size-0.8m`: `study-1000ep`, a rung of part 2),
    None when it has none: such a preset runs the study's protocol (methods, generated data) with its changes."""
    parts = [part for part in (preset or "").split("+") if part in STUDY_PRESETS]
    return parts[-1] if parts else None


def preset_parts(preset: str) -> list[str]:
    parts = preset.split("+")
    for part in parts:
        if part not in PRESETS:
            raise ConfigError(
                f"unknown preset {part!r}{closest(part, PRESETS)}; choose one of {sorted(PRESETS)} "
                "(or join them with '+')"
            )
    return parts


def get_config(agent: str = "qgf", preset: str = "default") -> ml_collections.ConfigDict:
    if agent not in AGENT_CONFIGS:
        raise ConfigError(
            f"unknown agent {agent!r}{closest(agent, AGENT_CONFIGS)}; choose one of {sorted(AGENT_CONFIGS)}"
        )
    parts = preset_parts(preset)
    config = AGENT_CONFIGS[agent]()
    for part in parts:
        PRESETS[part][0](config)
    return config


def get_run_config(preset: str = "default", agent: str = "qgf") -> ml_collections.ConfigDict:
    parts = preset_parts(preset)
    config = run_config()
    for part in parts:
        PRESETS[part][1](config)
    if AGENT_CONFIGS.get(agent, qgf_config)().get("goal_conditioned", False):
        named = [GOAL_CONDITIONED_ENVS[part] for part in parts if part in GOAL_CONDITIONED_ENVS]
        config.env_name = named[-1] if named else DEFAULT_GOAL_CONDITIONED_ENV
    return config


ESTIMATOR_NAMES = ("qgf", "jacobian", "noisy", "bptt", "none")  # guidance.ESTIMATORS' keys (a test checks)
COMPUTE_DTYPES = ("float32", "bfloat16")  # networks.mixed_precision.COMPUTE_DTYPES (a test checks)
TIME_EMBEDDINGS = ("raw", "sinusoidal")  # networks.velocity_field.TIME_EMBEDDINGS (a test checks)
# Settings that name one of a few choices: field -> choices (checked when the agent's config has the field).
AGENT_CHOICES = {
    "time_embedding": TIME_EMBEDDINGS,
    "actor_output_init": ("glorot_uniform", "lecun_normal"),
    "guidance_critic": ("target", "online"),
    "actor_q_critic": ("target", "online"),
    "critic_loss": ("iql", "td"),
    "flow_times": ("uniform", "grid"),
}
ACTIVATION_NAMES = ("gelu", "relu", "silu", "tanh", "mish")  # networks.mlp.ACTIVATIONS' keys (a test checks)
MASK_CONVENTIONS = ("success", "trajectory_end")  # envs.MASK_CONVENTIONS (a test checks)


def check_config(config: ml_collections.ConfigDict, guidance_weights) -> None:
    """Raises ConfigError on the first out-of-range agent setting or guidance weight."""

    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    for w in guidance_weights:
        require(math.isfinite(w) and w >= 0, f"guidance weight {w} must be a finite number >= 0 (0 is plain BC)")
    require(config.horizon >= 1, f"--agent.horizon={config.horizon} must be >= 1 (1 turns action chunking off)")
    require(config.denoising_steps >= 1, f"--agent.denoising_steps={config.denoising_steps} must be >= 1")
    if "expectile" in config:  # An agent without a value network may drop it.
        require(0 < config.expectile < 1, f"--agent.expectile={config.expectile} must lie in (0, 1), e.g. 0.9")
    require(0 < config.discount <= 1, f"--agent.discount={config.discount} must lie in (0, 1], e.g. 0.99")
    require(config.batch_size >= 1, f"--agent.batch_size={config.batch_size} must be >= 1")
    require(config.lr > 0, f"--agent.lr={config.lr} must be > 0")
    require(0 <= config.target_rate <= 1, f"--agent.target_rate={config.target_rate} must lie in [0, 1]")
    require(config.num_critics >= 1, f"--agent.num_critics={config.num_critics} must be >= 1")
    require(config.best_of_n >= 1, f"--agent.best_of_n={config.best_of_n} must be >= 1")
    if "activation" in config:
        require(
            config.activation in ACTIVATION_NAMES,
            f"unknown --agent.activation={config.activation!r}{closest(str(config.activation), ACTIVATION_NAMES)}; "
            f"choose one of {list(ACTIVATION_NAMES)}",
        )
    for field in ("actor_hidden_dims", "critic_hidden_dims"):
        dims = config.get(field, (1,))
        require(
            isinstance(dims, tuple | list) and len(dims) > 0 and all(type(d) is int and d >= 1 for d in dims),
            f"--agent.{field}={dims!r} must be one width >= 1 per hidden layer, e.g. '(256,256)'",
        )
    if "grad_steps" in config:  # GradStep, on every agent that samples its flow with a critic.
        require(config.grad_steps >= 0, f"--agent.grad_steps={config.grad_steps} must be >= 0 (0 turns GradStep off)")
        require(
            math.isfinite(config.grad_step_size) and config.grad_step_size >= 0,
            f"--agent.grad_step_size={config.grad_step_size} must be a finite number >= 0, e.g. 0.01",
        )
    require(
        config.estimator in ESTIMATOR_NAMES,
        f"unknown --agent.estimator={config.estimator!r}"
        f"{closest(config.estimator, ESTIMATOR_NAMES)}; choose one of {list(ESTIMATOR_NAMES)}",
    )
    if "compute_dtype" in config:
        require(
            config.compute_dtype in COMPUTE_DTYPES,
            f"unknown --agent.compute_dtype={config.compute_dtype!r}{closest(config.compute_dtype, COMPUTE_DTYPES)}; "
            f"choose one of {list(COMPUTE_DTYPES)} (bfloat16: matmuls in bfloat16 with float32 accumulation)",
        )
    require(
        config.critic_aggregation in ("min", "mean"),
        f"--agent.critic_aggregation={config.critic_aggregation!r} must be 'min' or 'mean'",
    )
    if "actor_q_aggregation" in config:  # fql and edp.
        require(
            config.actor_q_aggregation in ("min", "mean"),
            f"--agent.actor_q_aggregation={config.actor_q_aggregation!r} must be 'min' or 'mean'",
        )
    if config.agent_name == "fql":
        require(config.alpha >= 0, f"--agent.alpha={config.alpha} must be >= 0")
        require(
            config.estimator == "none" and config.best_of_n == 1,
            "fql has no test-time guidance: keep --agent.estimator=none and --agent.best_of_n=1",
        )
    for field, choices in AGENT_CHOICES.items():
        if field in config:
            require(
                config[field] in choices,
                f"unknown --agent.{field}={config[field]!r}{closest(str(config[field]), choices)}; "
                f"choose one of {list(choices)}",
            )
    if config.agent_name in ("cfgrl", "robust_q"):  # Their guidance is their own, not one of qgf's estimators.
        require(
            config.estimator == "none",
            f"{config.agent_name} guides with its own {'labels' if config.agent_name == 'cfgrl' else 'Q_ρ'}: "
            "keep --agent.estimator=none",
        )
    if config.agent_name == "cfgrl":
        require(
            config.unconditional_weight >= 0,
            f"--agent.unconditional_weight={config.unconditional_weight} must be >= 0, e.g. 0.1",
        )
    if config.agent_name == "edp":
        require(config.bc_weight >= 0, f"--agent.bc_weight={config.bc_weight} must be >= 0")
    if config.agent_name in ("qam", "dac", "qsm"):
        require(
            config.estimator == "none" and config.best_of_n == 1,
            f"{config.agent_name} has no test-time guidance: keep --agent.estimator=none and --agent.best_of_n=1",
        )
        require(config.clip_grad_norm > 0, f"--agent.clip_grad_norm={config.clip_grad_norm} must be > 0, e.g. 1.0")
    for field in ("inv_temp", "alpha"):  # qam, qsm: β; dac, qsm: the BC weight α (fql's α is checked above too).
        if field in config:
            require(config[field] >= 0, f"--agent.{field}={config[field]} must be >= 0")
    if config.agent_name in ("dac", "qsm"):
        require(
            config.time_features >= 2 and config.time_features % 2 == 0,
            f"--agent.time_features={config.time_features} must be a positive even number (cos/sin pairs), e.g. 64",
        )
        require(
            config.actor_activation in ACTIVATION_NAMES,
            f"unknown --agent.actor_activation={config.actor_activation!r}"
            f"{closest(config.actor_activation, ACTIVATION_NAMES)}; choose one of {list(ACTIVATION_NAMES)}",
        )
    if "mask_convention" in config:  # Not gcqgf, whose masks come from relabelled goals.
        require(
            config.mask_convention in MASK_CONVENTIONS,
            f"unknown --agent.mask_convention={config.mask_convention!r}"
            f"{closest(config.mask_convention, MASK_CONVENTIONS)}; choose one of {list(MASK_CONVENTIONS)}",
        )
    if config.get("goal_conditioned", False):
        for prefix in ("", "actor_"):  # The critic's and the velocity field's goal proportions.
            names = [f"{prefix}p_{kind}" for kind in ("cur", "traj", "rand")]
            values = [config[name] for name in names]
            require(
                min(values) >= 0 and sum(values) > 0,
                f"--agent.{'/'.join(names)}={'/'.join(map(str, values))} must be >= 0 with a positive sum "
                "(they are normalised), e.g. " + ("0.2/0.5/0.3" if not prefix else "0/1/0"),
            )
