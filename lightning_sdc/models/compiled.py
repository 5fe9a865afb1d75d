"""``torch.compile`` for first-order network passes (opt-in speed path; same numbers to float rounding).

Gradient matching and the evaluation protocol spend most of their time in first-order passes of freshly
initialised networks: per class the forward/backward of ``batch_real`` real images and the ``inner_loop``
epochs of SGD (DC ``main.py``), the training of every evaluation network and its pass over the test split
(DC ``utils.py:evaluate_synset``). Profiled on one CPU thread (ConvNet-128, 256 images of 1×28×28),
convolutions are ≈ 55 % of such a pass and the memory-bound GroupNorm → ReLU → average-pooling chain, forward
and backward, ≈ 40 %; Inductor fuses that chain into a few loops, which makes the pass ≈ 1.5× faster on a CPU
(the convolutions stay oneDNN's).

:class:`CompiledNetwork` compiles ``CE(f(x; θ), y)`` and ``f(x; θ)`` once per network *structure*: the
parameters are inputs (``torch.func.functional_call`` on a private copy of the first network seen), so every
fresh network of a run reuses the compiled code; each new input shape compiles once (static shapes; past
``torch._dynamo.config.cache_size_limit`` shapes, 8 by default, dynamo runs the pass eagerly — e.g. ``batch_real``
above the class sizes of a small data set such as ``digits`` gives one shape per class).
Passes that need a second derivative (the synthetic side of GM, the unrolled TM student) stay eager: compiled
graphs have no double backward.

Cost: a one-off compile (tens of seconds per input shape on a small CPU, reused from Inductor's on-disk cache
afterwards), so every user of this path is opt-in and meant for full-length runs. Networks with BatchNorm (their
running statistics are module state written by the forward) are not supported; callers fall back to eager.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


def has_module_state(net: nn.Module) -> bool:
    """Whether a forward writes module state (BatchNorm running statistics): such nets stay eager."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


class CompiledNetwork:
    """Compiled mean cross-entropy and logits of one network structure run on given parameters.

    Built lazily from the first network passed to :meth:`supports`; later networks must have the same
    parameter names and shapes (the fresh networks of one run do). Not pickled: a copy (DDP spawn,
    ``deepcopy``) compiles again on first use.
    """

    def __init__(self) -> None:
        self._template: nn.Module | None = None
        self._names: tuple[str, ...] = ()
        self._shapes: tuple[torch.Size, ...] = ()
        self._loss: Any = None
        self._logits: Any = None
        self._checked: Any = None  # weak reference to the last network that passed supports()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def supports(self, net: nn.Module) -> bool:
        """Whether ``net`` can take the compiled passes: no BatchNorm, and the structure of the first net seen."""
        if self._checked is not None and self._checked() is net:
            return True  # the same network as the last check (every class of a GM step, every batch of training)
        if has_module_state(net):
            return False
        if self._template is None:
            self._build(net)
        else:
            named = list(net.named_parameters())
            if tuple(n for n, _ in named) != self._names or tuple(p.shape for _, p in named) != self._shapes:
                return False
        self._checked = weakref.ref(net)
        return True

    def _build(self, net: nn.Module) -> None:
        template = copy.deepcopy(net)
        for p in template.parameters():
            p.requires_grad_(False)
        named = list(net.named_parameters())
        names = tuple(n for n, _ in named)
        self._template, self._names, self._shapes = template, names, tuple(p.shape for _, p in named)

        def logits(params: list[Tensor], x: Tensor) -> Tensor:
            return functional_call(template, dict(zip(names, params)), (x,))

        def loss(params: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(logits(params, x), y)

        self._loss = torch.compile(loss, dynamic=False)
        self._logits = torch.compile(logits, dynamic=False)

    def _check(self, net: nn.Module) -> None:
        if not self.supports(net):
            raise ValueError(f"{type(net).__name__} cannot use the compiled passes (BatchNorm, or another structure "
                             "than the first network)")
        assert self._template is not None
        if self._template.training != net.training:
            self._template.train(net.training)

    def loss(self, net: nn.Module, params: Sequence[Tensor], x: Tensor, y: Tensor) -> Tensor:
        """``CE(net(x), y)`` (mean; ``y`` class indices or probabilities) with ``net``'s parameters ``params``,
        differentiable w.r.t. them."""
        self._check(net)
        return self._loss(list(params), x, y)

    def logits(self, net: nn.Module, x: Tensor) -> Tensor:
        """``net(x)`` (in ``net``'s train/eval mode) through the compiled forward."""
        self._check(net)
        return self._logits(list(net.parameters()), x)


def usable(compiled: CompiledNetwork | None, net: nn.Module) -> CompiledNetwork | None:
    """``compiled`` if it is given and can serve ``net``, else ``None`` (the eager pass)."""
    return compiled if compiled is not None and compiled.supports(net) else None
