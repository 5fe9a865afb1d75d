"""Expert training as a Lightning Fabric job: the same ``accelerator/devices/num_nodes/strategy`` flags as a
distillation run's Trainer scale it to several GPUs and nodes, and ``shard/num_shards`` split it over the
independent jobs of an array.

Why Fabric and not a Trainer: experts are independent networks that never exchange a gradient, so the
processes only need launching (``ddp`` re-runs the command once per device, ``ddp_spawn`` forks workers, SLURM
or torchrun start them), a rank, a device and a barrier — what :class:`lightning_fabric.Fabric` gives without a
``DistributedDataParallel`` wrapper that would average the experts' gradients. Each rank calls
:func:`~lightning_sdc.experts.train_experts` with its rank, world size and ``fabric.barrier``: the job's
unfinished experts are dealt round-robin over the ranks, each expert keyed by its id (so its file does not
depend on which rank or job trained it), written atomically, checkpointed every epoch, and rank 0 rewrites the
manifest at the end. The process layout and the launch are shared with ``lightning-sdc evaluate``
(:mod:`lightning_sdc.fabric_jobs`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_sdc.fabric_jobs import FabricTrainerOptions, launch, trainer_options

#: the process layout of an experts job (one class for every Fabric job: :mod:`lightning_sdc.fabric_jobs`)
ExpertTrainerOptions = FabricTrainerOptions


def _work(fabric: Any, dataset: Any, kwargs: dict[str, Any]) -> list[str]:
    from lightning_sdc.experts.training import train_experts

    paths = train_experts(
        dataset,
        device=fabric.device,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        barrier=fabric.barrier,
        **kwargs,
    )
    return [str(p) for p in paths]


def run_experts(
    dataset: Any,
    *,
    trainer: ExpertTrainerOptions | Mapping[str, Any] | None = None,
    **train_kwargs: Any,
) -> list[Path]:
    """Train experts with :func:`~lightning_sdc.experts.train_experts` on every process of a Fabric job.

    Args:
        dataset: registry name or ``DatasetSpec``.
        trainer: the process layout (:class:`ExpertTrainerOptions` or a dict of its fields); default one
            process on the best available accelerator.
        train_kwargs: everything else :func:`~lightning_sdc.experts.train_experts` takes (``num_experts``,
            ``epochs``, ``out``, ``shard``, ``num_shards`` …) except ``device``, ``rank``, ``world_size``,
            ``barrier``, which come from the job.

    Returns:
        The expert file paths of this job's shard (every rank's work is finished when it returns).
    """
    opts = trainer_options(trainer)  # a bad layout fails here, before any process is launched
    own = sorted({"device", "rank", "world_size", "barrier"} & set(train_kwargs))
    if own:
        raise ValueError(f"{own} come from the Fabric job; set the process layout with trainer= instead")
    if "num_experts" in train_kwargs:  # bad shard arguments fail here, before any process is launched
        from lightning_sdc.experts.training import shard_ids

        shard_ids(train_kwargs["num_experts"], train_kwargs.get("shard", 0), train_kwargs.get("num_shards", 1))
    if "out" in train_kwargs:  # a bad --out fails here, before any process is launched
        from lightning_sdc.io import prepare_output_dir

        prepare_output_dir(train_kwargs["out"], "--out")
    paths = launch(opts, _work, dataset, dict(train_kwargs))
    return [Path(p) for p in paths]


#: ``train_experts`` defaults the experts command line leaves out
_COMMAND_DEFAULTS = {"arch": "ConvNet", "lr": 0.01, "batch_size": 256, "dsa": True, "zca": False, "rho": 0.0,
                     "alpha": 0.0, "seed": 0, "root": None, "dsa_strategy": None}
#: ``train_experts`` keywords that do not change the experts (left out of the command)
_RUNTIME_KEYS = ("device", "progress", "download", "checkpoint_every", "on_epoch")


def experts_command_line(
    dataset: str,
    *,
    num_experts: int,
    epochs: int,
    out: str,
    arch_kwargs: Mapping[str, Any] | None = None,
    dataset_kwargs: Mapping[str, Any] | None = None,
    **settings: Any,
) -> str:
    """The ``lightning-sdc experts …`` command that trains exactly these experts (for error messages).

    ``settings`` are further ``train_experts`` keywords (``arch``, ``lr``, ``zca``, ``rho``, ``seed`` …); those
    equal to the command's defaults are left out, and so are those that do not change the experts (``device``,
    ``progress``, ``download``, ``checkpoint_every``). ``arch_kwargs`` become ``--arch_kwargs '<json>'``.
    """
    import json

    settings = {k: v for k, v in settings.items() if k not in _RUNTIME_KEYS}
    unknown = sorted(set(settings) - set(_COMMAND_DEFAULTS))
    if unknown:
        raise ValueError(f"{unknown} cannot be set on the experts command line; allowed: {sorted(_COMMAND_DEFAULTS)}")
    args = ["lightning-sdc", "experts", "--dataset", dataset]
    for key in ("arch",):
        if settings.get(key, _COMMAND_DEFAULTS[key]) != _COMMAND_DEFAULTS[key]:
            args += [f"--{key}", str(settings[key])]
    args += ["--num_experts", str(num_experts), "--epochs", str(epochs), "--out", str(out)]
    if arch_kwargs:
        args += ["--arch_kwargs", json.dumps(dict(arch_kwargs), sort_keys=True)]
    if dataset_kwargs:
        args += ["--dataset_kwargs", json.dumps(dict(dataset_kwargs), sort_keys=True)]
    for key, default in _COMMAND_DEFAULTS.items():
        if key == "arch" or key not in settings or settings[key] == default:
            continue
        value = settings[key]
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return shlex.join(args)
