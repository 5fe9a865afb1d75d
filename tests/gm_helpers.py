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


def assert_same_updates(got, want, start, rel: float = 1e-3, msg: str = "") -> None:
    """``got`` and ``want`` were reached from ``start`` by the same algorithm through different float kernels
    (vmap vs loop, DDP vs one process, a hand-written loop): their difference must be a small fraction of how far
    the images moved. Rounding differences compound over steps and depend on the CPU's kernels, so an absolute
    1e-5 holds on one machine and fails on another; a wrong algorithm differs by a large fraction of the change.
    """
    import torch

    got, want, start = (t.detach().float() for t in (got, want, start))
    moved = float((want - start).abs().max())
    assert moved > 0, f"{msg}: the images did not move"
    diff = float((got - want).abs().max())
    assert diff <= rel * moved, f"{msg}: max |got − want| = {diff:.3g} > {rel:g} × max change {moved:.3g}"
    assert torch.isfinite(got).all()
