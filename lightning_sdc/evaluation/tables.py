"""Cross-architecture evaluation and its table (the paper's Tables 3 and 9–11)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_sdc.evaluation.protocol import CROSS_ARCHS, EvalResult, evaluate_table
from lightning_sdc.io import atomic_write_text, beside


def evaluate_archs(synset: Any, test: Any, archs: Sequence[str] = CROSS_ARCHS, *,
                   arch_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> list[EvalResult]:
    """:func:`~lightning_sdc.evaluation.evaluate_synset` for each architecture in ``archs`` (same seeds and
    protocol for each, ``arch_kwargs`` given to every architecture): one :func:`evaluate_table`."""
    results, _ = evaluate_table(synset, test, archs, arch_kwargs={a: arch_kwargs or {} for a in archs}, **kwargs)
    return results


def results_markdown(results: Sequence[EvalResult], title: str | None = None) -> str:
    """A Markdown table: architecture | accuracy (mean ± std, %) | models | epochs | seconds."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| architecture | accuracy (%) | models | epochs | seconds |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.arch} | {100 * r.mean:.2f} ± {100 * r.std:.2f} | {r.num_models} | {r.epochs} | {r.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def results_csv(results: Sequence[EvalResult]) -> str:
    """CSV with one row per architecture, accuracies in percent, then the columns of each result's ``extra`` (the
    settings it ran with, DD-Ranking's metrics)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    extra = list(dict.fromkeys(k for r in results for k in r.extra))
    w.writerow(["arch", "mean", "std", "num_models", "epochs", "lr", "seconds", "accuracies", *extra])
    for r in results:
        w.writerow([r.arch, f"{100 * r.mean:.4f}", f"{100 * r.std:.4f}", r.num_models, r.epochs, r.lr,
                    f"{r.seconds:.2f}", " ".join(f"{100 * a:.2f}" for a in r.accuracies),
                    *(r.extra.get(k, "") for k in extra)])
    return buf.getvalue()


def write_results(results: Sequence[EvalResult], stem: str | os.PathLike, title: str | None = None) -> list[Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` atomically; returns both paths."""
    stem = Path(stem)
    return [
        atomic_write_text(results_markdown(results, title), beside(stem, ".md")),
        atomic_write_text(results_csv(results), beside(stem, ".csv")),
    ]
