"""DAC: diffusion actor-critic, a training-time baseline, as the paper ran it (BASELINES.md §3.5).

A DDPM noise predictor next to the IQL critic (agents/ddpm.py holds the actor, its schedule, sampler and
update). DAC's own term is linear in the predicted noise:

    L_q = mean_{b, dims} [ sqrt(1 − ᾱ_k) · g ⊙ ε_θ(s, x_k, k) · w_b ],   g = ∇_a mean_j Q̄_j(s, a) at x_k,

whose gradient pushes ε_θ toward −∇Q, scaled by the noise level; L_actor = α · L_bc + L_q (α = `alpha`).
"""

import jax.numpy as jnp
import ml_collections

from agents.agent import Agent
from agents.ddpm import make_ddpm_agent


def dac_q_term(predicted_noise, gradient, noise_std, weights):
    loss = jnp.mean(noise_std * gradient * predicted_noise * weights[:, None])
    return loss, {"actor/q_grad_norm": jnp.mean(jnp.linalg.norm(gradient, axis=-1))}


def make_dac(config: ml_collections.ConfigDict) -> Agent:
    return make_ddpm_agent(config, dac_q_term)
