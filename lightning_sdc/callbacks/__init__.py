"""Callbacks: ASDC λ ramp, evaluation, GraDN tracking, image logging and export, pre-emption
checkpoints, the bar of ``fit`` (updates)."""

from lightning_sdc.callbacks.asdc import RAMP_SHAPES, ASDCRamp, asdc_lambda
from lightning_sdc.callbacks.cross_arch import CrossArchEvaluation
from lightning_sdc.callbacks.gradn import (
    GraDNTracker,
    curve_summary,
    ema_smooth,
    plot_gradn_curves,
    read_curve,
)
from lightning_sdc.callbacks.images import SyntheticImageLogger, SyntheticSetExporter
from lightning_sdc.callbacks.preemption import Preempted, PreemptionCheckpoint
from lightning_sdc.callbacks.progress_bar import UpdateProgressBar

__all__ = ["RAMP_SHAPES", "ASDCRamp", "CrossArchEvaluation", "GraDNTracker", "Preempted",
           "PreemptionCheckpoint", "SyntheticImageLogger", "SyntheticSetExporter", "UpdateProgressBar",
           "asdc_lambda", "curve_summary", "ema_smooth", "plot_gradn_curves", "read_curve"]
