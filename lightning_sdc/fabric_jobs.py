"""Jobs of independent networks as Lightning Fabric runs (``lightning-sdc experts`` and ``evaluate``): launching,
a rank, a device and collectives, no ``DistributedDataParallel``. The layout is given with the ``Trainer`` flags'
names (``--trainer.accelerator/devices/num_nodes/strategy``): :class:`FabricTrainerOptions`, checked before
anything is launched; :func:`launch` runs a function on every process of the job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from lightning_sdc.checks import check_int

#: accelerators and strategies a job of independent networks can run with
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork")


@dataclass
class FabricTrainerOptions:
    """Where the processes of a job run (the names of Lightning's ``Trainer`` flags).

    Args:
        accelerator: auto | cpu | cuda | gpu | mps.
        devices: devices per node: a count, a list of device indices (``[0, 1]`` or ``"0,1"``), -1 or "auto"
            (all).
        num_nodes: nodes of the job (a SLURM allocation or torchrun sets up the processes).
        strategy: auto | ddp | ddp_spawn | ddp_fork: how the processes are started (they exchange no gradients).
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: str = "auto"

    def check(self) -> FabricTrainerOptions:
        """Refuse a layout that cannot run, with one line naming the value and what is allowed (before launch)."""
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"trainer.accelerator={self.accelerator!r} is not allowed; allowed: {', '.join(ACCELERATORS)}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"trainer.strategy={self.strategy!r} is not allowed; allowed: {', '.join(STRATEGIES)}")
        d = self.devices
        ok = (
            (isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1))
            or d == "auto"
            or (isinstance(d, str) and d.strip().lstrip("-").isdigit() and (int(d) >= 1 or int(d) == -1))
            or (isinstance(d, str) and re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*,?\s*", d) is not None and "," in d)
            or (isinstance(d, list) and d and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in d))
        )
        if not ok:
            raise ValueError(f"trainer.devices={d!r} is not allowed; allowed: a count >= 1, -1 or 'auto' (all devices), "
                             "or a list of device indices")
        check_int("trainer.num_nodes", self.num_nodes, 1)
        return self


def trainer_options(trainer: FabricTrainerOptions | Mapping[str, Any] | None) -> FabricTrainerOptions:
    """:class:`FabricTrainerOptions` from itself, a dict of its fields or ``None`` (one process), checked."""
    if trainer is None:
        return FabricTrainerOptions()
    if isinstance(trainer, FabricTrainerOptions):
        return trainer.check()
    allowed = set(asdict(FabricTrainerOptions()))
    if unknown := sorted(set(trainer) - allowed):
        raise ValueError(f"trainer options {unknown} are not allowed; allowed: {', '.join(sorted(allowed))}")
    return FabricTrainerOptions(**dict(trainer)).check()


def _call_with_threads(fabric: Any, function: Callable[..., Any], threads: int, *args: Any) -> Any:
    import multiprocessing
    import os

    from lightning_sdc.signals import die_with_parent

    if multiprocessing.parent_process() is not None or int(os.environ.get("LOCAL_RANK", "0") or 0) > 0:
        die_with_parent()  # a worker: ends with the process that launched it, even one killed by SIGKILL
    if fabric.device.type == "cpu":
        torch.set_num_threads(threads)  # spawned CPU workers compute exactly like the launching process
    return function(fabric, *args)


def launch(trainer: FabricTrainerOptions | Mapping[str, Any] | None, function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(fabric, *args)`` on every process of the job ``trainer`` describes.

    ``fabric`` gives each process its ``global_rank``, ``world_size``, ``device`` and ``barrier``; with more than
    one process the default ``torch.distributed`` group is initialised, so the collectives of
    :mod:`lightning_sdc.evaluation.protocol` work. Returns what rank 0's ``function`` returns (``ddp_spawn``: in
    the launching process; ``ddp``: every process gets its own return value).
    """
    from lightning_fabric import Fabric

    opts = trainer_options(trainer)
    fabric = Fabric(**asdict(opts), precision="32-true")
    return fabric.launch(_call_with_threads, function, torch.get_num_threads(), *args)
