"""Every default and named preset of qgf, as `ml_collections.ConfigDict`s.

`get_config(agent, preset)` returns the agent's defaults with the preset applied. Defaults follow the
QGF paper's network shapes at a size that trains on one GPU in hours; `paper` is the paper's setting;
`demo` is the small setting `python main.py` runs on a laptop CPU in minutes.
"""

import ml_collections

# The paper's grid of guidance weights for single-task OGBench (w = 0 is plain BC).
PAPER_GUIDANCE_WEIGHTS = (0.0, 0.004, 0.008, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12)


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
    c.dataset_dir = ""  # Where datasets live ("" is OGBench's ~/.ogbench/data).
    c.dataset_episodes = 0  # Episodes to generate when the dataset is missing (0: OGBench's count).
    c.dataset_episode_steps = 1001  # Steps per generated episode (OGBench's recipe: 1001).
    return c


AGENT_CONFIGS = {
    "qgf": qgf_config,
}


def paper_preset(c: ml_collections.ConfigDict) -> None:
    """The paper's main single-task setting (4×1024 networks, batch 1024, γ = 0.999)."""
    c.actor_hidden_dims = (1024, 1024, 1024, 1024)
    c.critic_hidden_dims = (1024, 1024, 1024, 1024)
    c.batch_size = 1024
    c.discount = 0.999


def demo_preset(c: ml_collections.ConfigDict) -> None:
    """Small networks and a short sweep, sized for a 2-core CPU in minutes."""
    c.actor_hidden_dims = (256, 256, 256)
    c.critic_hidden_dims = (256, 256, 256)
    c.batch_size = 256
    c.discount = 0.99
    c.guidance_weights = (0.0, 0.01, 0.03, 0.1, 0.3)


def demo_run(r: ml_collections.ConfigDict) -> None:
    r.env_name = "cube-single-play-singletask-task1-v0"
    r.train_steps = 20_000
    r.steps_per_call = 500
    r.log_every = 1000
    r.eval_every = 20_000
    r.save_every = 10_000
    r.eval_episodes = 20
    # A small dataset of its own, so it never stands in for OGBench's full-size file.
    r.dataset_dir = "~/.ogbench/data/qgf-demo"
    r.dataset_episodes = 40
    r.dataset_episode_steps = 1001


# Each preset changes the agent config and the run config in place.
PRESETS = {
    "default": (lambda c: None, lambda r: None),
    "paper": (paper_preset, lambda r: None),
    "demo": (demo_preset, demo_run),
}


def get_config(agent: str = "qgf", preset: str = "default") -> ml_collections.ConfigDict:
    if agent not in AGENT_CONFIGS:
        raise ValueError(f"unknown agent {agent!r}; choose one of {sorted(AGENT_CONFIGS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = AGENT_CONFIGS[agent]()
    PRESETS[preset][0](config)
    return config


def get_run_config(preset: str = "default") -> ml_collections.ConfigDict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = run_config()
    PRESETS[preset][1](config)
    return config
