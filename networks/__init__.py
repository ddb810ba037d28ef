"""Flax modules of qgf: the MLP trunk, the velocity field, the critic ensemble and the value."""

from networks.critic import Critic, Value, aggregate
from networks.mlp import MLP
from networks.noise_predictor import NoisePredictor
from networks.velocity_field import VelocityField

__all__ = ["MLP", "NoisePredictor", "VelocityField", "Critic", "Value", "aggregate"]
