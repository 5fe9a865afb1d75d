"""Matching losses and the SDC term shared by every distillation method."""

from lightning_sdc.matching.distances import DIS_METRICS, DisMetric, gradient_distance
from lightning_sdc.matching.sdc import grad_sq_norm, sdc_term

__all__ = ["DIS_METRICS", "DisMetric", "grad_sq_norm", "gradient_distance", "sdc_term"]
