"""Matching losses and the SDC term shared by every distillation method."""

from lightning_sdc.matching.distances import (
    METRICS,
    batched_grad_norm,
    batched_gradient_distance,
    gradient_distance,
    layerwise_distance,
)
from lightning_sdc.matching.sdc import SDC_POWERS, check_sdc_args, grad_sq_norm, sdc_term

__all__ = [
    "METRICS",
    "SDC_POWERS",
    "batched_grad_norm",
    "batched_gradient_distance",
    "check_sdc_args",
    "grad_sq_norm",
    "gradient_distance",
    "layerwise_distance",
    "sdc_term",
]
