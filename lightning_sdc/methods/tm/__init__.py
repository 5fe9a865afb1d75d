"""Trajectory-matching distillation with SDC: the shared base and MTT, FTD, TESLA, DATM (one module each)."""

from lightning_sdc.methods.tm.base import TrajectoryMatching
from lightning_sdc.methods.tm.datm import DATM
from lightning_sdc.methods.tm.ftd import FTD
from lightning_sdc.methods.tm.meta import (
    InnerStep,
    MatchResult,
    Memory,
    MetaGradient,
    chunk_schedule,
    trajectory_objective,
)
from lightning_sdc.methods.tm.mtt import MTT
from lightning_sdc.methods.tm.student import FunctionalStudent
from lightning_sdc.methods.tm.tesla import TESLA

__all__ = ["DATM", "FTD", "MTT", "TESLA", "FunctionalStudent", "InnerStep", "MatchResult", "Memory",
           "MetaGradient", "TrajectoryMatching", "chunk_schedule", "trajectory_objective"]
