"""DDP with 2 CPU processes (``ddp_spawn``, gloo), configured only through the Trainer.

GM: classes are sharded over ranks, every rank builds the same per-iteration network from explicit generators
and scales its loss by the world size, so DDP's averaged image gradient is the single-process sum over classes:
after ``k`` steps the images equal a one-process run with the same seed (1e-5). Every rank must hold the same
synthetic set after the run. Results come back through files written by the ranks into ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from benchmarks.setups import ensure_experts, tm_datamodule, tm_model
from lightning_sdc.data import RealDataModule
from lightning_sdc.io import atomic_torch_save, safe_torch_load
from lightning_sdc.methods.gm.gradient import DC, DSA
from lightning_sdc.methods.tm import MTT
from tests.gm_helpers import SMALL, assert_same_updates, trainer

STEPS = 3


class SaveImagesPerRank(pl.Callback):
    """Writes ``rank{r}.pt`` (the synthetic images and the classes the rank matched) at the end of training."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = pl_module.synset.images.detach().cpu().clone()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        payload = {"images": pl_module.synset.images.detach().cpu().clone(), "start": self.start,
                   "classes": torch.tensor(pl_module.local_classes()),
                   "lr": pl_module.synset.syn_lr.detach().cpu().clone() if pl_module.synset.syn_lr is not None else None}
        atomic_torch_save(payload, Path(self.out) / f"rank{trainer.global_rank}.pt")


def gm_model(cls=DC):
    return cls("digits", 1, arch_kwargs=SMALL, batch_real=16, seed=3, eval_num_models=1, eval_epochs=1)


def run_ddp(model: pl.LightningModule, dm: pl.LightningDataModule, out: Path) -> list[dict]:
    tr = trainer(STEPS, strategy="ddp_spawn", devices=2, callbacks=[SaveImagesPerRank(str(out))])
    tr.fit(model, dm)
    return [safe_torch_load(out / f"rank{r}.pt") for r in range(2)]


@pytest.mark.ddp
def test_gm_ddp_matches_single_process_and_ranks_agree(tmp_path: Path) -> None:
    ranks = run_ddp(gm_model(), RealDataModule("digits"), tmp_path)
    # the classes really were sharded
    assert ranks[0]["classes"].tolist() == list(range(0, 10, 2))
    assert ranks[1]["classes"].tolist() == list(range(1, 10, 2))
    torch.testing.assert_close(ranks[0]["images"], ranks[1]["images"], rtol=0, atol=0)
    assert (ranks[0]["images"] - ranks[0]["start"]).abs().max() > 1e-3  # the steps moved the images

    single = gm_model()
    trainer(STEPS).fit(single, RealDataModule("digits"))
    expected = single.synset.images.detach()
    assert_same_updates(ranks[0]["images"], expected, ranks[0]["start"], 1e-3, "GM DDP")


@pytest.mark.ddp
@pytest.mark.slow
def test_dsa_ddp_matches_single_process(tmp_path: Path) -> None:
    ranks = run_ddp(gm_model(DSA), RealDataModule("digits"), tmp_path)
    torch.testing.assert_close(ranks[0]["images"], ranks[1]["images"], rtol=0, atol=0)
    single = gm_model(DSA)
    trainer(STEPS).fit(single, RealDataModule("digits"))
    assert_same_updates(ranks[0]["images"], single.synset.images, ranks[0]["start"], 1e-3, "DSA DDP")



@pytest.mark.ddp
def test_tm_ddp_ranks_hold_the_same_set(tmp_path: Path) -> None:
    """MTT: each rank draws its own expert/start epoch, DDP averages the meta-gradients; the images and the
    learned lr stay identical on both ranks, and differ from a one-process run (ranks drew differently)."""
    experts = ensure_experts(tmp_path / "experts")
    ranks = run_ddp(tm_model(MTT), tm_datamodule(experts), tmp_path)
    torch.testing.assert_close(ranks[0]["images"], ranks[1]["images"], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["lr"], ranks[1]["lr"], rtol=0, atol=0)
    assert (ranks[0]["images"] - ranks[0]["start"]).abs().max() > 0
