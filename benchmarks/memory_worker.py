"""Subprocess of ``tm_memory`` (and, with ``objective``, of ``tm_memory_cifar``): peak memory (MiB) of one MTT update (CPU: peak RSS above the RSS
before it, the high-water mark reset after a warm-up; CUDA: max allocated)."""

from __future__ import annotations

import json
import sys

import torch

from benchmarks.setups import make_trainer, tm_datamodule, tm_model
from lightning_sdc.methods.tm import MTT


def _status_mib(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` (peak RSS) of this process from ``/proc/self/status``, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset the peak-RSS high-water mark (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def objective_peak(memory: str, syn_steps: int, ipc: int) -> float:
    """Peak RSS (MiB) above the pre-update RSS of one ``trajectory_objective`` + backward on random 3×32×32 data,
    ConvNet-128, 10 classes × ``ipc`` (the MTT CIFAR-10 student without the Lightning module), after a
    one-step warm-up."""
    from lightning_sdc.methods.tm.meta import InnerStep, trajectory_objective
    from lightning_sdc.methods.tm.student import FunctionalStudent

    student = FunctionalStudent.build("ConvNet", (3, 32, 32), 10)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(ipc)
    start = 0.05 * torch.randn(student.num_params, generator=g)
    target = start + 0.01 * torch.randn(student.num_params, generator=g)
    base_images = torch.randn(10 * ipc, 3, 32, 32, generator=g)

    def update(steps: int) -> None:
        images, lr = base_images.clone().requires_grad_(True), torch.tensor(0.01, requires_grad=True)
        res = trajectory_objective(student.loss, images, lambda idx: labels, lr, start, target,
                                   [InnerStep(None)] * steps, memory=memory)
        res.objective.backward()

    update(1)
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs); CPU peak memory needs Linux")
    base = _status_mib("VmRSS")
    update(syn_steps)
    return _status_mib("VmHWM") - base


def main() -> None:
    if sys.argv[1] == "objective":  # objective MEMORY SYN_STEPS IPC
        torch.set_num_threads(1)
        print(objective_peak(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        return
    device, memory, syn_steps, experts, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
    torch.set_num_threads(1)
    # warm-up at syn_steps=1: data, lazy imports, allocator; its peak is below the measured run's
    model = tm_model(MTT, memory=memory, syn_steps=1, inner_augment=False, **size)
    make_trainer(1, accelerator=device, devices=1).fit(model, tm_datamodule(experts, net=size.get("net")))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        # the warm-up's own peak (imports, data, expert buffer) must not mask the measured update's
        if not _reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs); CPU peak memory needs Linux")
        base = _status_mib("VmRSS")
    model2 = tm_model(MTT, memory=memory, syn_steps=syn_steps, inner_augment=False, **size)
    make_trainer(1, accelerator=device, devices=1).fit(model2, tm_datamodule(experts, net=size.get("net")))
    if device == "cuda":
        print((torch.cuda.max_memory_allocated() - base) / 2**20)
    else:
        print(_status_mib("VmHWM") - base)


if __name__ == "__main__":
    main()
