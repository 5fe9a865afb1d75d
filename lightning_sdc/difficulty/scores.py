"""Sample-difficulty scores over an ensemble of networks: GraDN, EL2N, loss and misclassification χ.

* GraDN (paper Definition 2, eq. 7; GraNd of Paul, Ganguli & Dziugaite 2021):
  ``GraDN(x, y; Θ) = E_{θ∈Θ} ‖∇_θ L(x, y; θ)‖₂`` — :func:`gradn` returns the per-model norms ``[M, N]``, whose
  mean over models (dim 0) is eq. 7 (data_diet ``scripts/get_mean_score.py`` averages runs the same way).
* EL2N (same paper): ``E_θ ‖softmax(f_θ(x)) − onehot(y)‖₂``.
* Misclassification difficulty χ (paper Definition 1, eq. 6; Meding et al. 2022):
  ``χ(x, y; Θ) = E_θ 1[argmax_c f_θ(x)_c ≠ y]``, on the grid ``{0, 1/M, …, 1}``.
* The per-sample loss (Figure 3's "average validation loss").

Every function takes a sequence of models and the samples, returns per-model rows, and never changes the
models' train/eval mode (they are evaluated in eval mode, as data_diet scores in test mode).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_sdc.checks import check_int
from lightning_sdc.difficulty.grad_norms import (
    GradMethod,
    ParamSet,
    check_inputs,
    eval_mode,
    per_sample_grad_norms,
    residuals,
    sample_losses,
)
from lightning_sdc.io import atomic_torch_save, atomic_write_text, safe_torch_load
from lightning_sdc.progress import advance

#: score pairs whose Spearman correlation :meth:`DifficultyScores.correlations` reports (Figure 3 and more)
PAIRS = (("chi", "gradn"), ("gradn", "loss"), ("chi", "loss"), ("chi", "el2n"), ("gradn", "el2n"))
SCORE_NAMES = ("chi", "gradn", "el2n", "loss")


def _check_models(models: Sequence[nn.Module]) -> list[nn.Module]:
    models = list(models)
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise ValueError(f"models must be a non-empty sequence of nn.Module, got {models!r:.200}")
    return models


def gradn(
    models: Sequence[nn.Module],
    inputs: Tensor,
    targets: Tensor,
    *,
    params: ParamSet = "all",
    method: GradMethod = "auto",
    chunk_size: int = 64,
) -> Tensor:
    """Per-model per-sample gradient norms ``[M, N]``; ``.mean(0)`` is GraDN (eq. 7).

    Options as :func:`~lightning_sdc.difficulty.grad_norms.per_sample_grad_norms`.
    """
    models = _check_models(models)
    norms = []
    for m in models:
        norms.append(per_sample_grad_norms(m, inputs, targets, params=params, method=method, chunk_size=chunk_size))
        advance()  # the command's progress bar, if one is open (lightning_sdc.progress.phase)
    return torch.stack(norms)


@torch.no_grad()
def forward_scores(
    models: Sequence[nn.Module], inputs: Tensor, targets: Tensor, *, batch_size: int = 1024, ord: float = 2
) -> dict[str, Tensor]:
    """One forward pass per model: ``{"el2n", "loss", "wrong"}``, each ``[M, N]`` (float32, detached).

    ``el2n`` is ``‖p − y‖_ord`` (data_diet also offers ``ord=1``); ``wrong`` is ``argmax ≠ y`` as 0/1 (for
    probability targets ``y`` is their argmax).
    """
    models = _check_models(models)
    check_inputs(inputs, targets)
    check_int("batch_size", batch_size, 1)
    hard = targets if targets.dim() == 1 else targets.argmax(dim=1)
    rows: dict[str, list[Tensor]] = {"el2n": [], "loss": [], "wrong": []}
    for model in models:
        parts: dict[str, list[Tensor]] = {k: [] for k in rows}
        with eval_mode(model):
            for start in range(0, inputs.shape[0], batch_size):
                x = inputs[start : start + batch_size]
                t = targets[start : start + batch_size]
                logits = model(x).float()
                parts["el2n"].append(residuals(logits, t).norm(p=ord, dim=1))
                parts["loss"].append(sample_losses(logits, t.to(logits) if t.dim() == 2 else t))
                parts["wrong"].append((logits.argmax(dim=1) != hard[start : start + batch_size]).float())
        for k in rows:
            rows[k].append(torch.cat(parts[k]) if parts[k] else torch.zeros(0, device=inputs.device))
    return {k: torch.stack(v) for k, v in rows.items()}


def el2n(models: Sequence[nn.Module], inputs: Tensor, targets: Tensor, *, ord: float = 2) -> Tensor:
    """Per-model EL2N ``‖softmax(f_θ(x)) − y‖_ord``, ``[M, N]``; ``.mean(0)`` is the EL2N score."""
    return forward_scores(models, inputs, targets, ord=ord)["el2n"]


def misclassification(models: Sequence[nn.Module], inputs: Tensor, targets: Tensor) -> Tensor:
    """Per-model misclassification indicators ``[M, N]`` (0/1); ``.mean(0)`` is χ (Definition 1, eq. 6)."""
    return forward_scores(models, inputs, targets)["wrong"]


def difficulty_fractions(chi: Tensor) -> dict[str, float]:
    """Meding et al.'s split of χ: ``trivial`` (χ = 0), ``impossible`` (χ = 1) and ``in_between``
    fractions."""
    if not isinstance(chi, Tensor) or chi.dim() != 1 or chi.numel() == 0:
        raise ValueError(f"chi must be a non-empty 1-D tensor, got {chi!r:.100}")
    if bool(((chi < 0) | (chi > 1)).any()):
        raise ValueError("chi must lie in [0, 1]")
    n = chi.numel()
    trivial = float((chi == 0).sum()) / n
    impossible = float((chi == 1).sum()) / n
    return {"trivial": trivial, "impossible": impossible, "in_between": 1.0 - trivial - impossible}


def spearman(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Spearman rank correlation and its two-sided p-value (``scipy.stats.spearmanr``; ties get mean ranks).

    A constant input has no rank correlation: ``(nan, nan)`` is returned instead of scipy's warning.
    """
    from scipy.stats import spearmanr

    x, y = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D score vectors of one length, got {x.shape} and {y.shape}")
    if x.size < 3 or x.min() == x.max() or y.min() == y.max():
        return float("nan"), float("nan")
    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


@dataclass
class DifficultyScores:
    """Per-model scores of ``N`` samples under ``M`` models (rows are models).

    Attributes:
        gradn, el2n, loss, wrong: ``[M, N]`` float tensors (``wrong`` is 0/1).
        labels: ``[N]`` class of each sample; ``indices``: ``[N]`` row of each sample in its split.
        meta: how the scores were made (dataset, split, architecture, epochs, …).
    """

    gradn: Tensor
    el2n: Tensor
    loss: Tensor
    wrong: Tensor
    labels: Tensor
    indices: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(self.gradn.shape)
        for name in ("el2n", "loss", "wrong"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, gradn has {shape}")
        if len(shape) != 2 or self.labels.shape != (shape[1],) or self.indices.shape != (shape[1],):
            raise ValueError(
                f"scores must be [M, N] with labels/indices [N]; got {shape}, {tuple(self.labels.shape)}"
            )

    @property
    def num_models(self) -> int:
        return int(self.gradn.shape[0])

    @property
    def chi(self) -> Tensor:
        """χ (Definition 1): the fraction of models that misclassify each sample."""
        return self.wrong.mean(dim=0)

    def mean(self, name: str) -> Tensor:
        """The ensemble mean of score ``name`` (``chi`` | ``gradn`` | ``el2n`` | ``loss``), ``[N]``."""
        if name not in SCORE_NAMES:
            raise KeyError(f"unknown score {name!r}; allowed: {', '.join(SCORE_NAMES)}")
        return self.chi if name == "chi" else getattr(self, name).mean(dim=0)

    def correlations(self) -> dict[str, tuple[float, float]]:
        """Spearman ``(rho, p)`` of the ensemble means for each pair in :data:`PAIRS`, keyed ``"a~b"``."""
        return {f"{a}~{b}": spearman(self.mean(a), self.mean(b)) for a, b in PAIRS}

    def fractions(self) -> dict[str, float]:
        """Trivial / impossible / in-between fractions of χ."""
        return difficulty_fractions(self.chi)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "lightning_sdc.DifficultyScores",
            "gradn": self.gradn.cpu(),
            "el2n": self.el2n.cpu(),
            "loss": self.loss.cpu(),
            "wrong": self.wrong.cpu(),
            "labels": self.labels.cpu(),
            "indices": self.indices.cpu(),
            "meta": dict(self.meta),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the scores atomically (a plain dict of tensors; load with :meth:`load`)."""
        return atomic_torch_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DifficultyScores:
        d = safe_torch_load(path, what="difficulty scores")
        if not isinstance(d, dict) or d.get("format") != "lightning_sdc.DifficultyScores":
            raise ValueError(f"{path} is not a lightning_sdc difficulty-scores file (no 'format' marker)")
        return cls(**{k: d[k] for k in ("gradn", "el2n", "loss", "wrong", "labels", "indices", "meta")})

    def to_csv(self, path: str | os.PathLike) -> Path:
        """One row per sample: index, label, χ and the ensemble means and stds of GraDN, EL2N and loss."""
        m = max(self.num_models, 1)
        std = (lambda t: t.std(dim=0, unbiased=False)) if m > 1 else (lambda t: torch.zeros_like(t[0]))
        cols = {
            "index": self.indices.tolist(),
            "label": self.labels.tolist(),
            "chi": self.chi.tolist(),
            "gradn": self.gradn.mean(0).tolist(),
            "gradn_std": std(self.gradn).tolist(),
            "el2n": self.el2n.mean(0).tolist(),
            "loss": self.loss.mean(0).tolist(),
        }
        lines = [",".join(cols)]
        for row in zip(*cols.values()):
            lines.append(",".join(str(v) if isinstance(v, int) else f"{v:.6g}" for v in row))
        return atomic_write_text("\n".join(lines) + "\n", path)


def score_samples(
    models: Sequence[nn.Module],
    inputs: Tensor,
    labels: Tensor,
    *,
    indices: Tensor | None = None,
    params: ParamSet = "all",
    method: GradMethod = "auto",
    chunk_size: int = 64,
    meta: dict[str, Any] | None = None,
) -> DifficultyScores:
    """GraDN, EL2N, loss and misclassification of ``(inputs, labels)`` under every model in ``models``."""
    fw = forward_scores(models, inputs, labels)
    g = gradn(models, inputs, labels, params=params, method=method, chunk_size=chunk_size)
    idx = torch.arange(inputs.shape[0]) if indices is None else indices.detach().cpu()
    return DifficultyScores(
        gradn=g.cpu(),
        el2n=fw["el2n"].cpu(),
        loss=fw["loss"].cpu(),
        wrong=fw["wrong"].cpu(),
        labels=labels.detach().cpu(),
        indices=idx,
        meta=dict(meta or {}),
    )
