"""Subprocess of ``tm_memory``: peak memory (MiB) of one MTT update (CPU: RSS growth; CUDA: max allocated)."""

from __future__ import annotations

import json
import resource
import sys

import torch

from benchmarks.setups import make_trainer, tm_datamodule, tm_model
from lightning_sdc.methods.tm import MTT


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    device, memory, syn_steps, experts, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
    torch.set_num_threads(1)
    # warm-up at syn_steps=1: data, lazy imports, allocator; its peak is below the measured run's
    model = tm_model(MTT, memory=memory, syn_steps=1, inner_augment=False, **size)
    make_trainer(1, accelerator=device, devices=1).fit(model, tm_datamodule(experts, net=size.get("net")))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mib()
    model2 = tm_model(MTT, memory=memory, syn_steps=syn_steps, inner_augment=False, **size)
    make_trainer(1, accelerator=device, devices=1).fit(model2, tm_datamodule(experts, net=size.get("net")))
    if device == "cuda":
        print((torch.cuda.max_memory_allocated() - base) / 2**20)
    else:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base)


if __name__ == "__main__":
    main()
