"""One side of the GM speed comparison in a fresh process (``python -m benchmarks.gm_worker SIDE IPC UPDATES``).

Each side runs in its own process, as a user runs it: the reference loop with PyTorch's and glibc's defaults, this
library through a Trainer exactly as a paper config runs it (``engine: auto`` resolved for a run of the paper's
length, then stopped after ``UPDATES`` updates), so neither side inherits the other's allocator policy, compiled
code or warmed caches. One torch thread. Prints one JSON line: per-update seconds (the first includes any
compilation) and per-update process CPU seconds, the engine that ran and how many graphs dynamo compiled.

``python -m benchmarks.gm_worker equality IPC 0 OUT``: the image gradient of the first λ = 0 update at the benchmark
size with the eager engine in fp32 and fp64 and the compiled engine in fp32, saved to ``OUT``.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from benchmarks import speed

#: the paper configs' run lengths (``configs/dc/fashionmnist_ipc{1,10}.yaml``: 1000 iterations × outer_loop)
PAPER_STEPS = {1: 1000, 10: 10000}


def library(ipc: int, updates: int, batch_real: int = 256) -> dict:
    """``updates`` DC updates through a Trainer configured for the paper's run length, default engine."""
    from benchmarks.measure import StepTimer
    from benchmarks.setups import make_trainer
    from lightning_sdc.data import RealDataModule

    class Stop(StepTimer):
        cpu: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
            self._c0 = time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            self.cpu.append(time.process_time() - self._c0)
            if len(self.times) >= updates:
                trainer.should_stop = True

    rec = Stop()
    model = speed.dc_module(ipc, batch_real)
    make_trainer(PAPER_STEPS[ipc], callbacks=[rec]).fit(model, RealDataModule(speed.GM_DATASET))
    return {"times": rec.times, "cpu": rec.cpu, "engine": model.engine.name, "graphs": _graphs()}


def reference(ipc: int, updates: int, batch_real: int = 256) -> dict:
    from lightning_sdc.data import load_dataset

    times, cpu = speed.reference_dc_times(ipc, batch_real, load_dataset(speed.GM_DATASET), updates)
    return {"times": times, "cpu": cpu, "engine": "reference", "graphs": _graphs()}


def _graphs() -> int:
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"]["unique_graphs"])


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    side, ipc, updates = argv[0], int(argv[1]), int(argv[2])
    t0 = time.perf_counter()
    if side == "equality":
        torch.save(speed.first_image_gradients(ipc), argv[3])
        out = {"graphs": _graphs()}
    else:
        out = (library if side == "library" else reference)(ipc, updates)
    out["wall"] = time.perf_counter() - t0
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
