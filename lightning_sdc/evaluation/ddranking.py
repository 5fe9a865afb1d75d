"""DD-Ranking's label-robust metrics: hard-label recovery (HLR), improvement over random (IOR), LRS.

Definitions from DD-Ranking's documentation (NUS-HPC-AI-Lab/DD-Ranking, ``doc/introduction.md`` "Label-Robust
Score (LRS)", ``doc/metrics/lrs-hard-label.md``; Li et al. 2025, arXiv:2505.13300), for a set evaluated with
hard labels (every method of this library except soft-label DATM/TESLA evaluations):

* ``HLR = Acc(real, hard) − Acc(syn, hard)``: how far the set is from the full real training set (lower is better);
* ``IOR = Acc(syn, any) − Acc(random, any)``: the gain over a same-size random real subset (ipc real images per
  class) under the *same* evaluation protocol (higher is better);
* ``α = w·IOR − (1 − w)·HLR`` with ``w ∈ [0, 1]`` (DD-Ranking's leaderboard: ``w = 0.5``), and
  ``LRS = 100 % · (e^α − e^{−1}) / (e − e^{−1})``.

Accuracies enter as fractions in [0, 1], so ``α ∈ [−1, 1]`` and the normalisation maps it onto [0, 100] %
(``LRS = 100`` when the set matches full data and beats random by 100 points; a set equal to random with
``HLR = h`` scores ``(e^{−h/2} − e^{−1}) / (e − e^{−1})``).

As DD-Ranking, every evaluation round trains fresh networks: round ``i`` trains network ``i`` (generator
``(seed, i)``) on the synthetic set and on the random subset; HLR, IOR and LRS are computed per round and
averaged (LRS is not linear, so the mean of per-round LRS is reported, not the LRS of the means). Differences
from DD-Ranking, on purpose: the full-data accuracy is trained once per (dataset, architecture, network options,
epochs, protocol) and cached (:func:`full_data_accuracy`) instead of once per round; the random subset is trained
at the synthetic set's learning rate (its ``syn_lr`` or the protocol's) rather than a tuned one; accuracies are
those of the final network (the protocol of :mod:`lightning_sdc.evaluation.protocol`), not the best of the last
20 % of epochs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from lightning_sdc.checks import check_int, check_number
from lightning_sdc.evaluation.protocol import evaluate_synset, test_accuracy, train_network
from lightning_sdc.io import atomic_torch_save, safe_torch_load
from lightning_sdc.training import make_train_augment, seeded_generator

METRICS = ("hlr", "ior", "lrs")
#: DD-Ranking's leaderboard weight of IOR against HLR
DEFAULT_WEIGHT = 0.5
#: generator domain of the full-data networks (distinct from the evaluation networks' ``(seed, i)``)
_FULL_KEY = 0x46554C4C  # "FULL"
_CACHE_FORMAT = "lightning_sdc.full_data_accuracy/1"


def _acc(name: str, value: float) -> float:  # an accuracy: a fraction in [0, 1]
    return check_number(name, value, 0, strict=False, at_most=1)


def hard_label_recovery(full_accuracy: float, syn_accuracy: float) -> float:
    """``HLR = Acc(real, hard) − Acc(syn, hard)`` (fractions)."""
    return _acc("full_accuracy", full_accuracy) - _acc("syn_accuracy", syn_accuracy)


def improvement_over_random(syn_accuracy: float, random_accuracy: float) -> float:
    """``IOR = Acc(syn) − Acc(random)`` under one protocol (fractions)."""
    return _acc("syn_accuracy", syn_accuracy) - _acc("random_accuracy", random_accuracy)


def label_robust_score(hlr: float, ior: float, weight: float = DEFAULT_WEIGHT) -> float:
    """``LRS = 100 · (e^α − e^{−1}) / (e − e^{−1})`` with ``α = w·IOR − (1 − w)·HLR`` (HLR, IOR as fractions in
    [−1, 1]); in %."""
    w = check_number("weight", weight, 0, strict=False, at_most=1)
    hlr, ior = (check_number(name, v, -1, strict=False, at_most=1) for name, v in (("hlr", hlr), ("ior", ior)))
    alpha = w * ior - (1 - w) * hlr
    return 100.0 * (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """Lower-cased metric names, each one of :data:`METRICS`."""
    out = []
    for m in metrics:
        name = str(m).strip().lower()
        if name not in METRICS:
            raise ValueError(f"metric {m!r} is not allowed; allowed: {', '.join(METRICS)}")
        if name not in out:
            out.append(name)
    return out


def default_cache_dir() -> Path:
    """``$LIGHTNING_SDC_CACHE/full_data`` or ``~/.cache/lightning_sdc/full_data``."""
    root = os.environ.get("LIGHTNING_SDC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "lightning_sdc") / "full_data"


def full_data_accuracy(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
                       dataset: str, arch: str = "ConvNet", arch_kwargs: dict[str, Any] | None = None, epochs: int = 30,
                       lr: float = 0.01, batch_size: int = 256, augment: str = "none", dsa_strategy: str | None = None,
                       seed: int = 0, device: str | torch.device = "cpu", cache_dir: str | Path | None = None) -> float:
    """Test accuracy of one ``arch`` network trained ``epochs`` epochs on the whole real training split ``train``
    with the evaluation protocol (:func:`~lightning_sdc.evaluation.protocol.train_network`), cached.

    The cache file ``<cache_dir>/<dataset>_<arch>_e<epochs>_<hash>.pt`` (``hash`` of every setting, the sizes of
    the splits included) holds the accuracy, the settings and the network's weights; it is written atomically and
    read with ``weights_only=True``, so the full data are trained on once per setting.
    """
    from lightning_sdc.models import build_network

    check_int("full-data epochs", epochs, 1)
    x, y = train
    tx, ty = test
    settings = {
        # "arch_kwargs" is the cache key's first name for arch_kwargs: kept so existing caches stay valid
        "dataset": dataset, "arch": arch, "network_kwargs": dict(arch_kwargs or {}), "epochs": epochs,
        "lr": float(lr), "batch_size": int(batch_size), "augment": augment, "dsa_strategy": dsa_strategy,
        "seed": int(seed), "train_size": int(x.shape[0]), "test_size": int(tx.shape[0]),
        "image_shape": list(x.shape[1:]),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / f"{dataset}_{arch}_e{epochs}_{digest}.pt"
    if path.exists():
        blob = safe_torch_load(path, what="full-data accuracy cache")
        if not isinstance(blob, dict) or blob.get("format") != _CACHE_FORMAT or blob.get("settings") != json.dumps(settings, sort_keys=True):
            raise ValueError(f"{path}: not a full-data accuracy cache for these settings; delete it to retrain")
        return float(blob["accuracy"])
    num_classes = int(max(int(y.max()), int(ty.max())) + 1)
    g = seeded_generator(seed, _FULL_KEY)
    c, h, w = x.shape[1:]
    net = build_network(arch, c, num_classes, (h, w), generator=g, **(arch_kwargs or {})).to(device)
    aug = make_train_augment(augment, dataset=dataset, arch=arch, dsa_strategy=dsa_strategy)
    t0 = time.perf_counter()
    with torch.enable_grad():
        train_network(net, x.to(device), y.to(device), epochs=epochs, lr=lr, batch_size=batch_size, augment=aug, generator=g)
    acc = test_accuracy(net, tx.to(device), ty.to(device))
    atomic_torch_save({"format": _CACHE_FORMAT, "settings": json.dumps(settings, sort_keys=True), "accuracy": acc,
                       "seconds": time.perf_counter() - t0,
                       "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, path)
    return acc


@dataclass
class LabelRobustResult:
    """Per-round accuracies (fractions) and the metrics (HLR, IOR as fractions; LRS in %)."""

    arch: str
    syn: list[float]
    random: list[float]
    full: float
    weight: float = DEFAULT_WEIGHT

    @property
    def hlr(self) -> list[float]:
        return [hard_label_recovery(self.full, s) for s in self.syn]

    @property
    def ior(self) -> list[float]:
        return [improvement_over_random(s, r) for s, r in zip(self.syn, self.random)]

    @property
    def lrs(self) -> list[float]:
        return [label_robust_score(h, i, self.weight) for h, i in zip(self.hlr, self.ior)]

    def metric(self, name: str) -> tuple[float, float]:
        """Mean and population std over rounds of ``name`` (HLR/IOR in percentage points, LRS in %)."""
        vals = getattr(self, name)
        scale = 1.0 if name == "lrs" else 100.0
        t = torch.tensor(vals, dtype=torch.float64) * scale
        return float(t.mean()), float(t.std(unbiased=False)) if t.numel() > 1 else 0.0

    def columns(self, metrics: Sequence[str]) -> dict[str, str]:
        """CSV columns: the random subset's and full data's accuracies (%), each metric's mean and std."""
        out = {"random_mean": f"{100 * sum(self.random) / len(self.random):.4f}", "full_data": f"{100 * self.full:.4f}"}
        for m in check_metrics(metrics):
            out[f"{m}_mean"], out[f"{m}_std"] = (f"{v:.4f}" for v in self.metric(m))
        return out


def label_robust_metrics(synset: Any, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                         *, dataset: str, ipc: int, full_epochs: int = 30, random_seed: int = 0,
                         weight: float = DEFAULT_WEIGHT, cache_dir: str | Path | None = None,
                         syn: Sequence[float] | None = None, **eval_kw: Any) -> LabelRobustResult:
    """HLR / IOR / LRS of ``synset``: ``num_models`` rounds on the set and on ``ipc`` random real images per class
    of ``train`` (drawn with ``random_seed``), the same networks (generator ``(seed, i)``) and protocol for both
    (``eval_kw``: :func:`~lightning_sdc.evaluation.evaluate_synset`'s, with the augmentation of ``dataset``),
    against the cached full-data accuracy (``full_epochs`` epochs, lr 0.01, the same architecture, network
    options, batch, augmentation, seed and device). ``syn``: the set's accuracies when this protocol measured them
    already (``evaluate``'s table: one accuracy per set), else they are trained here."""
    from lightning_sdc.evaluation.protocol import _unpack_synset
    from lightning_sdc.synthetic import random_coreset

    check_number("weight", weight, 0, strict=False, at_most=1)
    _, targets, set_lr, _ = _unpack_synset(synset)
    if targets.dim() != 1:
        raise ValueError("HLR/IOR here are DD-Ranking's hard-label metrics; this set has soft labels")
    kw = {"arch": "ConvNet", "augment": "dsa", "device": "cpu", **eval_kw}
    kw["lr"] = kw["lr"] if kw.get("lr") is not None else (set_lr if set_lr is not None else 0.01)
    syn = list(syn) if syn is not None else evaluate_synset(synset, test, **kw).accuracies
    real = SimpleNamespace(name=dataset, train_images=train[0], train_labels=train[1], mean=None, std=None,
                           num_classes=int(train[1].max()) + 1, class_names=None)
    rdm = evaluate_synset(random_coreset(real, ipc, seed=random_seed), test, **kw).accuracies
    full = full_data_accuracy(train, test, dataset=dataset, epochs=full_epochs, cache_dir=cache_dir, **{
        k: kw[k] for k in ("arch", "arch_kwargs", "batch_size", "augment", "dsa_strategy", "seed", "device") if k in kw})
    return LabelRobustResult(arch=kw["arch"], syn=syn, random=list(rdm), full=full, weight=weight)


def metrics_markdown(results: Sequence[LabelRobustResult], metrics: Sequence[str], title: str | None = None) -> str:
    """One row per architecture: the accuracies behind the metrics and each requested metric (mean ± std)."""
    metrics = check_metrics(metrics)
    head = "| arch | syn (%) | random (%) | full data (%) | " + " | ".join(
        {"hlr": "HLR (pp) ↓", "ior": "IOR (pp) ↑", "lrs": "LRS (%) ↑"}[m] for m in metrics) + " |"
    lines = ([f"### {title}", ""] if title else []) + [head, "|---" * (4 + len(metrics)) + "|"]
    for r in results:
        syn = torch.tensor(r.syn, dtype=torch.float64) * 100
        rdm = torch.tensor(r.random, dtype=torch.float64) * 100
        cells = [f"{r.metric(m)[0]:.2f} ± {r.metric(m)[1]:.2f}" for m in metrics]
        lines.append(f"| {r.arch} | {syn.mean():.2f} | {rdm.mean():.2f} | {100 * r.full:.2f} | " + " | ".join(cells) + " |")
    w = results[0].weight if results else DEFAULT_WEIGHT
    lines += ["", f"DD-Ranking label-robust metrics (w = {w:g}); {len(results[0].syn) if results else 0} rounds; "
              "syn = the networks of the accuracy table; full-data accuracy trained once and cached."]
    return "\n".join(lines) + "\n"


def evaluate_metrics(synset: Any, spec: Any, test: tuple[torch.Tensor, torch.Tensor], results: Sequence[Any],
                     arch_kwargs: dict[str, dict[str, Any]], *, full_epochs: int = 30,
                     weight: float = DEFAULT_WEIGHT, cache_dir: str | Path | None = None,
                     **eval_kw: Any) -> list[LabelRobustResult]:
    """``lightning-sdc evaluate --metrics``: :func:`label_robust_metrics` for each architecture's
    :class:`~lightning_sdc.evaluation.EvalResult` of a saved set (its accuracies are the metrics' ``syn``), on
    ``spec``'s training split (ZCA-transformed as the set when it carries a ZCA state) and ``test``."""
    train_images = spec.train_images
    if getattr(synset, "zca_state", None) is not None:
        from lightning_sdc.data import ZCAWhitening

        train_images = ZCAWhitening.from_dict(synset.zca_state).transform(train_images)
    return [label_robust_metrics(synset, (train_images, spec.train_labels), test, dataset=spec.name, ipc=synset.ipc,
                                 arch=r.arch, full_epochs=full_epochs, weight=weight, cache_dir=cache_dir,
                                 arch_kwargs=arch_kwargs[r.arch], syn=r.accuracies, **eval_kw) for r in results]


__all__ = ["DEFAULT_WEIGHT", "METRICS", "LabelRobustResult", "check_metrics", "default_cache_dir",
           "evaluate_metrics", "full_data_accuracy", "hard_label_recovery", "improvement_over_random", "label_robust_metrics", "label_robust_score", "metrics_markdown"]
