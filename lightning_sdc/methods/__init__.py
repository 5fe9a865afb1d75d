"""Distillation methods as LightningModules (one registry: :data:`METHODS`)."""

from lightning_sdc.methods.base import DistillationModule, DivergenceError
from lightning_sdc.methods.registry import METHODS, build_method, list_methods, register_method

__all__ = ["METHODS", "DistillationModule", "DivergenceError", "build_method", "list_methods", "register_method"]
