"""Training expert trajectories for trajectory matching (MTT ``buffer.py``; FTD ``buffer/buffer_FTD.py``).

Each expert is a fresh network trained on the whole real training set with the reference recipe: plain SGD (lr 0.01, momentum 0, weight decay 0, constant lr), batch 256 over a fresh
shuffle each epoch (last batch kept), cross-entropy, DSA on every batch with per-image parameters
(``siamese=False``), data optionally ZCA-whitened once beforehand. Snapshot 0 is the initialisation and one
snapshot is taken after every epoch. With ``rho > 0`` the optimiser is FTD's sharpness-aware GSAM/ASAM step
(:mod:`lightning_sdc.training.sam`) around the same SGD. The epochs run through the one training loop
(:class:`~lightning_sdc.training.TrainingLoop` with :meth:`~lightning_sdc.training.Schedule.mtt_expert`); what
is the experts' own here is the trajectory, the files, the manifest and the sharding.

Differences from the references, on purpose: network ``i`` is initialised from
``seeded_generator(seed, i)`` and the same generator then drives shuffling and augmentation, so an expert is
reproducible (the references reseed the global RNG from the wall clock in ``get_network``); the test accuracy
is measured once, after the last epoch, and stored in the expert's metadata (MTT evaluates every epoch for
logging only). Because an expert is a pure function of ``(seed, i)``, experts are trained independently: one
file per expert, dealt over the ranks of a job and the jobs of an array (:func:`train_experts`,
:mod:`lightning_sdc.experts.run`), each checkpointed every epoch so an interrupted run resumes where it stopped
(MTT saves every ``save_interval`` experts and restarts from scratch).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_sdc.checks import check_int, check_number
from lightning_sdc.evaluation.protocol import test_accuracy
from lightning_sdc.experts.buffer import (
    FORMAT_VERSION,
    expert_path,
    normalise_arch_kwargs,
    read_expert,
    save_expert,
    shared_meta,
    write_manifest,
)
from lightning_sdc.io import atomic_torch_save, safe_torch_load
from lightning_sdc.training import (
    PlainStep,
    Schedule,
    TrainingLoop,
    check_sam_settings,
    make_train_augment,
    seeded_generator,
)
from lightning_sdc.training import sharpness_aware as sharpness_aware_step


@dataclass
class ExpertRun:
    """One trained expert: its ``[epochs + 1, P]`` trajectory and final test accuracy."""

    trajectory: Tensor
    test_acc: float
    seconds: float
    param_names: list[str]
    param_shapes: list[list[int]]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA if available else CPU; anything else must be a valid, available torch device."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available")
    return dev


def _check_args(num_experts: int, epochs: int, lr: float, batch_size: int, rho: float, alpha: float) -> None:
    for name, value in (("num_experts", num_experts), ("epochs", epochs), ("batch_size", batch_size)):
        check_int(name, value, 1)
    check_number("lr", lr)
    check_sam_settings(rho, alpha)


def _flat(net: nn.Module) -> Tensor:
    from lightning_sdc.models.functional import flatten_params

    return flatten_params(net).detach().to("cpu", torch.float32)


class ExpertTraining:
    """Expert ``index`` of ``spec`` (a ``DatasetSpec``, ZCA-whitened if wanted) trained an epoch at a time.

    :meth:`run_epoch` trains one epoch and stores its snapshot; :meth:`state_dict` / :meth:`load_state_dict`
    capture everything the next epoch depends on, so an expert interrupted after epoch ``e`` and resumed from its
    checkpoint ends bit for bit equal to an uninterrupted one. Arguments as :func:`train_experts`, plus
    ``adaptive`` (ASAM's perturbation) and ``sharpness_aware`` (the GSAM step; default ``rho > 0``; ``True`` with
    ``rho = alpha = 0`` is plain SGD bit for bit).
    """

    def __init__(
        self,
        spec: Any,
        *,
        arch: str = "ConvNet",
        arch_kwargs: Mapping[str, Any] | None = None,
        epochs: int,
        index: int = 0,
        lr: float = 0.01,
        batch_size: int = 256,
        dsa: bool = True,
        dsa_strategy: str | None = None,
        rho: float = 0.0,
        alpha: float = 0.0,
        adaptive: bool = True,
        sharpness_aware: bool | None = None,
        seed: int = 0,
        device: str | torch.device = "auto",
    ) -> None:
        from lightning_sdc.models import build_network
        from lightning_sdc.models.functional import ParamLayout

        _check_args(1, epochs, lr, batch_size, rho, alpha)
        self.device = resolve_device(device)
        use_sam = rho > 0 if sharpness_aware is None else bool(sharpness_aware)
        if sharpness_aware is False and rho > 0:
            raise ValueError(f"rho={rho} needs the sharpness-aware step; pass sharpness_aware=None or True")
        self.index, self.epochs, self.lr, self.rho, self.batch_size = index, epochs, lr, rho, batch_size
        schedule = Schedule.mtt_expert(epochs, lr, batch_size=batch_size)
        augment = make_train_augment("dsa" if dsa else "none", dataset=spec.name, dsa_strategy=dsa_strategy)
        self.seconds = 0.0
        t0 = time.perf_counter()
        self.generator = seeded_generator(seed, index)
        channels, *im_size = spec.image_shape
        net = build_network(
            arch, channels, spec.num_classes, tuple(im_size), generator=self.generator, **dict(arch_kwargs or {})
        )
        self.net = net.to(self.device).train()
        self.layout = ParamLayout.from_module(self.net)
        self.trajectory = torch.empty(epochs + 1, int(self.layout.total), dtype=torch.float32)
        self.trajectory[0] = _flat(self.net)
        self.spec = spec
        self.images, self.labels = spec.train_images.to(self.device), spec.train_labels.to(self.device)
        self.loop = TrainingLoop(
            [self.net], [self.generator], self.images, self.labels, schedule=schedule, augment=augment,
            step=sharpness_aware_step(rho, alpha, adaptive=adaptive, model=self.net) if use_sam else PlainStep,
        )
        self.seconds += time.perf_counter() - t0

    @property
    def epoch(self) -> int:
        return self.loop.epoch

    @property
    def done(self) -> bool:
        return self.loop.done

    def run_epoch(self) -> float:
        """Train epoch ``self.epoch + 1`` (fresh shuffle, last batch kept) and store its snapshot; returns
        the mean training loss."""
        if self.done:
            raise RuntimeError(f"expert {self.index} has already trained its {self.epochs} epochs")
        t0 = time.perf_counter()
        total = self.loop.run_epoch()
        self.trajectory[self.epoch] = _flat(self.net)
        self.seconds += time.perf_counter() - t0
        return float(total) / self.images.shape[0]

    def state_dict(self) -> dict[str, Any]:
        """The resumable state after ``self.epoch`` epochs (CPU tensors; loadable with ``weights_only``)."""
        return {
            "index": self.index,
            "epoch": self.epoch,
            "trajectory": self.trajectory[: self.epoch + 1].clone(),
            "loop": self.loop.state_dict(),
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state that does not fit raises ``ValueError`` before anything changes."""
        missing = [k for k in ("index", "epoch", "trajectory", "loop") if k not in state]
        if missing:
            raise ValueError(f"expert checkpoint lacks {missing} (written by another version?)")
        epoch = int(state["epoch"])
        if int(state["index"]) != self.index or not 0 <= epoch <= self.epochs:
            raise ValueError(
                f"checkpoint of expert {state['index']} at epoch {epoch} does not fit expert {self.index} "
                f"of {self.epochs} epochs"
            )
        traj = state["trajectory"]
        if tuple(traj.shape) != (epoch + 1, self.trajectory.shape[1]):
            raise ValueError(
                f"checkpoint trajectory has shape {tuple(traj.shape)}, expected {(epoch + 1, self.trajectory.shape[1])}"
            )
        if state["loop"].get("epoch") != epoch:
            raise ValueError(f"checkpoint of expert {self.index} is at epoch {epoch} but its training state at "
                             f"{state['loop'].get('epoch')!r}")
        self.loop.load_state_dict(state["loop"])
        self.trajectory[: epoch + 1] = traj
        self.seconds = float(state.get("seconds", 0.0))

    def finish(self) -> ExpertRun:
        """Check the final parameters are finite, measure the test accuracy once, return the run."""
        if not self.done:
            raise RuntimeError(f"expert {self.index} has trained {self.epoch} of {self.epochs} epochs")
        if not torch.isfinite(self.trajectory[-1]).all():
            raise FloatingPointError(
                f"expert {self.index} diverged (non-finite parameters); lower lr={self.lr} or rho={self.rho}"
            )
        t0 = time.perf_counter()
        acc = test_accuracy(self.net, self.spec.test_images.to(self.device), self.spec.test_labels.to(self.device))
        self.seconds += time.perf_counter() - t0
        return ExpertRun(
            trajectory=self.trajectory,
            test_acc=float(acc),
            seconds=self.seconds,
            param_names=list(self.layout.names),
            param_shapes=[[int(d) for d in s] for s in self.layout.shapes],
        )


def train_expert(spec: Any, *, log: Callable[[str], None] | None = None, **kwargs: Any) -> ExpertRun:
    """Train one expert, :class:`ExpertTraining` ``(spec, **kwargs)``, to the end; ``log`` gets a line per epoch."""
    run = ExpertTraining(spec, **kwargs)
    while not run.done:
        loss = run.run_epoch()
        if log is not None:
            log(f"expert {run.index}: epoch {run.epoch}/{run.epochs} train loss {loss:.4f}")
    return run.finish()


def _resolve_spec(
    dataset: Any, zca: bool, root: str | None, download: bool, dataset_kwargs: Mapping[str, Any]
) -> tuple[Any, bool]:
    """Load ``dataset`` by name (ZCA-whitened when ``zca``) or accept a ``DatasetSpec``."""
    if isinstance(dataset, str):
        from lightning_sdc.data import load_dataset

        return load_dataset(dataset, root, download=download, zca=zca, **dataset_kwargs), bool(zca)
    if dataset_kwargs:
        raise ValueError(f"dataset_kwargs={dict(dataset_kwargs)} only apply when dataset is a name")
    if not all(hasattr(dataset, a) for a in ("train_images", "train_labels", "test_images", "num_classes")):
        raise TypeError(f"dataset must be a registered name or a DatasetSpec, got {type(dataset).__name__}")
    has_zca = getattr(dataset, "zca", None) is not None
    if zca and not has_zca:
        raise ValueError(
            "zca=True but the given DatasetSpec is not whitened; pass load_dataset(name, zca=True)"
        )
    return dataset, has_zca


def expert_config(
    spec: Any,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any] | None,
    zca: bool,
    epochs: int,
    lr: float,
    batch_size: int,
    dsa: bool,
    dsa_strategy: str | None,
    rho: float,
    alpha: float,
    seed: int,
    dataset_kwargs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The settings an expert file records and a resumed run must match (everything but the per-expert keys)."""
    if dsa:
        from lightning_sdc.augment import default_dsa_strategy

        dsa_strategy = dsa_strategy or default_dsa_strategy(spec.name)
    return {
        "dataset": spec.name,
        "dataset_kwargs": dict(dataset_kwargs or {}),
        "arch": arch,
        "arch_kwargs": normalise_arch_kwargs(arch, arch_kwargs),
        "zca": bool(zca),
        "epochs": int(epochs),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "dsa": bool(dsa),
        "dsa_strategy": dsa_strategy if dsa else None,
        "rho": float(rho),
        "alpha": float(alpha),
        "momentum": 0.0,
        "weight_decay": 0.0,
        "seed": int(seed),
        "format_version": FORMAT_VERSION,
    }


def _setting_conflicts(stored: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    return [f"{k}: file {stored.get(k)!r}, run {config[k]!r}" for k in config if stored.get(k) != config[k]]


def partial_path(out: str | os.PathLike, index: int) -> Path:
    """``<out>/expert_<index:04d>.pt.partial``: the per-epoch checkpoint of an expert still in training."""
    return expert_path(out, index).with_name(expert_path(out, index).name + ".partial")


def shard_ids(num_experts: int, shard: int = 0, num_shards: int = 1) -> list[int]:
    """The expert ids of job ``shard`` of ``num_shards``: ``i`` with ``i % num_shards == shard``."""
    check_int("num_experts", num_experts, 1)
    if not 0 <= check_int("shard", shard, 0) < check_int("num_shards", num_shards, 1):
        raise ValueError(f"shard must be an integer in [0, num_shards={num_shards}), got {shard!r}")
    return list(range(shard, num_experts, num_shards))


def scan_experts(
    out: str | os.PathLike, ids: Sequence[int], config: Mapping[str, Any]
) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """Split ``ids`` into finished experts (``{id: meta}``) and the ones still to train.

    A finished file written with other settings raises ``ValueError`` naming the keys; a file that cannot be
    read (truncated, not an expert file) counts as not finished, with a warning, and is retrained.
    """
    done: dict[int, dict[str, Any]] = {}
    missing: list[int] = []
    for i in ids:
        path = expert_path(out, i)
        if not path.exists():
            missing.append(i)
            continue
        try:
            _, meta = read_expert(path)
        except ValueError as exc:
            warnings.warn(f"{exc}; expert {i} will be retrained", stacklevel=2)
            missing.append(i)
            continue
        bad = _setting_conflicts({k: v for k, v in shared_meta(meta).items() if k in config}, config)
        if bad:
            raise ValueError(
                f"{path} exists with other settings (" + "; ".join(bad) + "); choose another out directory or delete it"
            )
        done[i] = meta
    return done, missing


def update_manifest(out: str | os.PathLike, num_experts: int, config: Mapping[str, Any] | None = None) -> Path:
    """Rewrite ``<out>/manifest.json`` from the expert files present on disk (ids ``0 … num_experts − 1``).

    Every writer (each rank, each job of an array) lists what it finds, so the manifest is never behind the files
    by more than a concurrent writer's last expert, and :class:`~lightning_sdc.experts.ExpertBuffer` also picks up
    files the manifest does not list yet.
    """
    entries, meta = [], dict(config or {})
    for i in range(num_experts):
        path = expert_path(out, i)
        if not path.exists():
            continue
        try:
            _, m = read_expert(path)
        except ValueError:
            continue
        meta = shared_meta(m)
        entries.append({"index": i, "file": path.name, "test_acc": float(m["test_acc"])})
    return write_manifest(out, meta, entries, num_experts)


def _train_one(
    spec: Any,
    index: int,
    out: str | os.PathLike,
    config: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    checkpoint_every: int,
    on_epoch: Callable[[int, int, float], None] | None,
    on_resume: Callable[[int], Any] | None = None,
    trained_by: Mapping[str, int] | None = None,
) -> tuple[Path, dict[str, Any], int]:
    """Train (or resume) expert ``index`` and write its file; returns (path, meta, epoch resumed from)."""
    run = ExpertTraining(spec, index=index, **kwargs)
    ckpt = partial_path(out, index)
    resumed = 0
    if ckpt.exists():
        try:
            state = safe_torch_load(ckpt, what="expert checkpoint")
        except ValueError as exc:
            warnings.warn(f"{exc}; expert {index} restarts from its initialisation", stacklevel=2)
        else:
            bad = _setting_conflicts(dict(state.get("config") or {}), config)
            if bad:
                raise ValueError(
                    f"{ckpt} was written with other settings (" + "; ".join(bad)
                    + "); choose another out directory or delete it"
                )
            try:
                run.load_state_dict(state)
            except ValueError as exc:  # checked before anything changed: the run is still at its initialisation
                warnings.warn(f"{ckpt}: {exc}; expert {index} restarts from its initialisation", stacklevel=2)
            resumed = run.epoch
            if on_resume is not None:
                on_resume(resumed)
    while not run.done:
        loss = run.run_epoch()
        if checkpoint_every and run.epoch % checkpoint_every == 0 and not run.done:
            atomic_torch_save({**run.state_dict(), "config": dict(config)}, ckpt)
        if on_epoch is not None:
            on_epoch(index, run.epoch, loss)
    result = run.finish()
    meta = {
        **config,
        "param_names": result.param_names,
        "param_shapes": result.param_shapes,
        "num_params": int(result.trajectory.shape[1]),
        "expert_index": index,
        "test_acc": result.test_acc,
        "train_seconds": round(result.seconds, 3),
        "trained_by": dict(trained_by or {}),
    }
    path = save_expert(expert_path(out, index), result.trajectory, meta)
    ckpt.unlink(missing_ok=True)
    return path, meta, resumed


def train_experts(
    dataset: Any,
    *,
    arch: str = "ConvNet",
    arch_kwargs: Mapping[str, Any] | None = None,
    num_experts: int,
    epochs: int,
    out: str,
    lr: float = 0.01,
    batch_size: int = 256,
    dsa: bool = True,
    dsa_strategy: str | None = None,
    zca: bool = False,
    rho: float = 0.0,
    alpha: float = 0.0,
    seed: int = 0,
    root: str | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    download: bool = True,
    dataset_kwargs: Mapping[str, Any] | None = None,
    shard: int = 0,
    num_shards: int = 1,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    checkpoint_every: int = 1,
    on_epoch: Callable[[int, int, float], None] | None = None,
) -> list[Path]:
    """Train ``num_experts`` experts and write them to ``out`` (MTT ``buffer.py``; FTD ``buffer_FTD.py``).

    Options as ``lightning-sdc experts`` (:func:`~lightning_sdc.experts.command.experts_command`: expert ``i``
    draws its initialisation, shuffling and augmentation from ``seeded_generator(seed, i)``, so its file does not
    depend on who trains it), and:

    Args:
        dataset: registry name (loaded with ``load_dataset(dataset, root, zca=zca)``) or a ``DatasetSpec``.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"`` (a ``torch.device`` too).
        download: allow fetching a missing torchvision dataset.
        rank, world_size, barrier: the process's place in a distributed job. The job's unfinished experts are
            dealt round-robin over the ``world_size`` processes; ``barrier`` (e.g. ``fabric.barrier``) is
            called before the directory is scanned and after the training, so all ranks agree on what is left.
        on_epoch: ``on_epoch(expert_id, epoch, train_loss)`` after every epoch (progress bars).

    Returns:
        The expert file paths of this job's shard, in index order. Finished experts with the same settings
        are kept and an interrupted one resumes from its checkpoint; a file written with other settings
        raises ``ValueError``.
    """
    _check_args(num_experts, epochs, lr, batch_size, rho, alpha)
    ids = shard_ids(num_experts, shard, num_shards)
    if check_int("rank", rank, 0) >= check_int("world_size", world_size, 1):
        raise ValueError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")
    check_int("checkpoint_every", checkpoint_every, 0)
    dev = resolve_device(device)
    spec, zca = _resolve_spec(dataset, zca, root, download, dict(dataset_kwargs or {}))
    config = expert_config(
        spec, arch=arch, arch_kwargs=arch_kwargs, zca=zca, epochs=epochs, lr=lr, batch_size=batch_size, dsa=dsa,
        dsa_strategy=dsa_strategy, rho=rho, alpha=alpha, seed=seed, dataset_kwargs=dataset_kwargs,
    )
    kwargs = {
        "arch": arch, "arch_kwargs": arch_kwargs, "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "dsa": dsa, "dsa_strategy": config["dsa_strategy"], "rho": rho, "alpha": alpha, "seed": seed,
        "device": dev,
    }
    if barrier is not None:
        barrier()
    done, missing = scan_experts(out, ids, config)
    if rank == 0:
        update_manifest(out, num_experts, config)  # records num_experts before any training
    mine = missing[rank::world_size]
    trained_by = {"rank": rank, "world_size": world_size, "shard": shard, "num_shards": num_shards}
    tag = f"[rank {rank}] " if world_size > 1 else ""
    log = print if progress else None
    if log and rank == 0 and done:
        log(f"{tag}kept {len(done)} finished experts in {out}: {sorted(done)}")
    from lightning_sdc.progress import progress as progress_bar

    with progress_bar(
        total=len(mine) * epochs, desc=f"{tag}experts", unit="epoch", enabled=bool(progress) and rank == 0
    ) as bar:

        def report(i: int, epoch: int, loss: float) -> None:
            bar.update()
            bar.set_postfix_str(f"expert {i} epoch {epoch}/{epochs} loss {loss:.4f}", refresh=False)
            if on_epoch is not None:
                on_epoch(i, epoch, loss)

        for i in mine:
            path, meta, resumed = _train_one(
                spec, i, out, config, kwargs, checkpoint_every, report, bar.update, trained_by
            )
            if log:
                start = f", resumed at epoch {resumed}" if resumed else ""
                bar.write(f"{tag}expert {i}: test acc {meta['test_acc']:.4f} ({meta['train_seconds']:.1f} s{start}) -> {path}")
    if barrier is not None:
        barrier()
    if rank == 0 or barrier is None:
        update_manifest(out, num_experts, config)
    return [expert_path(out, i) for i in ids]
