"""The measurements behind ``python -m benchmarks``; each returns one ratio measured within one run."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from benchmarks.setups import ensure_experts, gm_datamodule, gm_model, make_trainer, tm_datamodule, tm_model


class StepTimer(pl.Callback):
    """Wall time of every ``training_step`` (batch start → batch end), synchronised on CUDA."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.train_time = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._train_t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.train_time = time.perf_counter() - self._train_t0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self._t0)

    def median(self, skip: int = 1) -> float:
        return statistics.median(self.times[skip:] or self.times)


class StartImages(pl.Callback):
    """Keeps the synthetic images as training starts (after the DDP broadcast)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.images = pl_module.synset.images.detach().clone()


def step_time(model: pl.LightningModule, dm: pl.LightningDataModule, steps: int, device: str, **kw: Any) -> float:
    """Median step time of ``steps`` updates (the first, warm-up step excluded)."""
    timer = StepTimer()
    make_trainer(steps, accelerator=device, devices=1, callbacks=[timer], **kw).fit(model, dm)
    return timer.median()


def _timed(fn, repeats: int, device: str) -> float:
    fn()
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def gm_floor_time(model: Any, repeats: int, device: str) -> float:
    """The passes one GM update cannot avoid: per class, forward+backward of the real batch, forward + backward
    with ``create_graph`` of the synthetic block, then one backward of the summed distance into the images."""
    net = model.iteration_network(0)
    params = list(net.parameters())
    g = torch.Generator().manual_seed(0)
    reals = [model.real.sample(c, model.hparams.batch_real, g).to(model.device) for c in range(model.num_classes)]
    images = model.synset.images

    def once() -> None:
        total = images.new_zeros(())
        for c, real in enumerate(reals):
            y = torch.full((real.shape[0],), c, device=real.device)
            gr = torch.autograd.grad(F.cross_entropy(net(real), y), params)
            syn = images[model.synset.class_slice(c)]
            ys = torch.full((syn.shape[0],), c, device=syn.device)
            gs = torch.autograd.grad(F.cross_entropy(net(syn), ys), params, create_graph=True)
            total = total + sum(((a - b.detach()) ** 2).sum() for a, b in zip(gs, gr))
        torch.autograd.grad(total, images)

    return _timed(once, repeats, device)


def tm_floor_time(model: Any, repeats: int, device: str) -> float:
    """The passes one unrolled MTT update cannot avoid: ``syn_steps`` student forward + backward with
    ``create_graph`` on the whole synthetic set, then one backward of the parameter distance."""
    student = model.student
    theta0 = torch.zeros(student.num_params, device=model.device)
    with torch.no_grad():
        theta0.normal_(0, 0.05, generator=None)
    target = theta0 + 0.01
    images, labels = model.synset.images, model.synset.hard_labels
    lr = model.synset.syn_lr

    def once() -> None:
        theta = theta0.clone().requires_grad_(True)
        cur = theta
        for _ in range(model.syn_steps):
            (gt,) = torch.autograd.grad(student.loss(cur, images, labels), cur, create_graph=True)
            cur = cur - lr * gt
        loss = ((cur - target) ** 2).sum() / ((theta0 - target) ** 2).sum()
        torch.autograd.grad(loss, [images])

    return _timed(once, repeats, device)


def sdc_overhead(kind: str, steps: int, device: str, experts: Path | None = None, rounds: int = 3,
                 **size: Any) -> float:
    """Step time with λ > 0 over λ = 0 (same seed, same sizes): ``rounds`` alternating runs of each, the median
    over all their steps, so that a load change on a shared machine hits both sides alike."""
    times: dict[float, list[float]] = {0.0: [], 0.1: []}
    for _ in range(rounds):
        for lam in times:
            timer = StepTimer()
            if kind == "DC":
                from lightning_sdc.methods.gm.gradient import DC

                model, dm = gm_model(DC, sdc_lambda=lam, **size), gm_datamodule()
            else:
                from lightning_sdc.methods.tm import MTT

                model, dm = tm_model(MTT, sdc_lambda=lam, **size), tm_datamodule(experts, net=size.get("net"))
            make_trainer(steps, accelerator=device, devices=1, callbacks=[timer]).fit(model, dm)
            times[lam].extend(timer.times[1:])
    return statistics.median(times[0.1]) / statistics.median(times[0.0])


def gm_floor(steps: int, device: str, **size: Any) -> float:
    from lightning_sdc.methods.gm.gradient import DC

    model = gm_model(DC, **size)
    t = step_time(model, gm_datamodule(), steps, device)
    with torch.enable_grad():
        return t / gm_floor_time(model, max(3, steps // 2), device)


def tm_floor(steps: int, device: str, experts: Path, **size: Any) -> float:
    from lightning_sdc.methods.tm import MTT

    model = tm_model(MTT, inner_augment=False, **size)
    t = step_time(model, tm_datamodule(experts, net=size.get("net")), steps, device)
    return t / tm_floor_time(model, max(3, steps // 2), device)


def bf16_cosine(device: str, experts: Path, net: dict[str, int] | None = None) -> dict[str, float]:
    """Cosine between the bf16-mixed and fp32 image gradients of the first update (DC and MTT); ``net`` must
    be the ConvNet size the ``experts`` were trained with."""
    from lightning_sdc.methods.gm.gradient import DC
    from lightning_sdc.methods.tm import MTT

    out = {}
    for name, make, dm in (("DC", lambda: gm_model(DC, net=net, batch_real=32, sdc_lambda=0.1), gm_datamodule),
                           ("MTT", lambda: tm_model(MTT, net=net, sdc_lambda=0.1),
                            lambda: tm_datamodule(experts, net=net))):
        grads = []
        for precision in ("32-true", "bf16-mixed"):
            model, rec = make(), StartImages()
            make_trainer(1, accelerator=device, devices=1, precision=precision, callbacks=[rec]).fit(model, dm())
            grads.append((rec.images - model.synset.images.detach()).flatten().float())
        out[name] = float(F.cosine_similarity(grads[0], grads[1], dim=0))
    return out


def ddp_scaling(steps: int, **size: Any) -> tuple[float, float, float]:
    """GM (DC) throughput with 2 CPU processes × 1 thread over 1 process × 1 thread, both in fresh
    subprocesses; returns (ratio, seconds 1 proc, seconds 2 procs) of the ``steps - 2`` steady-state updates."""
    times = []
    for devices in (1, 2):
        cmd = [sys.executable, "-m", "benchmarks.ddp_worker", str(devices), str(steps), json.dumps(size)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**_env(), "OMP_NUM_THREADS": "1"})
        times.append(float(res.stdout.strip().splitlines()[-1]))
    return times[0] / times[1], times[0], times[1]


def tm_memory(steps_list: tuple[int, int], device: str, experts: Path, repeats: int = 3,
              **size: Any) -> dict[str, Any]:
    """Peak memory of one MTT update at ``syn_steps`` 40 vs 10 for both memory modes, each in a fresh
    subprocess, the median of ``repeats`` (the CPU allocator makes single RSS readings jumpy at small sizes).
    CPU: peak RSS during the update above the RSS before it (``VmHWM`` reset after a warm-up);
    CUDA: max allocated."""
    out: dict[str, Any] = {}
    for memory in ("unrolled", "constant"):
        peaks = []
        for syn_steps in steps_list:
            cmd = [sys.executable, "-m", "benchmarks.memory_worker", device, memory, str(syn_steps), str(experts),
                   json.dumps(size)]
            peaks.append(_median_of_runs(cmd, repeats))
        out[memory] = peaks[1] / peaks[0]
        out[f"{memory}_mib"] = peaks
    return out


def tm_memory_cifar(ipc: dict[str, int], steps_list: tuple[int, int] = (10, 40), repeats: int = 1) -> dict[str, Any]:
    """Peak RSS of one MTT meta-update at ``syn_steps`` 40 / 10 per memory mode (the keys of ``ipc``) at the MTT
    CIFAR-10 shape (3×32×32, ConvNet-128, 10 classes × ``ipc[mode]``; :func:`benchmarks.memory_worker.objective_peak`),
    each in a fresh subprocess, median of ``repeats``. (Unrolled at IPC 10 × 40 steps needs ≈ 20 GB.)"""
    out: dict[str, Any] = {}
    for memory, k in ipc.items():
        peaks = []
        for syn_steps in steps_list:
            cmd = [sys.executable, "-m", "benchmarks.memory_worker", "objective", memory, str(syn_steps), str(k)]
            peaks.append(_median_of_runs(cmd, repeats))
        out[memory] = peaks[1] / peaks[0]
        out[f"{memory}_mib"] = peaks
    return out


def _median_of_runs(cmd: list[str], repeats: int) -> float:
    """The median of the last stdout line (a number) of ``repeats`` fresh runs of ``cmd``."""
    runs = [float(subprocess.run(cmd, capture_output=True, text=True, check=True, env=_env())
                  .stdout.strip().splitlines()[-1]) for _ in range(repeats)]
    return statistics.median(runs)


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def experts_dir(device: str, net: dict[str, int]) -> Path:
    return ensure_experts(Path(tempfile.gettempdir()) / f"lightning_sdc_bench_experts_w{net['width']}d{net['depth']}",
                          net=net, device="cpu")


def gm_vectorized(steps: int, device: str, *, ipc: int = 10, batch_real: int = 256,
                  net: dict[str, int] | None = None) -> tuple[float, float, float]:
    """Per-class loop / vectorized (``torch.func.vmap``) DC step time at the reference ``batch_real`` 256 on
    ``mnist5k`` (1×28×28, 400 images per class); returns (ratio, loop s, vectorized s)."""
    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods.gm.gradient import DC

    times = []
    for engine in ("eager", "vmap"):
        model = DC("mnist5k", ipc, arch_kwargs=net or {"width": 32, "depth": 3}, batch_real=batch_real, seed=3,
                   inner_loop=1, engine=engine, eval_num_models=1, eval_epochs=1)
        times.append(step_time(model, RealDataModule("mnist5k"), steps, device))
    return times[0] / times[1], times[0], times[1]
