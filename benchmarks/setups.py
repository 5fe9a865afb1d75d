"""Tiny, seeded method/data factories shared by the benchmarks and the DDP / precision / GPU tests.

Every factory builds on the offline ``digits`` data (1×8×8, 10 classes) and a ConvNet small enough for a
2-core CPU; sizes are arguments so the benchmark can scale them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightning_sdc.data import RealDataModule, load_dataset
from lightning_sdc.experts import ExpertTrajectoryDataModule, train_experts

SMALL_NET = {"width": 16, "depth": 2}
EXPERT_EPOCHS = 3


def make_trainer(steps: int, **kw: Any) -> pl.Trainer:
    """A quiet Trainer for ``steps`` synthetic-set updates with no validation, logging or checkpoints."""
    kw.setdefault("limit_val_batches", 0)
    kw.setdefault("accelerator", "cpu")
    return pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                      max_epochs=-1, **kw)


def gm_datamodule(dataset: str = "digits") -> RealDataModule:
    return RealDataModule(dataset)


def gm_model(cls: type, *, ipc: int = 1, net: dict[str, int] | None = None, batch_real: int = 16, seed: int = 3,
             dataset: str = "digits", **kw: Any) -> pl.LightningModule:
    """A gradient-matching module (DC/DSA/DCC/DSAC), by default on digits with a small ConvNet (``net={}``: the
    reference ConvNet-128)."""
    return cls(dataset, ipc, arch_kwargs=SMALL_NET if net is None else net, batch_real=batch_real, seed=seed,
               eval_num_models=1, eval_epochs=1, **kw)


def ensure_experts(out: str | Path, *, net: dict[str, int] | None = None, num_experts: int = 2,
                   epochs: int = EXPERT_EPOCHS, device: str = "cpu") -> Path:
    """Train (once) ``num_experts`` MTT-style expert trajectories on digits into ``out``."""
    out = Path(out)
    if not (out.exists() and any(out.glob("expert_*.pt"))):
        train_experts(load_dataset("digits"), arch="ConvNet", arch_kwargs=net or SMALL_NET, num_experts=num_experts,
                      epochs=epochs, out=str(out), seed=0, device=device, progress=False)
    return out


def tm_datamodule(buffer_dir: str | Path, *, net: dict[str, int] | None = None) -> ExpertTrajectoryDataModule:
    return ExpertTrajectoryDataModule("digits", str(buffer_dir), arch_kwargs=net or SMALL_NET, max_start_epoch=2,
                                      expert_epochs=1, train_if_missing=False)


def tm_model(cls: type, *, ipc: int = 1, net: dict[str, int] | None = None, syn_steps: int = 4, seed: int = 3,
             **kw: Any) -> pl.LightningModule:
    """A trajectory-matching module (MTT/FTD/TESLA/DATM) on digits with a small ConvNet."""
    kw.setdefault("lr_img", 100.0)
    return cls("digits", ipc, arch_kwargs=net or SMALL_NET, syn_steps=syn_steps, seed=seed, eval_num_models=1,
               eval_epochs=1, **kw)
