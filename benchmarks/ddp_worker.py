"""Subprocess of ``ddp_scaling``: time ``steps`` DC updates on ``devices`` CPU processes (1 thread each)."""

from __future__ import annotations

import json
import sys

import torch

from benchmarks.measure import StepTimer
from benchmarks.setups import gm_datamodule, gm_model, make_trainer
from lightning_sdc.methods.gm.gradient import DC


class RankZeroTimer(StepTimer):
    """Prints, from rank 0, the summed time of the steady-state steps (the first two — data, first network,
    DDP's first buckets — excluded); under ``ddp_spawn`` the callbacks run in the children."""

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.global_rank == 0:
            print(sum(self.times[2:]), flush=True)


def main() -> None:
    devices, steps, size = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    torch.set_num_threads(1)
    timer = RankZeroTimer()
    kw = {"strategy": "ddp_spawn"} if devices > 1 else {}
    model = gm_model(DC, **size)
    make_trainer(steps, devices=devices, callbacks=[timer], **kw).fit(model, gm_datamodule(model.hparams.dataset))


if __name__ == "__main__":
    main()
