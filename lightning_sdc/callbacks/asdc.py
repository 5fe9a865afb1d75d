"""Adaptive SDC (ASDC): ramp λ up during distillation (paper Section 4; Appendix 3.2 raises it "logarithmically",
e.g. 0.002 → 0.008 over 10,000 steps for DSAC). The published paper has no code for the ramp, so its shape is an
option: ``"log"`` (default) ``λ₀ + (λ₁ − λ₀)·ln(1 + t)/ln(1 + T)``, fast early; ``"geometric"``
``λ₀·(λ₁/λ₀)^(t/T)``, slow early; ``"linear"``. ``t`` = ``trainer.global_step`` (restored by a checkpoint, so a
resumed run continues the ramp), ``T = steps``, then λ₁. Written to ``pl_module.sdc_lambda`` before every step,
logged as ``sdc/lambda``."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl

from lightning_sdc.checks import check_int, check_number

RAMP_SHAPES = ("log", "geometric", "linear")


def asdc_lambda(step: int, lambda_start: float, lambda_end: float, steps: int, shape: str = "log") -> float:
    """λ after ``step`` updates (see the module docstring)."""
    if shape not in RAMP_SHAPES:
        raise ValueError(f"shape={shape!r} is not allowed; allowed: {', '.join(RAMP_SHAPES)}")
    frac = min(max(step, 0), steps) / steps
    if shape == "linear":
        return lambda_start + (lambda_end - lambda_start) * frac
    if shape == "geometric":
        return lambda_start * (lambda_end / lambda_start) ** frac
    return lambda_start + (lambda_end - lambda_start) * math.log1p(min(max(step, 0), steps)) / math.log1p(steps)


class ASDCRamp(pl.Callback):
    """Set ``pl_module.sdc_lambda`` from a ramp before every training step (ASDC).

    Args:
        lambda_start: λ at step 0 (> 0 for ``"geometric"``, ≥ 0 otherwise).
        lambda_end: λ from step ``steps`` on.
        steps: number of synthetic-set updates the ramp spans (> 0).
        shape: ``"log"`` | ``"geometric"`` | ``"linear"``.
    """

    def __init__(self, lambda_start: float = 0.002, lambda_end: float = 0.008, steps: int = 10000, shape: str = "log"):
        for key, val in (("lambda_start", lambda_start), ("lambda_end", lambda_end)):
            check_number(f"ASDCRamp.{key}", val, 0, strict=False)
        check_int("ASDCRamp.steps", steps, 1)
        if shape not in RAMP_SHAPES:
            raise ValueError(f"ASDCRamp.shape={shape!r} is not allowed; allowed: {', '.join(RAMP_SHAPES)}")
        if shape == "geometric" and lambda_start <= 0:
            raise ValueError(f"ASDCRamp.lambda_start must be > 0 for the geometric shape, got {lambda_start!r}")
        self.lambda_start, self.lambda_end, self.steps, self.shape = float(lambda_start), float(lambda_end), steps, shape

    def value(self, step: int) -> float:
        """λ after ``step`` updates."""
        return asdc_lambda(step, self.lambda_start, self.lambda_end, self.steps, self.shape)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        pl_module.sdc_lambda = self.value(trainer.global_step)
        pl_module.log("sdc/lambda", pl_module.sdc_lambda, on_step=True, on_epoch=False)
