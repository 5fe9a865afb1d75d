"""Forgetting events (Toneva et al., ICLR 2019): a difficulty score and the Forgetting coreset's criterion.

During ordinary minibatch training, each time an example is presented its prediction on that training forward
pass (before the optimiser step) is recorded as correct or not. A *forgetting event* is a transition
correct → incorrect between two consecutive presentations of the same example; the score is the number of such
events. Examples that are never classified correctly have no event, and the conventions differ:

* ``"max"`` (the original ``order_examples_by_forgetting.py``): they get the largest possible count, taken
  here as their number of presentations (= epochs), so they rank as the most forgettable;
* ``"zero"`` (DeepCore ``methods/forgetting.py``): they keep 0 and rank as "unforgettable";
* ``"inf"`` (data_diet): ``+inf``.

Counts of several training runs are summed (the original sums over seeds).
"""

from __future__ import annotations

import typing
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_sdc.checks import check_choices, check_int
from lightning_sdc.difficulty.training import KeptNetworks, trained_network
from lightning_sdc.training import BatchHook, TrainAugment

NeverLearned = Literal["max", "zero", "inf"]
NEVER_LEARNED: tuple[str, ...] = typing.get_args(NeverLearned)

#: domain tag of the forgetting runs' generators
_FORGET_KEY = 0x46475420  # "FGT "


class ForgettingCounter:
    """Per-example bookkeeping of correctness at each presentation (see the module docstring).

    Args:
        num_samples: size of the training set (rows ``0 … num_samples − 1``).
    """

    def __init__(self, num_samples: int) -> None:
        check_int("num_samples", num_samples, 1)
        self.num_samples = num_samples
        self.last = torch.full((num_samples,), -1, dtype=torch.int8)  # -1: not presented yet
        self.events = torch.zeros(num_samples, dtype=torch.long)
        self.learned = torch.zeros(num_samples, dtype=torch.bool)
        self.presentations = torch.zeros(num_samples, dtype=torch.long)

    def update(self, rows: Tensor, correct: Tensor) -> None:
        """Record one presentation of each example in ``rows`` (distinct indices) with its correctness."""
        rows = rows.detach().to("cpu", torch.long).reshape(-1)
        correct = correct.detach().to("cpu", torch.bool).reshape(-1)
        if rows.shape != correct.shape:
            raise ValueError(
                f"rows and correct must have one entry each, got {tuple(rows.shape)} "
                f"and {tuple(correct.shape)}"
            )
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.num_samples):
            raise ValueError(
                f"rows must lie in [0, {self.num_samples}), got [{int(rows.min())}, {int(rows.max())}]"
            )
        if rows.unique().numel() != rows.numel():
            raise ValueError("rows must be distinct within one update (one presentation per example)")
        forgot = (self.last[rows] == 1) & ~correct
        self.events[rows] += forgot.long()
        self.last[rows] = correct.to(torch.int8)
        self.learned[rows] |= correct
        self.presentations[rows] += 1

    def hook(self) -> BatchHook:
        """A :func:`~lightning_sdc.difficulty.training.train_classifier` ``on_batch`` hook feeding
        :meth:`update`."""

        def on_batch(rows: Tensor, logits: Tensor, labels: Tensor) -> None:
            self.update(rows, logits.argmax(dim=1) == labels)

        return on_batch

    def tensors(self) -> dict[str, Tensor]:
        """The counter's tensors by name (updated in place: what a kept forgetting run stores)."""
        return {"last": self.last, "events": self.events, "learned": self.learned, "presentations": self.presentations}

    def counts(self, never_learned: NeverLearned = "max") -> Tensor:
        """Forgetting events per example (float64), never-learned examples per ``never_learned``."""
        check_choices(forgetting_counts, {"never_learned": never_learned})
        counts = self.events.double()
        never = ~self.learned
        if never_learned == "max":
            counts[never] = self.presentations[never].double()
        elif never_learned == "inf":
            counts[never] = float("inf")
        return counts


def forgetting_counts(spec: Any, *, runs: int = 1, epochs: int = 20, arch: str = "ConvNet",
                      arch_kwargs: dict[str, Any] | None = None, lr: float = 0.01, batch_size: int = 256,
                      augment: TrainAugment = "none", never_learned: NeverLearned = "max", seed: int = 0,
                      device: str | torch.device = "cpu", kept: KeptNetworks | None = None) -> Tensor:
    """Forgetting counts of every training example of ``spec``, summed over ``runs`` seeded training runs.

    Each run trains a fresh ``arch`` network with :func:`~lightning_sdc.difficulty.training.train_classifier`
    (its ``on_batch`` hook records correctness before each step); with ``kept`` each finished run (network and
    counts) is kept and a kept one reused (:class:`~lightning_sdc.difficulty.training.KeptNetworks`). Returns
    ``[N]`` float64.
    """
    check_int("runs", runs, 1)
    check_int("epochs", epochs, 1)
    check_choices(forgetting_counts, {"never_learned": never_learned})
    total = torch.zeros(spec.train_images.shape[0], dtype=torch.float64)
    for r in range(runs):
        counter = ForgettingCounter(spec.train_images.shape[0])
        trained_network(spec, (seed, _FORGET_KEY, r), epochs=epochs, arch=arch, arch_kwargs=arch_kwargs, lr=lr,
                        batch_size=batch_size, augment=augment, device=device, on_batch=counter.hook(),
                        state=counter.tensors(), kept=kept, name=f"forgetting_{r:03d}")
        total += counter.counts(never_learned)
    return total
