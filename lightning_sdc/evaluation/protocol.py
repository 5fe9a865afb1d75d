"""The evaluation protocol: train fresh networks on a synthetic set, test them on the real test split.

Follows DC ``utils.py:evaluate_synset`` (also MTT's and DATM's): SGD with momentum 0.9 and weight decay 5e-4,
``epochs + 1`` passes over the synthetic set (batch 256, shuffled), after pass ``epochs // 2 + 1`` the learning
rate is multiplied by 0.1 and a *new* optimiser is built (momentum buffer reset, as the reference), training
augmentation per batch (DSA non-Siamese, DC's augmentation, or none), and the top-1 accuracy of the *final*
network on the whole test set. Soft targets (probabilities) are trained with cross-entropy on probabilities,
as TESLA/DATM's ``SoftCrossEntropy``. Test accuracy is counted with ``torchmetrics``' ``MulticlassAccuracy``
(micro average = correct / total, the references' top-1 accuracy).

Differences from the references, on purpose: network initialisation and augmentation draw from explicit
``torch.Generator``s seeded from ``seed`` and the model index (the references reseed the global RNG from the
wall clock), so an evaluation is reproducible.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lightning_sdc.training import TRAIN_AUGMENTS as EVAL_AUGMENTS  # noqa: F401  (re-exported)
from lightning_sdc.training import make_train_augment, seeded_generator

#: Cross-architecture pool of DC's ``get_eval_pool('M')`` (Tables 3/9–11 of the paper).
CROSS_ARCHS = ("ConvNet", "ResNet18", "VGG11", "AlexNet", "LeNet", "MLP")


@dataclass
class EvalResult:
    """Accuracies of ``num_models`` fresh networks of one architecture trained on one synthetic set."""

    arch: str
    accuracies: list[float]
    epochs: int
    lr: float
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_models(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return float(sum(self.accuracies) / len(self.accuracies))

    @property
    def std(self) -> float:
        """Population std (``np.std``), as the references report."""
        m = self.mean
        return float(math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies)))

    def __str__(self) -> str:
        return f"{self.arch}: {100 * self.mean:.2f} ± {100 * self.std:.2f} % ({self.num_models} models)"


def train_network(
    net: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[], None] | None = None,
) -> nn.Module:
    """Train ``net`` in place on ``(images, targets)`` with the reference schedule (see module docstring).

    ``on_epoch`` is called after each of the ``epochs + 1`` passes (a progress bar's ``update``). The schedule
    lives in one place, :meth:`lightning_sdc.training.Schedule.dc_evaluation` run by the one training loop
    (:class:`lightning_sdc.training.TrainingLoop`), here through
    :func:`lightning_sdc.evaluation.batched.train_networks` with one network.
    """
    from lightning_sdc.evaluation.batched import train_networks

    train_networks([net], [generator or torch.Generator().manual_seed(0)], images, targets, epochs=epochs, lr=lr,
                   batch_size=batch_size, momentum=momentum, weight_decay=weight_decay, augment=augment,
                   on_epoch=on_epoch)
    return net


def label_range_problem(labels: Tensor, num_classes: int) -> str | None:
    """Why hard ``labels`` cannot index ``num_classes`` classes (the value and the allowed range), or ``None``."""
    if labels.numel() == 0:
        return None
    low, high = int(labels.min()), int(labels.max())
    if low >= 0 and high < num_classes:
        return None
    return f"label {low if low < 0 else high} is out of range; allowed: 0 … {num_classes - 1} ({num_classes} classes)"


@torch.no_grad()
def test_accuracy(net: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 2048) -> float:
    """Top-1 accuracy of ``net`` (eval mode) on a labelled tensor set (``MulticlassAccuracy``, micro average).

    Raises:
        ValueError: an empty test set (an accuracy of nothing is not 0).
    """
    from torchmetrics.classification import MulticlassAccuracy

    if images.shape[0] == 0:
        raise ValueError("the test split is empty: there is nothing to measure accuracy on")
    net.eval()
    metric: MulticlassAccuracy | None = None
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        y = labels[start : start + batch_size].to(x.device)
        logits = net(x)
        if metric is None:  # labels were range-checked by the caller: skip torchmetrics' per-batch validation
            # sync_on_compute=False: under torch.distributed, compute() would otherwise sum the counts of whatever
            # network each rank is testing at that moment (and wait for ever when the ranks test unequal numbers)
            metric = MulticlassAccuracy(logits.shape[1], average="micro", validate_args=False,
                                        sync_on_compute=False).to(logits.device)
        metric.update(logits, y)
    return float(metric.compute())


def _unpack_synset(synset: Any) -> tuple[Tensor, Tensor, float | None, str]:
    from lightning_sdc.synthetic import SyntheticSet

    if isinstance(synset, SyntheticSet):
        images, targets, lr = synset.detached()
        return images, targets, lr, synset.dataset
    if isinstance(synset, (tuple, list)) and len(synset) in (2, 3):
        lr = float(synset[2]) if len(synset) == 3 and synset[2] is not None else None
        return synset[0].detach(), synset[1].detach(), lr, ""
    raise TypeError(f"synset must be a SyntheticSet or (images, targets[, lr]), got {type(synset).__name__}")


def _unpack_test(test: Any) -> tuple[Tensor, Tensor, str]:
    if hasattr(test, "test_images"):
        return test.test_images, test.test_labels, getattr(test, "name", "")
    if isinstance(test, (tuple, list)) and len(test) == 2:
        return test[0], test[1], ""
    raise TypeError(f"test data must be a DatasetSpec or (images, labels), got {type(test).__name__}")


def _check_same_data(synset: Any, test: Any, set_dataset: str, test_dataset: str) -> None:
    """A set distilled from one dataset (or ZCA space) must be tested on that dataset (in that space)."""
    from lightning_sdc.data import DATASETS

    def canonical(name: str) -> str:
        return DATASETS.canonical(name) if name in DATASETS else name.lower()

    if set_dataset and set_dataset != "custom" and test_dataset and canonical(set_dataset) != canonical(test_dataset):
        raise ValueError(
            f"the synthetic set was distilled from dataset={set_dataset!r} but the test data are {test_dataset!r}; "
            "evaluate it on its own dataset"
        )
    set_zca, test_zca = getattr(synset, "zca_state", None) is not None, getattr(test, "zca", None) is not None
    if hasattr(test, "zca") and hasattr(synset, "zca_state") and set_zca != test_zca:
        raise ValueError(
            f"the synthetic set has zca={set_zca} but the test data have zca={test_zca}; load the dataset with "
            f"zca={set_zca}"
        )


def evaluate_synset(
    synset: Any,
    test: Any,
    *,
    arch: str = "ConvNet",
    num_models: int = 5,
    epochs: int = 300,
    lr: float | None = None,
    batch_size: int = 256,
    augment: str = "dsa",
    dsa_strategy: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    num_classes: int | None = None,
    models: Sequence[int] | None = None,
    on_epoch: Callable[[], None] | None = None,
    stacked: int = 1,
    compiled: bool = False,
    test_bf16: bool = False,
    distributed: bool = False,
) -> EvalResult:
    """Train ``num_models`` fresh ``arch`` networks on ``synset`` and test each on ``test``.

    Args:
        synset: a :class:`~lightning_sdc.synthetic.SyntheticSet` or ``(images, targets[, lr])``; soft targets
            are probabilities.
        test: a ``DatasetSpec`` (its test split) or ``(images, labels)``.
        arch: any registered network name.
        num_models: fresh networks to train (the references use 20 for GM tables, 5 for TM).
        epochs: 300 (DC without augmentation) or 1000 (DSA / TM), as the references.
        lr: training lr; ``None`` uses the set's learned ``syn_lr`` if it has one, else 0.01 (``lr_net``).
        augment: ``"dsa"`` | ``"dc"`` | ``"none"``.
        seed: network init and augmentation of model ``i`` draw from a generator seeded by ``(seed, i)``.
        device: where to train (default: the synthetic images' device).
        arch_kwargs: extra keyword arguments for ``build_network`` (e.g. ``width``, ``depth``).
        num_classes: defaults to the set's.
        models: indices of the models to train (default ``range(num_models)``); lets DDP ranks split them.
        on_epoch: called after every training epoch of every network (progress bars).
        stacked, compiled: speed paths of :mod:`lightning_sdc.evaluation.batched` — ``stacked`` networks
            trained at once (``torch.func`` vmap), ``torch.compile``'d training loss and test pass; same
            accuracies to float rounding. Defaults: the one-at-a-time eager loop.
        test_bf16: the test pass under bf16 autocast (opt-in: changes logits by bf16 rounding).
        distributed: shard the models over the processes of the default ``torch.distributed`` process group
            (when one is initialised with more than one rank; otherwise ignored): rank ``r`` trains the models
            ``r, r + world, …`` of ``models`` and every rank returns the whole gathered result, equal to one
            process's (model ``i`` draws from ``(seed, i)`` whichever rank trains it), ``seconds`` summed over
            the ranks. A collective: every rank must call it with the same arguments; a rank's failure is raised
            on every rank (:func:`~lightning_sdc.evaluation.sharding.gather_results`). Default ``False``: this
            process trains every model of ``models``.

    Returns:
        :class:`EvalResult` with one accuracy per model (in the order of ``models``).
    """
    from lightning_sdc.models import build_network

    if num_models < 1:
        raise ValueError(f"num_models must be >= 1, got {num_models}")
    images, targets, set_lr, set_dataset = _unpack_synset(synset)
    test_images, test_labels, test_dataset = _unpack_test(test)
    if test_images.shape[0] == 0:
        raise ValueError("the test split is empty: there is nothing to measure accuracy on")
    if tuple(test_images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(
            f"synthetic images have shape {tuple(images.shape[1:])} but the test images {tuple(test_images.shape[1:])}"
        )
    _check_same_data(synset, test, set_dataset, test_dataset)
    if num_classes is None:
        num_classes = getattr(synset, "num_classes", None) or int(
            targets.shape[1] if targets.dim() == 2 else int(targets.max()) + 1
        )
    if test_labels.numel() and int(test_labels.max()) >= num_classes:
        raise ValueError(
            f"test labels go up to {int(test_labels.max())} but the synthetic set has num_classes={num_classes}"
        )
    problem = None if targets.is_floating_point() else label_range_problem(targets, num_classes)
    if problem:
        raise ValueError(f"synthetic {problem}")
    if targets.is_floating_point() and targets.dim() == 2 and targets.shape[1] != num_classes:
        raise ValueError(f"soft targets have {targets.shape[1]} classes but num_classes={num_classes}")
    lr = lr if lr is not None else (set_lr if set_lr is not None else 0.01)
    device = torch.device(device) if device is not None else images.device
    images, targets = images.to(device), targets.to(device)
    test_images, test_labels = test_images.to(device), test_labels.to(device)
    train_aug = make_train_augment(augment, dataset=set_dataset or test_dataset, arch=arch, dsa_strategy=dsa_strategy)
    c, h, w = images.shape[1:]
    t0 = time.perf_counter()
    def build(i: int) -> tuple[nn.Module, torch.Generator]:
        """Model ``i``: its network and the generator of its init, batch order and augmentation."""
        g = seeded_generator(seed, i)
        return build_network(arch, c, num_classes, (h, w), generator=g, **(arch_kwargs or {})).to(device), g

    def train_and_score(indices: Sequence[int]) -> list[float]:
        if stacked != 1 or compiled or test_bf16:
            from lightning_sdc.evaluation.batched import train_and_test

            return train_and_test(build, indices, images, targets, test_images, test_labels, stacked=stacked,
                                  compiled=compiled, test_bf16=test_bf16, test=test_accuracy, on_epoch=on_epoch,
                                  epochs=epochs, lr=lr, batch_size=batch_size, augment=train_aug)
        accs = []
        for i in indices:
            net, g = build(i)
            with torch.enable_grad():
                train_network(net, images, targets, epochs=epochs, lr=lr, batch_size=batch_size, augment=train_aug,
                              generator=g, on_epoch=on_epoch)
            accs.append(test_accuracy(net, test_images, test_labels))
        return accs

    wanted = list(models) if models is not None else list(range(num_models))
    if distributed:
        from lightning_sdc.evaluation.sharding import dist_rank_world, gather_results, rank_share

        rank, world = dist_rank_world()
        if world > 1:
            positions = rank_share(range(len(wanted)), rank, world)
            local, error = {}, None
            try:
                accs = train_and_score([wanted[p] for p in positions]) if positions else []
                share = (time.perf_counter() - t0) / max(len(positions), 1)
                local = {p: (a, share) for p, a in zip(positions, accs)}
            except Exception as exc:  # noqa: BLE001 - every rank must reach the gather; raised there on all ranks
                error = exc
            gathered = gather_results(local, len(wanted), error)
            return EvalResult(arch=arch, accuracies=[a for a, _ in gathered], epochs=epochs, lr=float(lr),
                              seconds=sum(t for _, t in gathered))
    accs = train_and_score(wanted)
    return EvalResult(arch=arch, accuracies=accs, epochs=epochs, lr=float(lr), seconds=time.perf_counter() - t0)
