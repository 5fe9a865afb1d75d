"""Training classifiers on the real training set: the ensembles Θ_t of Definitions 1–2, coreset selectors.

One routine, :func:`trained_network`, serves the difficulty ensembles, Herding's feature network and Forgetting's
bookkeeping (and keeps finished networks on disk: :class:`KeptNetworks`): the one
training loop (:class:`~lightning_sdc.training.TrainingLoop`) with the classifier schedule
(:meth:`~lightning_sdc.training.Schedule.classifier`): minibatch SGD over a fresh seeded shuffle each epoch
(last, smaller batch kept), cross-entropy, optional training augmentation of the evaluation protocol
(``make_train_augment``), momentum 0.9 and weight decay 5e-4 with the learning rate × 0.1 in place from epoch
``epochs // 2`` on — close to, not exactly, the schedule of DC ``utils.py:evaluate_synset`` (which runs
``epochs + 1`` passes, drops the lr after pass ``epochs // 2 + 1`` and rebuilds the optimiser; the evaluation
protocol, :mod:`lightning_sdc.evaluation`, follows DC exactly). ``on_batch`` sees the logits of each training
forward pass *before* that batch's optimiser step — what Toneva et al. record to count forgetting events.

Model ``i`` of an ensemble is initialised from ``seeded_generator(seed, _ENSEMBLE_KEY, i)`` and the same
generator drives its shuffles, subsets and augmentation, so an ensemble is reproducible and its members differ
in both initialisation and data order (data_diet trains its runs with different model and data-order seeds).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_sdc.checks import check_int, check_number
from lightning_sdc.io import atomic_torch_save, safe_torch_load
from lightning_sdc.progress import advance
from lightning_sdc.signals import hold
from lightning_sdc.training import (
    Augment,
    BatchHook,
    Schedule,
    TrainAugment,
    TrainingLoop,
    make_train_augment,
    seeded_generator,
)

#: domain tag mixed into ensemble generators (never coincides with the evaluation's ``(seed, i)`` keys)
_ENSEMBLE_KEY = 0x44494646  # "DIFF"


def train_classifier(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    batch_size: int = 256,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    decay: bool = True,
    on_batch: BatchHook | None = None,
) -> nn.Module:
    """Train ``net`` in place on ``(images, labels)`` for ``epochs`` passes (see the module docstring).

    Args:
        net: the network (moved nowhere: put it on the images' device first).
        images, labels: ``[N, …]`` inputs and ``[N]`` class indices.
        epochs: passes over the data (0 leaves the network at its initialisation).
        decay: multiply the lr by 0.1 after ``epochs // 2`` passes (DC's evaluation schedule).
        on_batch: ``on_batch(rows, logits, labels)`` after each forward, before the step; ``rows`` are the
            batch's row indices into ``images`` (CPU int64), ``logits`` are detached.
        generator: shuffles and augmentation (default: seeded with 0).
    """
    if images.shape[0] != labels.shape[0] or labels.dim() != 1:
        raise ValueError(
            f"need images [N, ...] and labels [N], got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    schedule = Schedule.classifier(epochs, lr, batch_size=batch_size, momentum=momentum,
                                   weight_decay=weight_decay, decay=decay)
    TrainingLoop([net], [generator or torch.Generator().manual_seed(0)], images, labels, schedule=schedule,
                 augment=augment, on_batch=on_batch,
                 on_epoch=advance,  # the command's progress bar, if one is open (lightning_sdc.progress.phase)
                 ).run()
    net.eval()
    return net


class KeptNetworks:
    """Finished trained networks kept in ``directory`` (``<out>/networks``) so that a command stopped by a signal and
    run again reuses them instead of training them again; ``reused`` and ``trained`` count this run's networks.

    :func:`trained_network` names a network's file ``<name>_<digest>.pt``, ``digest`` hashing every setting that
    shapes it (dataset name, shape and a sample of its pixels and labels, arch, arch_kwargs, epochs, lr, batch size,
    augmentation, train fraction, generator key: seed, role, index), so a network of other settings is never reused.
    The file holds those settings and the tensors (the network's and what its training filled in), is written
    atomically under :func:`~lightning_sdc.signals.hold` and read with ``torch.load(weights_only=True)``; one that
    cannot be read or does not fit is trained again, with a warning naming it.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory, self.reused, self.trained = Path(directory), 0, 0

    def load(self, path: Path, settings: dict[str, Any], tensors: dict[str, Tensor]) -> bool:
        """Copy the file's tensors into ``tensors`` (in place); ``False`` (nothing changed) if it is absent or unfit."""
        if not path.exists():
            return False
        try:
            kept = safe_torch_load(path, what="kept network")
            if kept["settings"] != settings or ({k: (v.shape, v.dtype) for k, v in kept["tensors"].items()}
                                                != {k: (v.shape, v.dtype) for k, v in tensors.items()}):
                raise ValueError("its settings or tensors differ")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            warnings.warn(f"kept network {path} is not reused ({exc}); it is trained again", stacklevel=3)
            return False
        with torch.no_grad():
            for k, v in tensors.items():
                v.copy_(kept["tensors"][k])
        self.reused += 1
        return True

    def save(self, path: Path, settings: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        with hold():  # a finished network is written whole before a signal stops the command
            atomic_torch_save({"settings": settings, "tensors": {k: v.detach().cpu() for k, v in tensors.items()}}, path)
        self.trained += 1

    def report(self, command: str) -> None:
        """Print one line saying how many networks were reused (nothing when none was)."""
        if self.reused:
            print(f"{command}: reused {self.reused} of {self.reused + self.trained} trained networks kept in "
                  f"{self.directory}", flush=True)


def trained_network(spec: Any, key: tuple[int, ...], *, epochs: int, arch: str = "ConvNet",
                    arch_kwargs: dict[str, Any] | None = None, lr: float = 0.01, batch_size: int = 256,
                    augment: TrainAugment = "none", train_fraction: float = 1.0, device: str | torch.device = "cpu",
                    on_batch: BatchHook | None = None, state: dict[str, Tensor] | None = None,
                    kept: KeptNetworks | None = None, name: str = "network") -> nn.Module:
    """An ``arch`` network drawn from ``seeded_generator(*key)`` and trained by :func:`train_classifier` on the
    training split of ``spec`` (on a random ``train_fraction`` of it, drawn from the same generator, when < 1).

    ``on_batch`` fills ``state`` (named tensors, e.g. Forgetting's counts) while the network trains. With ``kept``
    the finished network and ``state`` are kept as file ``name_<digest>.pt`` there, and a kept file of the same
    settings is loaded instead of training (:class:`KeptNetworks`).
    """
    from lightning_sdc.models import NETWORKS, build_network

    device, g, (c, h, w) = torch.device(device), seeded_generator(*key), spec.image_shape
    net = build_network(arch, c, spec.num_classes, (h, w), generator=g, **dict(arch_kwargs or {})).to(device)
    x, y = spec.train_images, spec.train_labels
    probe = torch.cat([x.detach().reshape(-1)[:: max(1, x.numel() // 65536)].double().cpu(), y.double().cpu()])
    settings = json.loads(json.dumps({
        "dataset": spec.name, "train_shape": list(x.shape), "data": hashlib.sha256(probe.numpy().tobytes()).hexdigest(),
        "arch": NETWORKS.canonical(arch), "arch_kwargs": dict(arch_kwargs or {}), "epochs": epochs, "lr": lr,
        "batch_size": batch_size, "augment": augment, "train_fraction": train_fraction, "key": list(key)},
        sort_keys=True, default=str))
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = kept.directory / f"{name}_{digest}.pt" if kept is not None else None

    def tensors() -> dict[str, Tensor]:
        return {**{f"network.{k}": v for k, v in net.state_dict().items()},
                **{f"state.{k}": v for k, v in (state or {}).items()}}

    if kept is not None and kept.load(path, settings, tensors()):
        advance(epochs)  # the command's progress bar counts the kept network's epochs as done
        return net.eval()
    x, y = x.to(device), y.to(device)
    if train_fraction < 1:
        rows = torch.randperm(x.shape[0], generator=g)[: max(1, round(train_fraction * x.shape[0]))].to(device)
        x, y = x.index_select(0, rows), y.index_select(0, rows)
    aug = make_train_augment(augment, dataset=spec.name, arch=arch)
    train_classifier(net, x, y, epochs=epochs, lr=lr, batch_size=batch_size, augment=aug, generator=g,
                     on_batch=on_batch)
    if kept is not None:
        kept.save(path, settings, tensors())
    return net


def train_ensemble(spec: Any, num_models: int = 5, *, epochs: int = 10, arch: str = "ConvNet",
                   arch_kwargs: dict[str, Any] | None = None, lr: float = 0.01, batch_size: int = 256,
                   augment: TrainAugment = "none", train_fraction: float = 1.0, seed: int = 0,
                   device: str | torch.device = "cpu", kept: KeptNetworks | None = None) -> list[nn.Module]:
    """``num_models`` independently seeded ``arch`` networks trained on the training split of ``spec``.

    Args:
        spec: a ``DatasetSpec`` (``train_images``/``train_labels``, ``num_classes``, ``image_shape``, ``name``).
        num_models: ensemble size M (the paper's Figure 3 uses 20; data_diet recommends ≥ 10).
        epochs: training epochs t of Θ_t (0: networks at initialisation, GraNd-at-init; Kirsch 2023 could not
            reproduce its pruning benefit, while scores of trained networks do reproduce).
        arch, arch_kwargs: network registry name and options (e.g. ``{"width": 32, "depth": 2}``).
        augment: ``"none"`` | ``"dsa"`` | ``"dc"`` training augmentation.
        train_fraction: each model trains on its own random fraction of the training split (1.0: all).
        kept: keeps each finished network and reuses kept ones (:class:`KeptNetworks`).

    Returns:
        The trained networks in eval mode, on ``device``.
    """
    check_int("num_models", num_models, 1)
    check_int("epochs", epochs, 0)
    if check_number("train_fraction", train_fraction) > 1:
        raise ValueError(f"train_fraction must be a number in (0, 1], got {train_fraction!r}")
    return [trained_network(spec, (seed, _ENSEMBLE_KEY, i), epochs=epochs, arch=arch, arch_kwargs=arch_kwargs, lr=lr,
                            batch_size=batch_size, augment=augment, train_fraction=train_fraction, device=device,
                            kept=kept, name=f"ensemble_{i:03d}") for i in range(num_models)]
