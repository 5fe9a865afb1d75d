"""The functional student of trajectory matching: one network structure driven by a flat parameter vector.

MTT wraps its student in a ``ReparamModule`` that deletes the module's parameters and splices in views of one
flat vector (MTT ``reparam_module.py``). Here the module keeps its own (unused) parameters
and :func:`lightning_sdc.models.functional.functional_forward` runs it with the views of the flat vector
(``torch.func.functional_call``), in ``named_parameters()`` order — the order the expert buffer stores.
The student is a plain object, not an ``nn.Module`` attribute of the LightningModule, so it is neither
registered, checkpointed nor all-reduced.

Speed: the student's convolutions, group/instance norms, ReLUs and 2×2 average pools are swapped for the
layers of :mod:`lightning_sdc.models.double_backward` (same parameters; native forward and first backward;
closed-form second derivatives). The unrolled MTT update differentiates through every inner gradient, and
those second derivatives are where PyTorch's own layers lose most of the time on a CPU (profile in that
module's docstring and ``benchmarks/RESULTS.md``). Values agree with the native layers to float rounding
(``tests/test_tm.py::test_student_fast_layers_match_native``); ``native_layers=True`` keeps PyTorch's layers.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FunctionalStudent:
    """A network template run on flat parameter vectors ``θ ∈ R^P`` (see module docstring).

    Args:
        module: the network whose structure (not whose parameters) is used; its layers are swapped in place
            (see module docstring).
        layout: its :class:`~lightning_sdc.models.functional.ParamLayout` (default: read from ``module``).
        native_layers: keep PyTorch's layers (no swap).
    """

    def __init__(self, module: nn.Module, layout: Any = None, *, native_layers: bool = False) -> None:
        from lightning_sdc.models.double_backward import twice_differentiable
        from lightning_sdc.models.functional import ParamLayout

        self.layout = layout if layout is not None else ParamLayout.from_module(module)
        for p in module.parameters():  # never trained: its own values only fix shapes and dtypes
            p.requires_grad_(False)
        # the compiled first-order pass traces PyTorch's own layers (a structure copy, made before the swap)
        self._native = module if native_layers else copy.deepcopy(module)
        self.module = module if native_layers else twice_differentiable(module)
        self._compiled: Any = None  # CompiledNetwork, built on the first compiled_loss call

    @classmethod
    def build(
        cls,
        arch: str,
        image_shape: tuple[int, int, int],
        num_classes: int,
        arch_kwargs: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
        *,
        native_layers: bool = False,
    ) -> FunctionalStudent:
        """Build ``arch`` from the network registry for ``image_shape`` (C, H, W) and ``num_classes``."""
        from lightning_sdc.models import build_network

        c, h, w = image_shape
        net = build_network(arch, c, num_classes, (h, w), generator=torch.Generator().manual_seed(0), **(arch_kwargs or {}))
        return cls(net.to(device), native_layers=native_layers)

    @property
    def num_params(self) -> int:
        return int(self.layout.total)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """Logits of the network with parameters ``theta`` (flat, ``[P]``) on the batch ``x``."""
        from lightning_sdc.models.functional import functional_forward

        return functional_forward(self.module, theta, x, layout=self.layout)

    __call__ = forward

    def loss(self, theta: Tensor, x: Tensor, targets: Tensor) -> Tensor:
        """Inner training loss: cross-entropy with class indices, or with probabilities (DATM's
        ``SoftCrossEntropy`` = mean over the batch of ``Σ_c −log softmax(z)_c · p_c``)."""
        return F.cross_entropy(self.forward(theta, x), targets)

    def compiled_loss(self, theta: Tensor, x: Tensor, targets: Tensor) -> Tensor:
        """:meth:`loss` through ``torch.compile`` (:class:`~lightning_sdc.models.compiled.CompiledNetwork`):
        first order only (no ``create_graph``), same value to float rounding; eager for BatchNorm students."""
        from lightning_sdc.models.compiled import CompiledNetwork

        if self._compiled is None:
            self._compiled = CompiledNetwork()
        if not self._compiled.supports(self._native):
            return self.loss(theta, x, targets)
        self._native.train(self.module.training)
        return self._compiled.loss(self._native, self.layout.split(theta), x, targets)

    @torch.no_grad()
    def logits(self, theta: Tensor, x: Tensor, batch_size: int = 256) -> Tensor:
        """Logits in eval mode (no augmentation, no graph), computed in chunks of ``batch_size``."""
        was_training = self.module.training
        self.module.eval()
        try:
            return torch.cat([self.forward(theta, x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
        finally:
            self.module.train(was_training)
