"""What a gradient-matching run will cost, before it starts: arithmetic counted from the network (per class:
real forward + backward ≈ 3 passes, synthetic with ``create_graph`` ≈ 6, inner training ≈ 3 per image; each
evaluation point trains and tests ``num_models`` networks), time at the rate this device reaches on the run's own
network (:func:`measured_rate`). Python overhead and data loading are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lightning_sdc.data.registry import dataset_info
from lightning_sdc.models import build_network
from lightning_sdc.models.base import forward_flops

#: test-split sizes of the paper's data sets (torchvision's splits); others count 10,000
TEST_IMAGES = {"mnist": 10_000, "fashionmnist": 10_000, "svhn": 26_032, "cifar10": 10_000, "cifar100": 10_000,
               "tinyimagenet": 10_000, "digits": 360}


@dataclass(frozen=True)
class RunCost:
    """Arithmetic of one run, in FLOPs: ``updates`` image updates and ``eval_points`` evaluations."""

    update_flops: float
    updates: int
    eval_flops: float
    eval_points: int

    @property
    def flops(self) -> float:
        return self.update_flops * self.updates + self.eval_flops * self.eval_points


def evaluation_points(trainer: Any) -> list[int]:
    """The updates before the last at which the config's periodic evaluation would score the set
    (``val_check_interval``, counted in updates), ascending."""
    every, last = trainer.val_check_interval, int(trainer.max_steps)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        return []
    return list(range(every, last, every))


def gm_run_cost(model: Any, max_steps: int, eval_points: int) -> RunCost:
    """The arithmetic of a GM method ``model`` (built, not set up: no data is read) run for ``max_steps`` updates
    with ``eval_points`` evaluations under its own protocol (``model.eval_kwargs()``)."""
    h = model.hparams
    info = dataset_info(h.dataset)
    c, classes = info.image_shape, info.num_classes
    per_image = forward_flops(build_network(h.arch, c[0], classes, c[1:], **(h.arch_kwargs or {})), c)
    syn = classes * h.ipc
    outer, inner = model.outer_loop, model.inner_loop
    update = per_image * (3 * classes * h.batch_real + 6 * syn + 3 * inner * syn * (outer - 1) / outer)
    ev = model.eval_kwargs()
    eval_image = forward_flops(build_network(ev["arch"], c[0], classes, c[1:], **(ev.get("arch_kwargs") or {})), c)
    tests = TEST_IMAGES.get(info.name, 10_000)
    evaluation = ev["num_models"] * eval_image * (3 * ev["epochs"] * syn + tests)
    return RunCost(update, int(max_steps), evaluation, int(eval_points))


def measured_rate(model: Any, device: torch.device | str, repeats: int = 3) -> float:
    """FLOP/s of forward + backward of ``model``'s network on a ``batch_real`` batch on ``device`` (median of
    ``repeats`` after one warm-up)."""
    h = model.hparams
    info = dataset_info(h.dataset)
    c = info.image_shape
    net = build_network(h.arch, c[0], info.num_classes, c[1:], **(h.arch_kwargs or {})).to(device)
    x = torch.randn(h.batch_real, *c, device=device)
    y = torch.randint(0, info.num_classes, (h.batch_real,), device=device)
    params = [p for p in net.parameters() if p.requires_grad]

    def step() -> None:
        torch.autograd.grad(F.cross_entropy(net(x), y), params)

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda _: None)
    times = []
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    seconds = sorted(times[1:])[len(times[1:]) // 2]  # after one warm-up
    return 3 * forward_flops(net, c) * h.batch_real / seconds


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def estimate_lines(rows: Sequence[tuple[str, RunCost, float, int]]) -> list[str]:
    """One line per cell (``key``, cost, FLOP/s, seeds) and a total: FLOPs and estimated time."""
    lines, total = [], 0.0
    for key, cost, rate, seeds in rows:
        seconds = seeds * cost.flops / rate
        total += seconds
        lines.append(f"  {key}: {seeds} run(s) × ({cost.updates} updates × {cost.update_flops / 1e9:.0f} GFLOP + "
                     f"{cost.eval_points} evaluation(s) × {cost.eval_flops / 1e12:.1f} TFLOP) at "
                     f"{rate / 1e12:.2f} TFLOP/s ≈ {hours(seconds)}")
    lines.append(f"  estimated total: {hours(total)} (arithmetic at the measured rate; Python overhead and data "
                 "loading not counted)")
    return lines
