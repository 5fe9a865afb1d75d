"""``lightning-sdc difficulty``: score a dataset's samples over an ensemble and draw the paper's Figure 3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_sdc.checks import check_choices, check_int
from lightning_sdc.difficulty.figures import plot_figure3
from lightning_sdc.difficulty.grad_norms import GradMethod, ParamSet
from lightning_sdc.difficulty.scores import DifficultyScores, score_samples
from lightning_sdc.difficulty.training import KeptNetworks, train_ensemble
from lightning_sdc.io import atomic_write_text, prepare_output_dir
from lightning_sdc.progress import phase, quiet_mode
from lightning_sdc.training import TrainAugment


def stratified_rows(
    labels: Tensor, per_class: int | None, num_classes: int, generator: torch.Generator
) -> Tensor:
    """Row indices of ``per_class`` random samples of each class (all rows, ascending, when ``None``)."""
    if per_class is None:
        return torch.arange(labels.shape[0])
    check_int("per_class", per_class, 1)
    rows = []
    for c in range(num_classes):
        idx = (labels.cpu() == c).nonzero().flatten()
        rows.append(idx[torch.randperm(idx.numel(), generator=generator)[: min(per_class, idx.numel())]])
    return torch.cat(rows).sort().values


def summary_markdown(scores: DifficultyScores, title: str) -> str:
    """Spearman correlations and χ fractions as Markdown."""
    lines = [f"### {title}", "", "| pair | Spearman ρ | p-value |", "|---|---|---|"]
    for pair, (rho, p) in scores.correlations().items():
        lines.append(f"| {pair.replace('~', ' vs ')} | {rho:.4f} | {p:.2e} |")
    fr = scores.fractions()
    lines += [
        "",
        f"χ fractions ({scores.num_models} models, {scores.labels.numel()} samples): "
        f"trivial {fr['trivial']:.3f}, in-between {fr['in_between']:.3f}, impossible {fr['impossible']:.3f}",
    ]
    return "\n".join(lines) + "\n"


def difficulty_command(
    dataset: str,
    models: int = 5,
    epochs: int = 10,
    out: str = "difficulty",
    arch: str = "ConvNet",
    arch_kwargs: dict[str, Any] | None = None,
    lr: float = 0.01,
    batch_size: int = 256,
    augment: TrainAugment = "none",
    train_fraction: float = 1.0,
    split: Literal["test", "train"] = "test",
    per_class: int | None = None,
    params: ParamSet = "all",
    method: GradMethod = "auto",
    chunk_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    root: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train an ensemble, score every sample with χ, GraDN, EL2N and loss, and draw Figure 3.

    The paper's Figure 3 relates the misclassification difficulty χ (Definition 1) to GraDN (Definition 2)
    and to the average validation loss over 20 trained networks; here ``models`` networks are trained on the
    training split and the samples of ``split`` are scored (the held-out test split by default, where
    networks make mistakes; on the training split nearly every sample is trivial).

    Args:
        dataset: registered dataset name (e.g. ``digits``, ``mnist5k``, ``fashionmnist``, ``cifar10``).
        models: ensemble size M (χ takes the values 0, 1/M, …, 1).
        epochs: training epochs of each network (the time t of Θ_t; 0 = at initialisation).
        out: output directory: ``scores.pt``, ``scores.csv``, ``figure3.png``, ``summary.md``,
            ``summary.json``, and each finished network in ``networks/`` (the same command reuses them).
        arch: network registry name.
        arch_kwargs: network options, e.g. ``{"width": 32, "depth": 2}``.
        lr: SGD learning rate (momentum 0.9, weight decay 5e-4, × 0.1 at half the epochs).
        batch_size: training batch size.
        augment: training augmentation: ``none`` | ``dsa`` | ``dc``.
        train_fraction: each network trains on its own random fraction of the training split.
        split: which split's samples to score: ``test`` | ``train``.
        per_class: score only this many random samples per class (the paper's appendix: 1000 per class).
        params: gradient w.r.t. ``all`` parameters (Definition 2) or the ``last_layer`` only (DeepCore).
        method: per-sample gradients by ``vmap``, ``loop`` or ``auto`` (loop on CPU, vmap on GPU).
        chunk_size: samples per vmapped call.
        seed: seeds the ensemble and the sample choice.
        device: ``cpu`` | ``cuda`` | ``auto``.
        root: dataset root (torchvision datasets).
        quiet: no progress bar (there is none either when stderr is not a terminal).

    Returns:
        A summary dict: Spearman ``(rho, p)`` per score pair, χ fractions, sizes and output paths.
    """
    from lightning_sdc.data import load_dataset
    from lightning_sdc.models import NETWORKS
    from lightning_sdc.training import seeded_generator

    check_choices(difficulty_command, {"split": split, "params": params, "method": method, "augment": augment})
    check_int("models", models, 1)
    # everything the scoring and the outputs need is checked before the ensemble trains
    check_int("chunk_size", chunk_size, 1)  # samples per vmapped call
    kept = KeptNetworks(prepare_output_dir(out, "out") / "networks")
    arch = NETWORKS.canonical(arch)
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    spec = load_dataset(dataset, root=root)
    images, labels = (
        (spec.test_images, spec.test_labels) if split == "test" else (spec.train_images, spec.train_labels)
    )
    rows = stratified_rows(labels, per_class, spec.num_classes, seeded_generator(seed, 0x524F5753))
    settings = {"arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "epochs": epochs, "lr": lr, "augment": augment,
                "train_fraction": train_fraction, "seed": seed}
    with quiet_mode(quiet), phase(total=models * epochs or None, desc=f"difficulty: {models} × {arch}"):
        ensemble = train_ensemble(spec, models, batch_size=batch_size, device=dev, kept=kept, **settings)
    kept.report("difficulty")
    meta = {"dataset": spec.name, "split": split, "models": models, "params": params, **settings}
    with quiet_mode(quiet), phase(total=models, desc=f"difficulty: scoring {rows.numel()} samples", unit="model"):
        scores = score_samples(ensemble, images[rows].to(dev), labels[rows].to(dev), indices=rows, params=params,
                               method=method, chunk_size=chunk_size, meta=meta)
    out_dir = Path(out)
    title = f"{spec.name} ({split}, {rows.numel()} samples): {models} × {arch} trained {epochs} epochs"
    table = summary_markdown(scores, title)
    paths = {
        "scores": str(scores.save(out_dir / "scores.pt")),
        "csv": str(scores.to_csv(out_dir / "scores.csv")),
        "figure": str(plot_figure3(scores, out_dir / "figure3.png", title=title)),
        "summary": str(atomic_write_text(table, out_dir / "summary.md")),
    }
    summary = {
        "spearman": {k: {"rho": r, "p": p} for k, (r, p) in scores.correlations().items()},
        "fractions": scores.fractions(),
        "samples": int(rows.numel()),
        "meta": meta,
        "paths": paths,
    }
    paths["json"] = str(out_dir / "summary.json")
    atomic_write_text(json.dumps(summary, indent=2, default=str) + "\n", paths["json"])
    print(table)
    return summary
