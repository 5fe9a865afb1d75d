"""The one network-training loop: minibatch SGD passes over a tensor set, an epoch at a time, resumable.

Every network this package trains outside a distillation step goes through :class:`TrainingLoop`:

* the evaluation protocol (:mod:`lightning_sdc.evaluation`, also DDRanking's and the methods' periodic
  evaluation) with :meth:`Schedule.dc_evaluation` — DC ``utils.py:evaluate_synset``;
* expert trajectories (:mod:`lightning_sdc.experts`) with :meth:`Schedule.mtt_expert` — MTT ``buffer.py``,
  optionally FTD's GSAM/ASAM step (``buffer/buffer_FTD.py``, :class:`~lightning_sdc.training.sam.SharpnessAwareStep`);
* the difficulty ensembles, Herding's feature network and Forgetting's counting runs
  (:mod:`lightning_sdc.difficulty`, :mod:`lightning_sdc.coresets`) with :meth:`Schedule.classifier`.

One pass (epoch): each network draws a permutation of the rows from its own generator (``randperm``), the
rows are cut into batches of ``batch_size`` (the last, smaller one kept), each network's batch is augmented
with draws from the same generator, the loss of the batches is taken and one step is made. The loop owns the
SGD optimiser over the trained tensors, so a schedule that resets it on the learning-rate decay (DC) and one
that decays in place are both expressible, and :meth:`TrainingLoop.state_dict` captures everything the next
pass depends on (trained tensors and module buffers, optimiser state, generator states, pass, lr): a loop
resumed after pass ``k`` ends bit for bit equal to an uninterrupted one.

Several networks train together (the evaluation's ``stacked`` speed path) by passing their generators and a
loss of a list of batches (one per network) over stacked parameters; one network needs neither.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.checks import check_int, check_number
from lightning_sdc.training.augment import Augment
from lightning_sdc.training.sam import SharpnessAwareStep, check_sam_settings

#: ``on_batch(rows, logits, targets)``: ``rows`` the batch's row indices (CPU int64), detached ``logits``
BatchHook = Callable[[Tensor, Tensor, Tensor], None]
#: ``loss(xs, ys)``: one scalar loss of the per-network batches ``xs[i]``, ``ys[i]``
BatchLoss = Callable[[list[Tensor], list[Tensor]], Tensor]


@dataclass(frozen=True)
class Schedule:
    """How many passes, at which learning rate, and what happens on the lr decay.

    Attributes:
        passes: passes over the data.
        lr: initial SGD learning rate.
        batch_size: rows per batch (the last batch of a pass may be smaller).
        momentum, weight_decay: SGD's.
        decay_from: the first pass (0-based) trained at ``lr × 0.1``; ``None``: constant lr.
        decay_resets_optimizer: the decay builds a fresh SGD optimiser (momentum buffers dropped, DC) instead
            of changing the lr of the current one in place.
        always_shuffle: ``False``: a set that fits in one batch is passed whole in its stored order and no
            permutation is drawn (the evaluation protocol); ``True``: every pass draws a permutation.
    """

    passes: int
    lr: float
    batch_size: int = 256
    momentum: float = 0.0
    weight_decay: float = 0.0
    decay_from: int | None = None
    decay_resets_optimizer: bool = False
    always_shuffle: bool = True

    def __post_init__(self) -> None:
        check_int("passes", self.passes, 0)
        check_number("lr", self.lr)
        check_int("batch_size", self.batch_size, 1)
        check_number("momentum", self.momentum, strict=False)
        check_number("weight_decay", self.weight_decay, strict=False)
        if self.decay_from is not None:
            check_int("decay_from", self.decay_from, 0)

    @classmethod
    def dc_evaluation(cls, epochs: int, lr: float, *, batch_size: int = 256, momentum: float = 0.9,
                      weight_decay: float = 5e-4) -> Schedule:
        """DC ``utils.py:evaluate_synset`` (also MTT's and DATM's evaluation): ``epochs + 1`` passes, SGD
        momentum 0.9 and weight decay 5e-4; after pass ``epochs // 2 + 1`` (0-based) the lr is multiplied by
        0.1 and a new optimiser is built, so passes from ``epochs // 2 + 2`` on train at ``lr × 0.1`` with fresh
        momentum. A set of at most ``batch_size`` rows is one unshuffled batch (the reference's shuffling
        ``DataLoader`` would only reorder the rows of that batch)."""
        check_int("epochs", epochs, 0)
        return cls(epochs + 1, lr, batch_size, momentum, weight_decay, decay_from=epochs // 2 + 2,
                   decay_resets_optimizer=True, always_shuffle=False)

    @classmethod
    def mtt_expert(cls, epochs: int, lr: float, *, batch_size: int = 256) -> Schedule:
        """MTT ``buffer.py`` (and FTD ``buffer/buffer_FTD.py``): ``epochs`` passes, plain SGD (momentum 0,
        weight decay 0) at a constant lr, a fresh shuffle every pass."""
        check_int("epochs", epochs, 1)
        return cls(epochs, lr, batch_size)

    @classmethod
    def classifier(cls, epochs: int, lr: float, *, batch_size: int = 256, momentum: float = 0.9,
                   weight_decay: float = 5e-4, decay: bool = True) -> Schedule:
        """The difficulty / coreset classifiers: ``epochs`` passes, SGD momentum 0.9 and weight decay 5e-4, a
        fresh shuffle every pass, the lr × 0.1 *in place* (momentum kept) from pass ``epochs // 2`` when
        ``decay`` and ``epochs > 1`` — close to, not exactly, DC ``utils.py:evaluate_synset``."""
        check_int("epochs", epochs, 0)
        return cls(epochs, lr, batch_size, momentum, weight_decay,
                   decay_from=epochs // 2 if decay and epochs > 1 else None)


class Step(Protocol):
    """One optimisation step on a fixed batch: ``step(closure)`` with ``closure()`` the loss (no backward
    inside); returns the detached loss at the weights before the step."""

    def step(self, closure: Callable[[], Tensor]) -> Tensor: ...


#: builds the step around the loop's optimiser: ``factory(params, optimizer) -> Step``
StepFactory = Callable[[list[Tensor], torch.optim.Optimizer], Step]


class PlainStep:
    """The references' step: loss, ``zero_grad``, ``backward``, ``optimizer.step()``."""

    def __init__(self, params: Sequence[Tensor], base_optimizer: torch.optim.Optimizer) -> None:
        self.base_optimizer = base_optimizer

    def step(self, closure: Callable[[], Tensor]) -> Tensor:
        loss = closure()
        self.base_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.base_optimizer.step()
        return loss.detach()


def sharpness_aware(rho: float, alpha: float, *, adaptive: bool = True, model: nn.Module | None = None) -> StepFactory:
    """A step factory for FTD's GSAM/ASAM step (:class:`~lightning_sdc.training.sam.SharpnessAwareStep`)."""
    check_sam_settings(rho, alpha)  # now, before any training

    def factory(params: list[Tensor], optimizer: torch.optim.Optimizer) -> Step:
        return SharpnessAwareStep(params, optimizer, rho=rho, alpha=alpha, adaptive=adaptive, model=model)

    return factory


def _cpu_copy(obj: Any) -> Any:
    """``obj`` with every tensor cloned to the CPU (a snapshot later steps cannot change)."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


class TrainingLoop:
    """Train ``nets`` on ``(images, targets)`` with ``schedule``, a pass at a time (see the module docstring).

    Args:
        nets: the networks (trained in place; put them on the images' device first). Module buffers are part
            of the checkpoint.
        generators: one per network: its permutations and its augmentation draws.
        images, targets: ``[N, …]`` inputs and ``[N]`` class indices or ``[N, C]`` probabilities.
        schedule: a :class:`Schedule`.
        augment: ``augment(x, generator)`` on each network's batch, or ``None``.
        loss, params: a loss of the per-network batch lists and the tensors it trains (both or neither:
            several networks, a compiled loss). Default, one network: ``cross_entropy(net(x), y)`` over
            ``net.parameters()``.
        step: the step factory (:class:`PlainStep`, or :func:`sharpness_aware` for FTD's GSAM).
        on_batch: ``on_batch(rows, logits, targets)`` after each batch's first forward, before its step
            (Toneva et al.'s forgetting bookkeeping); only with the default loss.
        on_epoch: called after every pass (a progress bar's ``update``, :func:`lightning_sdc.progress.advance`).
    """

    def __init__(
        self,
        nets: Sequence[nn.Module],
        generators: Sequence[torch.Generator],
        images: Tensor,
        targets: Tensor,
        *,
        schedule: Schedule,
        augment: Augment | None = None,
        loss: BatchLoss | None = None,
        params: Sequence[Tensor] | None = None,
        step: StepFactory = PlainStep,
        on_batch: BatchHook | None = None,
        on_epoch: Callable[[], Any] | None = None,
    ) -> None:
        self.nets, self.generators = list(nets), list(generators)
        if not self.nets or len(self.nets) != len(self.generators):
            raise ValueError(
                f"need one generator per network, got {len(self.nets)} networks and {len(self.generators)} generators"
            )
        if images.shape[0] != targets.shape[0]:
            raise ValueError(
                f"images and targets must have one row each, got {tuple(images.shape)} and {tuple(targets.shape)}"
            )
        if (loss is None) != (params is None):
            raise ValueError("pass loss and params together (a custom loss trains the tensors it is given)")
        if loss is None and len(self.nets) != 1:
            raise ValueError(f"{len(self.nets)} networks need a loss of their batches and the stacked params")
        if on_batch is not None and loss is not None:
            raise ValueError("on_batch needs the default one-network loss (it sees that forward's logits)")
        self.images, self.targets, self.schedule = images, targets, schedule
        self.augment, self.on_batch, self.on_epoch = augment, on_batch, on_epoch
        self._loss = loss
        self.params = list(params) if params is not None else list(self.nets[0].parameters())
        self._step_factory = step
        self.epoch = 0
        self.lr = schedule.lr
        self._new_optimizer()

    def _new_optimizer(self, optimizer_state: Mapping[str, Any] | None = None) -> None:
        s = self.schedule
        optimizer = torch.optim.SGD(self.params, lr=self.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        self.optimizer, self.step = optimizer, self._step_factory(self.params, optimizer)

    @property
    def done(self) -> bool:
        return self.epoch >= self.schedule.passes

    def _decay(self) -> None:
        self.lr = self.lr * 0.1
        if self.schedule.decay_resets_optimizer:
            self._new_optimizer()
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr

    def _net_loss(self, x: Tensor, y: Tensor, rows: Tensor | None) -> Callable[[], Tensor]:
        """The default loss of one network as a closure; ``on_batch`` sees the first call's logits."""
        net, hook = self.nets[0], self.on_batch
        if hook is None:
            return lambda: F.cross_entropy(net(x), y)
        seen = False

        def closure() -> Tensor:
            nonlocal seen
            logits = net(x)
            if not seen:
                seen = True
                hook(torch.arange(x.shape[0]) if rows is None else rows, logits.detach(), y)
            return F.cross_entropy(logits, y)

        return closure

    def run_epoch(self) -> Tensor:
        """Train pass ``self.epoch + 1``; returns its loss summed over the rows (a 0-d tensor on the images'
        device, no host sync: divide by ``N`` for the mean)."""
        if self.done:
            raise RuntimeError(f"the training has already run its {self.schedule.passes} passes")
        s, images, targets, dev = self.schedule, self.images, self.targets, self.images.device
        if s.decay_from is not None and self.epoch == s.decay_from:
            self._decay()
        n, bs = images.shape[0], s.batch_size
        shuffle = s.always_shuffle or n > bs
        orders = [torch.randperm(n, generator=g) if shuffle else None for g in self.generators]
        dev_orders = [None if o is None else o.to(dev) for o in orders]
        total = torch.zeros((), device=dev)
        for net in self.nets:
            net.train()
        with torch.inference_mode(False), torch.enable_grad():
            for start in range(0, n, bs):
                xs, ys = [], []
                for idx, g in zip(dev_orders, self.generators):
                    x = images if idx is None else images[idx[start : start + bs]]
                    ys.append(targets if idx is None else targets[idx[start : start + bs]])
                    xs.append(x if self.augment is None else self.augment(x, g))
                if self._loss is None:
                    rows = None if orders[0] is None else orders[0][start : start + bs]
                    closure = self._net_loss(xs[0], ys[0], rows)
                else:
                    closure = partial(self._loss, xs, ys)
                loss = self.step.step(closure)
                total += loss.detach() * ys[0].shape[0]
        self.epoch += 1
        if self.on_epoch is not None:
            self.on_epoch()
        return total

    def run(self) -> None:
        """Train the remaining passes."""
        while not self.done:
            self.run_epoch()

    def state_dict(self) -> dict[str, Any]:
        """Everything the next pass depends on, as CPU tensors and plain values (``weights_only``-loadable)."""
        return {
            "epoch": self.epoch,
            "lr": self.lr,
            "params": [p.detach().to("cpu", copy=True) for p in self.params],
            "buffers": [{k: b.detach().to("cpu", copy=True) for k, b in net.named_buffers()} for net in self.nets],
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
            "generators": [g.get_state() for g in self.generators],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; everything is checked before anything changes (``ValueError``)."""
        missing = [k for k in ("epoch", "lr", "params", "buffers", "optimizer", "generators") if k not in state]
        if missing:
            raise ValueError(f"training state lacks {missing}")
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= self.schedule.passes:
            raise ValueError(f"training state is at pass {epoch!r}, allowed: 0 … {self.schedule.passes}")
        params, buffers, gens = state["params"], state["buffers"], state["generators"]
        shapes = [tuple(p.shape) for p in params]
        if shapes != [tuple(p.shape) for p in self.params]:
            raise ValueError(f"training state has parameter shapes {shapes}, "
                             f"the networks {[tuple(p.shape) for p in self.params]}")
        own = [dict(net.named_buffers()) for net in self.nets]
        if [{k: tuple(v.shape) for k, v in b.items()} for b in buffers] != [
                {k: tuple(v.shape) for k, v in b.items()} for b in own]:
            raise ValueError("training state's module buffers do not match the networks'")
        if len(gens) != len(self.generators):
            raise ValueError(f"training state has {len(gens)} generators, the loop {len(self.generators)}")
        lr, self.lr = self.lr, state["lr"]
        try:
            self._new_optimizer(state["optimizer"])
        except (KeyError, ValueError) as exc:
            self.lr = lr
            raise ValueError(f"training state's optimiser state does not fit: {exc}") from exc
        with torch.no_grad():
            for p, q in zip(self.params, params):
                p.copy_(q)
            for mine, theirs in zip(own, buffers):
                for k, b in mine.items():
                    b.copy_(theirs[k])
        for g, s in zip(self.generators, gens):
            g.set_state(s)
        self.epoch = epoch
