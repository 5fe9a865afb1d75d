"""CUDA checks (``make test-gpu`` / ``pytest -m cuda``; skipped without a GPU by ``conftest.py``).

fp16 (GradScaler) and bf16 autocast on CUDA for one GM (DC) and one TM (MTT) method agree with fp32, the
synthetic set stays fp32, and the unrolled meta-gradient's peak CUDA memory grows with ``syn_steps`` while
the constant-memory mode's does not grow as fast; ``engine: vmap`` GM equals the eager class loop on CUDA; experts
train on the GPU through ``run_experts`` and resume. ``python -m benchmarks.gpu_check`` runs these and more.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from benchmarks.setups import ensure_experts, gm_datamodule, gm_model, make_trainer, tm_datamodule, tm_model
from lightning_sdc.methods.gm.gradient import DC
from lightning_sdc.methods.tm import MTT

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_experts(tmp_path_factory.mktemp("experts_gpu"))


class Start(pl.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.x = pl_module.synset.images.detach().clone()


def first_update(make, dm, precision: str) -> tuple[torch.Tensor, pl.LightningModule]:
    model, cb = make(), Start()
    make_trainer(1, accelerator="cuda", devices=1, precision=precision, callbacks=[cb]).fit(model, dm())
    return (cb.x - model.synset.images.detach()).flatten(), model


def models(experts: Path):
    return {"DC": (lambda: gm_model(DC, batch_real=32, sdc_lambda=0.1), gm_datamodule),
            "MTT": (lambda: tm_model(MTT, sdc_lambda=0.1), lambda: tm_datamodule(experts))}


@pytest.mark.parametrize("name", ["DC", "MTT"])
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_cuda_mixed_precision_matches_fp32(name: str, precision: str, experts: Path) -> None:
    make, dm = models(experts)[name]
    g32, _ = first_update(make, dm, "32-true")
    glow, model = first_update(make, dm, precision)
    assert model.synset.images.dtype == torch.float32 and model.synset.images.is_cuda
    if precision == "16-mixed" and not glow.abs().sum() > 0:
        pytest.skip("the first fp16 step overflowed and was skipped by the GradScaler (documented behaviour)")
    assert torch.isfinite(glow).all()
    assert float(F.cosine_similarity(glow, g32, dim=0)) >= 0.98


def _peak(memory: str, syn_steps: int, experts: Path) -> int:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model = tm_model(MTT, memory=memory, syn_steps=syn_steps, inner_augment=False, ipc=10)
    make_trainer(1, accelerator="cuda", devices=1).fit(model, tm_datamodule(experts))
    return torch.cuda.max_memory_allocated() - base


def test_cuda_peak_memory_unrolled_vs_constant(experts: Path) -> None:
    unrolled = _peak("unrolled", 40, experts) / _peak("unrolled", 10, experts)
    constant = _peak("constant", 40, experts) / _peak("constant", 10, experts)
    assert unrolled > 1.5, unrolled
    assert constant < unrolled, (constant, unrolled)


def test_cuda_vectorized_gm_equals_the_class_loop() -> None:
    """``engine: vmap`` (one vmap over classes) on CUDA: one DC and one DSA update equal the per-class loop
    up to a small fraction of the change (CUDA kernels round differently from CPU's, not the algorithm)."""
    from lightning_sdc.methods.gm.gradient import DSA
    from tests.gm_helpers import assert_same_updates

    for cls in (DC, DSA):
        runs = {}
        for engine in ("eager", "vmap"):
            model, cb = gm_model(cls, ipc=2, batch_real=32, sdc_lambda=0.1, outer_loop=1, inner_loop=1,
                                 engine=engine), Start()
            make_trainer(1, accelerator="cuda", devices=1, callbacks=[cb]).fit(model, gm_datamodule())
            runs[engine] = (cb.x, model.synset.images.detach())
        assert_same_updates(runs["vmap"][1], runs["eager"][1], runs["eager"][0], 1e-3, cls.__name__)


def test_cuda_experts_run_trains_resumes_and_loads_on_cpu(tmp_path: Path) -> None:
    """``lightning-sdc experts --trainer.accelerator cuda``: experts trained on the GPU are finite, beat chance,
    load on CPU (memory-mapped), and a second run keeps them."""
    from lightning_sdc.experts import ExpertBuffer, run_experts

    kw = {"arch_kwargs": {"width": 16, "depth": 2}, "num_experts": 2, "epochs": 10, "out": str(tmp_path),
          "progress": False}
    run_experts("digits", trainer={"accelerator": "cuda", "devices": 1}, **kw)
    buffer = ExpertBuffer(tmp_path)
    assert buffer.expert_ids == [0, 1] and buffer.complete
    for i in buffer.expert_ids:
        assert torch.isfinite(buffer.trajectory(i)).all() and buffer.expert_meta(i)["test_acc"] > 0.3
    mtimes = [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("expert_*.pt"))]
    run_experts("digits", trainer={"accelerator": "cuda", "devices": 1}, **kw)
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("expert_*.pt"))] == mtimes
