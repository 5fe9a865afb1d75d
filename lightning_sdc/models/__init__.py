"""Network registry: the architectures of the dataset-distillation references, built by name.

``build_network("ConvNet", channels, num_classes, (H, W), **kw)`` mirrors DC ``utils.py:get_network`` and
its MTT copy (names, defaults, PyTorch-default init, parameter counts), with three deliberate differences:

* no global-RNG reseeding: the references reseed ``torch`` from the wall clock before every build; we use
  the global RNG as PyTorch does, or — with ``generator=`` — draw the default init from that generator
  only (``init.reinitialize_``), so every DDP rank builds the same network from ``(seed, iteration)``;
* no device placement or ``DataParallel`` wrapping (Lightning / the caller moves the module);
* an input shape an architecture cannot run raises ``ValueError`` at build time.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_sdc.models import classic, convnet, resnet  # noqa: F401  (registers the architectures)
from lightning_sdc.models.base import ALIASES, NETWORKS, InputRule, count_parameters
from lightning_sdc.models.classic import MLP, VGG, AlexNet, LeNet
from lightning_sdc.models.convnet import ConvNet
from lightning_sdc.models.functional import ParamLayout, flatten_params, functional_forward, unflatten
from lightning_sdc.models.init import materialize_, reinitialize_
from lightning_sdc.models.resnet import ResNet

_POSITIONAL = ("channels", "num_classes", "im_size")


def _keywords(name: str) -> dict[str, Any]:
    """Keyword options of the factory registered under ``name`` with their defaults."""
    sig = inspect.signature(NETWORKS.get(name))
    return {k: p.default for k, p in sig.parameters.items() if k not in _POSITIONAL and p.kind is not p.VAR_KEYWORD}


def build_network(name: str, channels: int, num_classes: int, im_size: Sequence[int] = (32, 32),
                  generator: torch.Generator | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered network ``name`` for ``channels × im_size`` inputs and ``num_classes`` outputs.

    Args:
        name: a name from :func:`list_networks` (case-insensitive; aliases such as ``ConvNet-3`` accepted).
        kwargs: the architecture's options, e.g. ``width``, ``depth``, ``act``, ``norm``, ``pooling`` for the
            ConvNet family (a variant such as ``ConvNetD4`` only changes the defaults).
        generator: when given, the network is created on the ``meta`` device and its parameters are drawn
            from ``generator`` (PyTorch-default distributions; on ``generator.device``) — same generator
            state, same network. Without it, PyTorch's default init uses the global RNG.

    Raises:
        KeyError: unknown ``name`` (lists the allowed names). ``ValueError``: unsupported input shape or
        option value, or an option the architecture does not have.
    """
    canonical = NETWORKS.canonical(name)
    allowed = _keywords(canonical)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        opts = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
        raise ValueError(f"network {canonical!r} has no option(s) {', '.join(unknown)}; its options: {opts}")
    factory = NETWORKS.get(canonical)
    if generator is None:
        return factory(channels, num_classes, im_size, **kwargs)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    with torch.device("meta"):
        net = factory(channels, num_classes, im_size, **kwargs)
    return reinitialize_(materialize_(net, generator.device), generator)


def list_networks(include_aliases: bool = False) -> list[str]:
    """Registered network names (sorted); with ``include_aliases`` also every alias."""
    names = NETWORKS.names()
    if include_aliases:
        names = sorted(set(names).union(*ALIASES.values()))
    return names


def network_options(name: str) -> dict[str, Any]:
    """The keyword options of network ``name`` and their defaults (e.g. ``{"width": 128, "depth": 3, …}``)."""
    return _keywords(NETWORKS.canonical(name))


__all__ = ["NETWORKS", "AlexNet", "ConvNet", "InputRule", "LeNet", "MLP", "ParamLayout", "ResNet", "VGG",
           "build_network", "count_parameters", "flatten_params", "functional_forward", "list_networks",
           "network_options", "reinitialize_", "unflatten"]
