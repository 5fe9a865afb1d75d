"""Running a network on explicit parameters: flat vectors, name → tensor dicts, ``functional_call``.

Every distillation method needs the network as a function of its parameters: GM differentiates the
synthetic-batch gradient w.r.t. the images (``create_graph=True``), TM unrolls SGD on a flat parameter vector
``θ ∈ R^P`` (MTT's ``ReparamModule``). Here the module keeps its own parameters and is run
with ``torch.func.functional_call`` on views of the flat vector — same values and speed as ``ReparamModule``
without deleting anything from the module.

Order: the flat vector is ``cat(p.reshape(-1) for p in module.parameters())``, i.e. ``named_parameters()``
order (shared parameters once). MTT ``buffer.py`` stores expert snapshots in exactly this order, so expert files and students agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and sizes of a module's parameters in ``named_parameters()`` order.

    ``flat[offsets[i] : offsets[i] + numels[i]].view(shapes[i])`` is parameter ``names[i]``; ``total`` = P.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...] = field(init=False)
    offsets: tuple[int, ...] = field(init=False)
    total: int = field(init=False)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ValueError(f"ParamLayout: {len(self.names)} names but {len(self.shapes)} shapes")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"ParamLayout: duplicate parameter names in {list(self.names)}")
        shapes = tuple(torch.Size(s) for s in self.shapes)
        numels = tuple(int(s.numel()) for s in shapes)
        offsets, acc = [], 0
        for n in numels:
            offsets.append(acc)
            acc += n
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "numels", numels)
        object.__setattr__(self, "offsets", tuple(offsets))
        object.__setattr__(self, "total", acc)

    @classmethod
    def from_module(cls, module: nn.Module) -> ParamLayout:
        """The layout of ``module.named_parameters()``."""
        named = list(module.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named))

    @classmethod
    def from_shapes(cls, names: Sequence[str], shapes: Sequence[Sequence[int]]) -> ParamLayout:
        """A layout from stored metadata (e.g. an expert buffer's ``param_names`` / ``param_shapes``)."""
        return cls(tuple(names), tuple(torch.Size(tuple(int(d) for d in s)) for s in shapes))

    def __len__(self) -> int:
        return len(self.names)

    def slice_of(self, name: str) -> slice:
        """The slice of the flat vector holding parameter ``name``."""
        try:
            i = self.names.index(name)
        except ValueError:
            raise KeyError(f"no parameter {name!r}; have: {', '.join(self.names)}") from None
        return slice(self.offsets[i], self.offsets[i] + self.numels[i])

    def check_flat(self, flat: Tensor) -> None:
        if not isinstance(flat, Tensor) or flat.dim() != 1 or flat.shape[0] != self.total:
            got = tuple(flat.shape) if isinstance(flat, Tensor) else type(flat).__name__
            raise ValueError(f"expected a flat parameter vector of shape ({self.total},), got {got}")

    def split(self, flat: Tensor) -> list[Tensor]:
        """Views of ``flat`` shaped like each parameter (differentiable; no copy)."""
        self.check_flat(flat)
        return [t.view(s) for t, s in zip(torch.split(flat, self.numels), self.shapes, strict=True)]

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``{name: view}`` for :func:`functional_forward` (differentiable; no copy)."""
        return dict(zip(self.names, self.split(flat), strict=True))

    def flatten(self, params: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        """The flat vector of ``params`` (a name → tensor mapping, or tensors in layout order)."""
        if isinstance(params, Mapping):
            missing = [n for n in self.names if n not in params]
            if missing:
                raise KeyError(f"parameters missing from the mapping: {', '.join(missing)}")
            tensors = [params[n] for n in self.names]
        else:
            tensors = list(params)
        got = [tuple(t.shape) for t in tensors]
        if got != [tuple(s) for s in self.shapes]:
            raise ValueError(f"parameter shapes {got} do not match the layout's {[tuple(s) for s in self.shapes]}")
        return torch.cat([t.reshape(-1) for t in tensors])


def flatten_params(module: nn.Module) -> Tensor:
    """``cat(p.reshape(-1))`` over ``module.parameters()`` (a new 1-D tensor, still attached to the graph)."""
    return torch.cat([p.reshape(-1) for p in module.parameters()])


def unflatten(flat: Tensor, layout: ParamLayout) -> dict[str, Tensor]:
    """``{name: view of flat}`` in ``layout`` (see :meth:`ParamLayout.unflatten`)."""
    return layout.unflatten(flat)


def functional_forward(module: nn.Module, params: Mapping[str, Tensor] | Tensor, x: Tensor,
                       buffers: Mapping[str, Tensor] | None = None, *, layout: ParamLayout | None = None) -> Tensor:
    """``module(x)`` with its parameters replaced by ``params`` (``torch.func.functional_call``).

    Args:
        params: a flat ``[P]`` vector (split with ``layout``, default ``ParamLayout.from_module(module)`` —
            pass it on hot paths) or a name → tensor mapping (names missing from it keep the module's own).
        buffers: optional name → tensor mapping replacing buffers (e.g. BatchNorm running stats); by default
            the module's own buffers are used (and updated in train mode, as in a normal forward).
    """
    if isinstance(params, Tensor):
        params = (layout if layout is not None else ParamLayout.from_module(module)).unflatten(params)
    if buffers:
        return functional_call(module, (dict(params), dict(buffers)), (x,))
    return functional_call(module, dict(params), (x,))


__all__ = ["ParamLayout", "flatten_params", "unflatten", "functional_forward"]
