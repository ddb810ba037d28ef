"""Test-time Q-guidance of a flow policy: the guided Euler sampler, its gradient estimators and best-of-N."""

from guidance.estimators import ESTIMATORS
from guidance.sampler import best_of_n, sample

__all__ = ["ESTIMATORS", "sample", "best_of_n"]
