"""Callbacks: ASDC λ ramp, evaluation, GraDN tracking, image logging and export."""

from lightning_sdc.callbacks.asdc import RAMP_SHAPES, ASDCRamp, asdc_lambda

__all__ = ["RAMP_SHAPES", "ASDCRamp", "asdc_lambda"]
