"""Deterministic PyTorch-default initialisation drawn from an explicit ``torch.Generator``.

The references build every network after reseeding the *global* RNG from the wall clock (DC
``utils.py:get_network``) and use PyTorch's default init. We never
touch the global RNG. Given a generator, the same default distributions are drawn from it, so every DDP
rank (or a rerun) that derives the generator from the same ``(seed, iteration)`` gets the same network:

* ``Conv*d`` / ``Linear``: weight ~ kaiming_uniform(a=√5) = U(±1/√fan_in); bias ~ U(±1/√fan_in), drawn in
  that order per module (what their ``reset_parameters`` does with the global RNG);
* norm layers: ``reset_parameters`` (weight 1, bias 0, BatchNorm running stats reset) — no randomness;
* any other module with its own parameters or buffers: its ``reset_parameters`` (and
  ``reset_running_stats``) run inside ``torch.random.fork_rng`` seeded from the generator, so the global
  RNG state is restored afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_DRAWN = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_DETERMINISTIC = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase)


def _fan_in(weight: torch.Tensor) -> int:
    return weight.shape[1] * math.prod(weight.shape[2:]) if weight.dim() > 1 else weight.shape[0]


@torch.no_grad()
def _draw_default(module: nn.Module, generator: torch.Generator) -> None:
    w = module.weight
    nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
    bias = getattr(module, "bias", None)
    if bias is not None:
        bound = 1.0 / math.sqrt(_fan_in(w)) if _fan_in(w) > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound, generator=generator)


def _reset_in_place(module: nn.Module) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
    elif callable(getattr(module, "reset_running_stats", None)):
        module.reset_running_stats()
    elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        raise TypeError(
            f"cannot initialise {type(module).__name__} from a generator: it holds parameters or buffers but "
            f"has no reset_parameters()/reset_running_stats()"
        )


def materialize_(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Give every parameter and buffer of a ``meta``-device ``module`` uninitialised storage on ``device``
    (``Module.to_empty`` without its ``empty_like`` path, whose first call imports sympy: ~0.5 s). Shared
    parameters stay shared. Call :func:`reinitialize_` next. Returns ``module``."""
    new: dict[int, torch.Tensor] = {}
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                if id(p) not in new:
                    new[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=device), p.requires_grad)
                m._parameters[name] = new[id(p)]
        for name, b in list(m._buffers.items()):
            if b is not None:
                if id(b) not in new:
                    new[id(b)] = torch.empty(b.shape, dtype=b.dtype, device=device)
                m._buffers[name] = new[id(b)]
    return module


def reinitialize_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every parameter (and norm buffer) of ``module`` in place from ``generator``; see module
    docstring. Tensors must live on ``generator.device``. Returns ``module``."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    for m in module.modules():
        if isinstance(m, _DRAWN):
            _draw_default(m, generator)
        elif isinstance(m, _DETERMINISTIC):
            m.reset_parameters()
        elif any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
            seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                _reset_in_place(m)
    return module
