"""Helpers the callbacks share: the log directory, writing metrics to every logger, the evaluated set, DDP
splits (:func:`~lightning_sdc.evaluation.protocol.rank_share`, re-exported here)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightning_sdc.evaluation.protocol import rank_share

__all__ = ["evaluated_set", "image_writers", "log_metrics", "output_dir", "rank_share"]


def output_dir(trainer: pl.Trainer, dirpath: str | None = None) -> Path:
    """``dirpath`` if given, else the run's log directory (the logger's version folder, or ``default_root_dir``);
    ``trainer.log_dir`` broadcasts under DDP, so every rank must call this."""
    return Path(dirpath) if dirpath is not None else Path(trainer.log_dir or trainer.default_root_dir)


def log_metrics(trainer: pl.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """``log_metrics`` on every logger of ``trainer`` (rank zero only), also from hooks where ``self.log`` is
    not allowed (``on_train_end``)."""
    if not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def image_writers(trainer: pl.Trainer) -> list[Any]:
    """Experiments of the loggers that take images (``add_image``: TensorBoard and tensorboardX writers)."""
    writers = []
    for logger in trainer.loggers:
        try:
            experiment = logger.experiment
        except Exception:  # noqa: BLE001 - a logger without an experiment simply takes no images
            continue
        if callable(getattr(experiment, "add_image", None)):
            writers.append(experiment)
    return writers


def evaluated_set(pl_module: pl.LightningModule) -> Any:
    """The synthetic set a method is judged by: ``eval_synset()`` if it has one (FTD: the EMA), else
    ``synset``."""
    if callable(getattr(pl_module, "eval_synset", None)):
        return pl_module.eval_synset()
    synset = getattr(pl_module, "synset", None)
    if synset is None:
        raise TypeError(f"{type(pl_module).__name__} has no synthetic set (need a DistillationModule)")
    return synset
