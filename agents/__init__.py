"""Agents: a plain registry from name to a constructor `make_<name>(config) -> Agent`."""

import ml_collections

from agents.agent import Agent
from agents.cfgrl import make_cfgrl
from agents.dac import make_dac
from agents.edp import make_edp
from agents.fql import make_fql
from agents.qam import make_qam
from agents.qgf import make_qgf
from agents.qsm import make_qsm
from agents.robust_q import make_robust_q

AGENTS = {
    "qgf": make_qgf,
    # Goal-conditioned QGF is the same agent: its batches carry `goals`, which every network then takes.
    "gcqgf": make_qgf,
    "fql": make_fql,
    "edp": make_edp,
    "cfgrl": make_cfgrl,
    "robust_q": make_robust_q,
    "qam": make_qam,
    "dac": make_dac,
    "qsm": make_qsm,
}


def make(name: str, config: ml_collections.ConfigDict) -> Agent:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choose one of {sorted(AGENTS)}")
    return AGENTS[name](config)


__all__ = ["AGENTS", "Agent", "make"]
