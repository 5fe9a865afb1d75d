"""The Herding coreset baseline (Welling 2009; as used by iCaRL and by DC's Table 1).

Per class, in the embedding ``φ`` of a network trained on the whole training set (DC: ConvNet; its
penultimate features, the input of the classifier), greedily pick the sample that brings the mean of the
selection closest to the class mean ``μ``:

    i_k = argmin_{i ∉ S} ‖ k·μ − Σ_{j∈S} φ_j − φ_i ‖₂,   k = 1 … ipc

This is the rule of the DC author's published pseudocode (DC issue #15: ``det = mean*(i+1) − sum(selected)``,
``argmin`` of the distance). DeepCore's ``methods/herding.py`` takes the ``argmax`` of the same distance (the
*farthest* candidate), which is not mean matching; it is available as ``rule="deepcore_argmax"``.
Ties are broken by the lowest row index (``torch.argmin``/``argmax`` return the first extremum).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_sdc.coresets.common import check_ipc, class_rows, coreset_from_rows, embed_features
from lightning_sdc.difficulty.training import KeptNetworks, trained_network
from lightning_sdc.synthetic import SyntheticSet

RULES = ("argmin", "deepcore_argmax")

#: domain tag of the feature network's generator
_HERD_KEY = 0x48455244  # "HERD"


def herding_select(features: Tensor, k: int, rule: str = "argmin") -> Tensor:
    """Indices (into ``features``' rows) of ``k`` distinct samples chosen by greedy mean matching.

    Args:
        features: ``[n, m]`` embeddings of one class.
        k: how many to select (``1 ≤ k ≤ n``).
        rule: ``"argmin"`` (herding) | ``"deepcore_argmax"``.
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not allowed; allowed: {', '.join(RULES)}")
    if features.dim() != 2 or features.shape[0] < 1:
        raise ValueError(f"features must be [n, m] with n >= 1, got {tuple(features.shape)}")
    n = features.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k={k!r} is not allowed: need an integer in [1, {n}]")
    phi = features.detach().double()
    mu = phi.mean(dim=0)
    running = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool, device=phi.device)
    chosen = []
    blocked = float("inf") if rule == "argmin" else float("-inf")
    for step in range(1, k + 1):
        dist = torch.linalg.vector_norm(step * mu - running - phi, dim=1).masked_fill(taken, blocked)
        i = int(dist.argmin() if rule == "argmin" else dist.argmax())
        chosen.append(i)
        taken[i] = True
        running += phi[i]
    return torch.tensor(chosen, dtype=torch.long)


def herding_per_class(
    features: Tensor, labels: Tensor, ipc: int, num_classes: int, rule: str = "argmin"
) -> Tensor:
    """Class-major row indices: :func:`herding_select` run class by class (as the DC pseudocode says)."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"features ({features.shape[0]} rows) and labels ({labels.shape[0]}) differ in length"
        )
    out = []
    for c, rows in enumerate(class_rows(labels, num_classes)):
        if rows.numel() < ipc:
            raise ValueError(f"ipc={ipc} is not allowed: class {c} has only {rows.numel()} samples")
        out.append(rows[herding_select(features[rows.to(features.device)], ipc, rule)])
    return torch.cat(out)


def feature_network(spec: Any, *, arch: str = "ConvNet", arch_kwargs: dict[str, Any] | None = None, epochs: int = 20,
                    lr: float = 0.01, batch_size: int = 256, augment: str = "none", seed: int = 0,
                    device: str | torch.device = "cpu", kept: KeptNetworks | None = None) -> nn.Module:
    """An ``arch`` network trained on the whole training split of ``spec`` (DC: ConvNet), in eval mode; with
    ``kept`` it is kept once trained and a kept one is reused (:class:`~lightning_sdc.difficulty.KeptNetworks`)."""
    return trained_network(spec, (seed, _HERD_KEY), epochs=epochs, arch=arch, arch_kwargs=arch_kwargs, lr=lr,
                           batch_size=batch_size, augment=augment, device=device, kept=kept, name="herding").eval()


def herding_coreset(spec: Any, ipc: int, *, net: nn.Module | None = None, rule: str = "argmin", seed: int = 0,
                    device: str | torch.device = "cpu", **train_kwargs: Any) -> SyntheticSet:
    """The Herding baseline: ``ipc`` real images per class chosen by :func:`herding_per_class`.

    Args:
        spec: a ``DatasetSpec``.
        net: the feature network (default: :func:`feature_network` trained with ``train_kwargs``: ``arch``,
            ``arch_kwargs``, ``epochs``, ``lr``, ``batch_size``, ``augment``, ``kept``).
        rule: ``"argmin"`` (herding, DC) | ``"deepcore_argmax"``.
    """
    check_ipc(spec, ipc)
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not allowed; allowed: {', '.join(RULES)}")
    device = torch.device(device)
    if net is None:
        net = feature_network(spec, seed=seed, device=device, **train_kwargs)
    features = embed_features(net, spec.train_images.to(device))
    return coreset_from_rows(
        spec, herding_per_class(features, spec.train_labels, ipc, spec.num_classes, rule), ipc
    )
