"""Training expert trajectories for trajectory matching (MTT ``buffer.py``; FTD ``buffer/buffer_FTD.py``).

Each expert is a fresh network trained on the whole real training set with the reference recipe: plain SGD (lr 0.01, momentum 0, weight decay 0, constant lr), batch 256 over a fresh
shuffle each epoch (last batch kept), cross-entropy, DSA on every batch with per-image parameters
(``siamese=False``), data optionally ZCA-whitened once beforehand. Snapshot 0 is the initialisation and one
snapshot is taken after every epoch. With ``rho > 0`` the optimiser is FTD's sharpness-aware GSAM/ASAM step
(:mod:`lightning_sdc.experts.sam`) around the same SGD.

Differences from the references, on purpose: network ``i`` is initialised from
``seeded_generator(seed, i)`` and the same generator then drives shuffling and augmentation, so an expert is
reproducible (the references reseed the global RNG from the wall clock in ``get_network``); the test accuracy
is measured once, after the last epoch, and stored in the expert's metadata (MTT evaluates every epoch for
logging only).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.evaluation.protocol import seeded_generator, test_accuracy
from lightning_sdc.experts.buffer import (
    FORMAT_VERSION,
    PER_EXPERT_KEYS,
    expert_path,
    normalise_arch_kwargs,
    read_expert,
    save_expert,
    shared_meta,
    write_manifest,
)
from lightning_sdc.experts.sam import SharpnessAwareStep


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
    if not isinstance(num_experts, int) or num_experts < 1:
        raise ValueError(f"num_experts must be an int >= 1, got {num_experts!r}")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be a finite number >= 0, got {rho}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")


def _flat(net: nn.Module) -> Tensor:
    from lightning_sdc.models.functional import flatten_params

    return flatten_params(net).detach().to("cpu", torch.float32)


def _ce_closure(net: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    return lambda: F.cross_entropy(net(x), y)


def train_expert(
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
    log: Callable[[str], None] | None = None,
) -> ExpertRun:
    """Train expert ``index`` on ``spec`` (a ``DatasetSpec``, ZCA-whitened if wanted); see the module docs.

    Args:
        spec: the dataset (``train_images``/``train_labels``/``test_images``/``test_labels``/``num_classes``/
            ``image_shape``/``name``).
        arch, arch_kwargs: network registry name and extra ``build_network`` keywords.
        epochs: training epochs (snapshots ``0 … epochs``).
        index: expert index; network init, shuffling and DSA draw from ``seeded_generator(seed, index)``.
        lr, batch_size: SGD learning rate and minibatch size (momentum and weight decay are 0).
        dsa: DSA on every batch (per-image parameters); ``dsa_strategy`` defaults to the dataset's.
        rho, alpha, adaptive: GSAM/ASAM parameters (FTD); used when ``sharpness_aware``.
        sharpness_aware: use the GSAM step; default ``rho > 0``. ``True`` with ``rho = alpha = 0`` is plain
            SGD bit for bit (tested).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"``.
        log: called with a progress line after every epoch.
    """
    from lightning_sdc.models import build_network
    from lightning_sdc.models.functional import ParamLayout

    _check_args(1, epochs, lr, batch_size, rho, alpha)
    dev = resolve_device(device)
    use_sam = rho > 0 if sharpness_aware is None else bool(sharpness_aware)
    if sharpness_aware is False and rho > 0:
        raise ValueError(f"rho={rho} needs the sharpness-aware step; pass sharpness_aware=None or True")
    augment = None
    if dsa:
        from lightning_sdc.augment import default_dsa_strategy, diff_augment

        strategy = dsa_strategy or default_dsa_strategy(spec.name)

        def augment(x: Tensor, g: torch.Generator) -> Tensor:
            return diff_augment(x, strategy, generator=g, siamese=False)

    t0 = time.perf_counter()
    g = seeded_generator(seed, index)
    channels, *im_size = spec.image_shape
    net = build_network(
        arch, channels, spec.num_classes, tuple(im_size), generator=g, **dict(arch_kwargs or {})
    )
    net = net.to(dev).train()
    layout = ParamLayout.from_module(net)
    trajectory = torch.empty(epochs + 1, int(layout.total), dtype=torch.float32)
    trajectory[0] = _flat(net)
    params = [p for _, p in net.named_parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    sam = (
        SharpnessAwareStep(params, opt, rho=rho, alpha=alpha, adaptive=adaptive, model=net)
        if use_sam
        else None
    )
    images, labels = spec.train_images.to(dev), spec.train_labels.to(dev)
    n = images.shape[0]
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=g).to(dev)
        total, count = torch.zeros((), device=dev), 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x, y = images[idx], labels[idx]
            if augment is not None:
                x = augment(x, g)
            if sam is not None:
                loss = sam.step(_ce_closure(net, x, y))
            else:
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            total += loss.detach() * y.shape[0]
            count += y.shape[0]
        trajectory[epoch] = _flat(net)
        if log is not None:
            log(f"expert {index}: epoch {epoch}/{epochs} train loss {float(total) / count:.4f}")
    if not torch.isfinite(trajectory[-1]).all():
        raise FloatingPointError(
            f"expert {index} diverged (non-finite parameters); lower lr={lr} or rho={rho}"
        )
    acc = test_accuracy(net, spec.test_images.to(dev), spec.test_labels.to(dev))
    return ExpertRun(
        trajectory=trajectory,
        test_acc=float(acc),
        seconds=time.perf_counter() - t0,
        param_names=list(layout.names),
        param_shapes=[[int(d) for d in s] for s in layout.shapes],
    )


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
    device: str = "auto",
    progress: bool = True,
    download: bool = True,
    dataset_kwargs: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Train ``num_experts`` experts and write them to ``out`` (MTT ``buffer.py``; FTD ``buffer_FTD.py``).

    Args:
        dataset: registry name (loaded with ``load_dataset(dataset, root, zca=zca)``) or a ``DatasetSpec``.
        arch: network registry name (MTT: ``ConvNet``; ``ConvNetD4`` for 64×64 data).
        arch_kwargs: extra ``build_network`` keywords (e.g. ``width``, ``depth``), recorded in the metadata.
        num_experts: experts to train (MTT README: 100; DATM: 100 of 100 epochs).
        epochs: epochs per expert (MTT: 50); each expert stores ``epochs + 1`` snapshots.
        out: output directory: ``expert_<i:04d>.pt`` per expert and ``manifest.json``.
        lr, batch_size: SGD learning rate (0.01) and minibatch (256); momentum and weight decay are 0.
        dsa: DSA on every batch; ``dsa_strategy`` defaults to the dataset's (no flip for digit data).
        zca: train on ZCA-whitened data (MTT's CIFAR commands use it).
        rho, alpha: FTD's sharpness-aware experts when ``rho > 0`` (FTD/DATM: ρ = 0.01, α = 0.3; α = 0 is
            ASAM).
        seed: expert ``i`` draws its initialisation, shuffling and augmentation from
            ``seeded_generator(seed, i)``.
        root: dataset root for torchvision datasets.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"``.
        progress: print one line per epoch and per expert.
        download: allow fetching a missing torchvision dataset.
        dataset_kwargs: loader options (e.g. ``{"seed": 1}`` for the seeded split of ``digits``), recorded in
            the metadata.

    Returns:
        The expert file paths, in index order. Experts whose file already exists with the same settings are
        kept (an interrupted run resumes); a file written with other settings raises ``ValueError``.
    """
    _check_args(num_experts, epochs, lr, batch_size, rho, alpha)
    dev = resolve_device(device)
    dataset_kwargs = dict(dataset_kwargs or {})
    spec, zca = _resolve_spec(dataset, zca, root, download, dataset_kwargs)
    if dsa:
        from lightning_sdc.augment import default_dsa_strategy

        dsa_strategy = dsa_strategy or default_dsa_strategy(spec.name)
    config = {
        "dataset": spec.name,
        "dataset_kwargs": dataset_kwargs,
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
    log = print if progress else None
    paths: list[Path] = []
    entries: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for i in range(num_experts):
        path = expert_path(out, i)
        if path.exists():
            _, meta = read_expert(path)
            stored = {k: v for k, v in shared_meta(meta).items() if k in config}
            bad = [k for k in config if stored.get(k) != config[k]]
            if bad:
                raise ValueError(
                    f"{path} exists with other settings ("
                    + "; ".join(f"{k}: file {stored.get(k)!r}, run {config[k]!r}" for k in bad)
                    + "); choose another out directory or delete it"
                )
            if log:
                log(f"expert {i}: kept {path} (test acc {meta['test_acc']:.4f})")
        else:
            run = train_expert(
                spec,
                arch=arch,
                arch_kwargs=arch_kwargs,
                epochs=epochs,
                index=i,
                lr=lr,
                batch_size=batch_size,
                dsa=dsa,
                dsa_strategy=dsa_strategy,
                rho=rho,
                alpha=alpha,
                seed=seed,
                device=dev,
                log=log,
            )
            meta = {
                **config,
                "param_names": run.param_names,
                "param_shapes": run.param_shapes,
                "num_params": int(run.trajectory.shape[1]),
                "expert_index": i,
                "test_acc": run.test_acc,
                "train_seconds": round(run.seconds, 3),
            }
            save_expert(path, run.trajectory, meta)
            if log:
                log(f"expert {i}: test acc {run.test_acc:.4f} ({run.seconds:.1f} s) -> {path}")
        paths.append(path)
        entries.append({"index": i, "file": path.name, "test_acc": float(meta["test_acc"])})
        write_manifest(out, {k: v for k, v in meta.items() if k not in PER_EXPERT_KEYS}, entries, num_experts)
    return paths
