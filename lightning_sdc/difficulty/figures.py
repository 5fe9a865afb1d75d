"""Figure 3 of the paper: scatter plots of χ vs GraDN, GraDN vs loss and χ vs loss, with Spearman ρ
(matplotlib Agg)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightning_sdc.difficulty.scores import DifficultyScores, spearman
from lightning_sdc.io import atomic_write

#: (x, y, axis labels) of the panels
PANELS = (
    ("chi", "gradn", "sample difficulty χ", "GraDN"),
    ("gradn", "loss", "GraDN", "loss"),
    ("chi", "loss", "sample difficulty χ", "loss"),
)


def plot_figure3(scores: DifficultyScores, path: str | os.PathLike, title: str | None = None) -> Path:
    """Write a three-panel PNG (χ vs GraDN, GraDN vs loss, χ vs loss), points coloured by class.

    χ takes ``M + 1`` values, so its points get a small deterministic horizontal jitter (``±0.3/M``) to show
    the density; the Spearman ρ in each title is computed on the unjittered scores.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    jitter = (torch.rand(scores.labels.shape[0], generator=torch.Generator().manual_seed(0)) - 0.5) * (
        0.6 / max(scores.num_models, 1)
    )
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.8))
    for ax, (xn, yn, xl, yl) in zip(axes, PANELS):
        x, y = scores.mean(xn), scores.mean(yn)
        rho, p = spearman(x, y)
        shown = x + jitter if xn == "chi" else x
        ax.scatter(
            shown.numpy(), y.numpy(), c=scores.labels.numpy(), cmap="tab10", s=6, alpha=0.6, linewidths=0
        )
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"Spearman ρ = {rho:.3f} (p = {p:.1e})", fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)
