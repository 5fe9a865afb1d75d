"""Distillation methods as LightningModules (one registry: :data:`METHODS`)."""

from lightning_sdc.methods.base import DistillationModule, DivergenceError
from lightning_sdc.methods.gm.gradient import DC, DCC, DSA, DSAC, GradientMatching
from lightning_sdc.methods.registry import METHODS, build_method, list_methods, register_method
from lightning_sdc.methods.tm import DATM, FTD, MTT, TESLA, TrajectoryMatching

__all__ = ["DC", "DCC", "DSA", "DSAC", "GradientMatching", "DATM", "FTD", "METHODS", "MTT", "TESLA",
           "DistillationModule", "DivergenceError", "TrajectoryMatching", "build_method", "list_methods",
           "register_method"]
