"""Shared helpers for the gradient-matching tests (tiny settings on digits)."""

from __future__ import annotations

import pytorch_lightning as pl

from lightning_sdc.data import RealDataModule

SMALL = {"width": 16, "depth": 2}


def trainer(steps: int, **kw) -> pl.Trainer:
    kw.setdefault("limit_val_batches", 0)
    kw.setdefault("enable_checkpointing", False)
    return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                      enable_progress_bar=False, enable_model_summary=False, check_val_every_n_epoch=None,
                      num_sanity_val_steps=0, max_epochs=-1, **kw)


def fit(model, steps: int, **kw):
    trainer(steps, **kw).fit(model, RealDataModule("digits"))
    return model
