"""QSM (the paper's "QSM-BC"): Q-score matching with a BC term, as the paper ran it (BASELINES.md §3.6).

A DDPM noise predictor next to the IQL critic (agents/ddpm.py holds the actor, its schedule, sampler and
update). QSM's own term matches the predicted noise to the scaled negative Q gradient:

    L_q = (1/B) Σ_b w_b mean_dims (−β g − ε_θ(s, x_k, k))²,   g = ∇_a mean_j Q̄_j(s, a) at x_k,

with β = `inv_temp`; as in the official runs nothing scales it by the noise level. L_actor = α · L_bc + L_q.
"""

import jax.numpy as jnp
import ml_collections

from agents.agent import Agent
from agents.ddpm import QTerm, make_ddpm_agent


def qsm_q_term(inv_temp: float) -> QTerm:
    def q_term(predicted_noise, gradient, noise_std, weights):
        del noise_std  # The official QSM term is not scaled by the noise level.
        loss = jnp.mean(weights * jnp.mean(jnp.square(-inv_temp * gradient - predicted_noise), axis=-1))
        return loss, {"actor/q_grad_norm": jnp.mean(jnp.linalg.norm(gradient, axis=-1))}

    return q_term


def make_qsm(config: ml_collections.ConfigDict) -> Agent:
    return make_ddpm_agent(config, qsm_q_term(config.inv_temp))
