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


PRESETS = {
    "default": lambda c: None,
    "paper": paper_preset,
    "demo": demo_preset,
}


def get_config(agent: str = "qgf", preset: str = "default") -> ml_collections.ConfigDict:
    if agent not in AGENT_CONFIGS:
        raise ValueError(f"unknown agent {agent!r}; choose one of {sorted(AGENT_CONFIGS)}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = AGENT_CONFIGS[agent]()
    PRESETS[preset](config)
    return config
