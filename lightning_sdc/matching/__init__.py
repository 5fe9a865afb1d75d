"""Matching losses and the SDC term shared by every distillation method."""

from lightning_sdc.matching.distances import (
    DIS_METRICS,
    DisMetric,
    batched_grad_norm,
    batched_gradient_distance,
    gradient_distance,
    layerwise_distance,
)
from lightning_sdc.matching.sdc import grad_sq_norm, sdc_term

__all__ = [
    "DIS_METRICS", "DisMetric", "batched_grad_norm", "batched_gradient_distance", "grad_sq_norm",
    "gradient_distance", "layerwise_distance", "sdc_term"
]
