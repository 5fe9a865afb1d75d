"""Mixed precision: every method under ``bf16-mixed`` autocast gives an image gradient that
agrees with fp32, and the synthetic set and optimiser state stay fp32.

The gradient is read from the first SGD update: with a fresh momentum buffer the first step is
``x ← x − lr·∇x``, so ``(x₀ − x₁)/lr`` is the image gradient the method produced under the Trainer's precision
plugin. The cosine tolerance was measured on these tiny settings (see ``benchmarks/RESULTS.md``, ``bf16_cosine``)
and is set below the measured minimum with margin; an fp32-only code path (distances, SDC norm) or a dropped
autocast region would not change it, but a wrong-dtype leaf or a broken graph would drive it to ~0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from benchmarks.setups import ensure_experts, gm_datamodule, gm_model, make_trainer, tm_datamodule, tm_model
from lightning_sdc.methods.gm.gradient import DC, DCC, DSA, DSAC
from lightning_sdc.methods.tm import DATM, FTD, MTT, TESLA

#: measured minimum over the methods below was well above this (RESULTS.md); 0.98 leaves margin for bf16 noise
BF16_COSINE = 0.98


class RecordFirstUpdate(pl.Callback):
    """Keeps the images before training and after the first update, and the dtypes of the optimiser state."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.before = pl_module.synset.images.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.after = pl_module.synset.images.detach().clone()
            opt = pl_module.optimizers().optimizer
            self.state_dtypes = {v.dtype for s in opt.state.values() for v in s.values() if torch.is_tensor(v)}
            self.image_dtype = pl_module.synset.images.dtype


def image_gradient(make_model, precision: str, datamodule_factory) -> tuple[torch.Tensor, RecordFirstUpdate]:
    model = make_model()
    rec = RecordFirstUpdate()
    make_trainer(1, precision=precision, callbacks=[rec]).fit(model, datamodule_factory())
    return (rec.before - rec.after) / model.hparams.lr_img, rec


def gm(cls):
    def make():
        kw = {"outer_warmup": 0, "inner_warmup": 0} if cls in (DCC, DSAC) else {}
        return gm_model(cls, batch_real=32, seed=1, sdc_lambda=0.1, **kw)
    return make


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_experts(tmp_path_factory.mktemp("experts"))


def check_bf16(make_model, dm_factory) -> float:
    """Assert fp32 leaves/state and the bf16-vs-fp32 image-gradient cosine; return the cosine."""
    g32, _ = image_gradient(make_model, "32-true", dm_factory)
    g16, rec = image_gradient(make_model, "bf16-mixed", dm_factory)
    assert rec.image_dtype == torch.float32
    assert rec.state_dtypes <= {torch.float32}
    assert torch.isfinite(g16).all()
    cos = float(F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0))
    assert cos >= BF16_COSINE, cos
    return cos


@pytest.mark.parametrize("cls", [DC, DSA, DCC, DSAC], ids=lambda c: c.__name__)
def test_gm_bf16_gradient_agrees_with_fp32(cls) -> None:
    check_bf16(gm(cls), gm_datamodule)


@pytest.mark.parametrize("cls", [MTT, FTD, TESLA, DATM], ids=lambda c: c.__name__)
def test_tm_bf16_gradient_agrees_with_fp32(cls, experts: Path) -> None:
    check_bf16(lambda: tm_model(cls, sdc_lambda=0.1), lambda: tm_datamodule(experts))
