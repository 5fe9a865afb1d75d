"""The GraDN curve of a distillation run with and without SDC (the paper's Figure 1a for GM, 1c for TM).

``lightning-sdc gradn-curve`` runs one method config twice from
the same seed — λ = 0 and λ = ``--sdc_lambda`` (eq. 11 for GM, eq. 12 for TM) — with a :class:`~lightning_sdc.callbacks.GraDNTracker`
attached, and writes

* ``<out>.npz``: for each run (``base`` and ``sdc``) the measured steps, the raw mean GraDN of the synthetic set
  and its EMA (``steps_base``, ``gradn_base``, ``ema_base``, …), plus, for GM methods, the per-step mean
  gradient norm of the synthetic class batches at the matching networks (``sdc/grad_norm_mean``, what the SDC
  term multiplies: ``inloop_steps_*``, ``inloop_*``), λ and the settings;
* ``<out>.png``: both curves, raw (faint) and EMA-smoothed (bold), the gap shaded, all three named in the title
  (:func:`~lightning_sdc.callbacks.plot_gradn_curves`);
* ``<workdir>/summary.txt``: the start and end values of each curve (also printed), with the tracker's CSVs;

by default all under ``runs/gradn_curve/``; the command prints ``wrote <path>`` for each file.

The tracker's ensemble (``--source``, ``--num_networks``) is fixed for the whole run, so the curve follows the synthetic set:
``init`` = freshly initialised networks (what GM matches at), ``experts`` = expert snapshots (TM),
``trained`` = networks trained ``--train_epochs`` epochs on the real training split (Θ_t of Definition 2),
``auto`` = experts when the DataModule has a buffer, else fresh initialisations. The default config is the
CPU-sized ``make demo`` DSA run on ``mnist5k`` (ConvNet width 32, depth 3, IPC 1, 64 real images per class).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from lightning_sdc.callbacks.gradn import SOURCES, GraDNTracker, curve_summary, plot_gradn_curves
from lightning_sdc.difficulty.grad_norms import GRAD_METHODS
from lightning_sdc.io import atomic_write, atomic_write_text, beside, prepare_output_dir
from lightning_sdc.lightning_cli import CONFIG_DIR as CONFIGS
from lightning_sdc.progress import progress, quiet_lightning, update_callback

#: the default config (a packaged config name)
DEFAULT_CONFIG = "demo/mnist5k_dsa_ipc1"
#: the per-step quantity the GM methods log: mean over classes of ‖∇θ L_syn,c‖ at the matching network
INLOOP_METRIC = "sdc/grad_norm_mean"
RUNS = ("base", "sdc")


class LoggedScalarRecorder(pl.Callback):
    """Record one scalar the module logs with ``self.log(..., on_step=True)`` after every training batch."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.steps: list[int] = []
        self.values: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        value = trainer.callback_metrics.get(self.key)
        if value is not None:
            self.steps.append(int(trainer.global_step))
            self.values.append(float(value))


def track_run(config: Path, sdc_lambda: float, *, steps: int, every: int, networks: int, source: str, ema: float,
              train_epochs: int, method: str, seed: int, accelerator: str, workdir: Path) -> dict[str, Any]:
    """Distil ``steps`` updates of ``config`` (parsed as ``lightning-sdc fit``, λ and the seed overridden) with the
    tracker attached; the curve (measured at step 0, every ``every`` steps and at the last step), the in-loop
    gradient norms and the wall time."""
    from lightning_sdc.lightning_cli import build_in_memory_cli

    cli = build_in_memory_cli([config], seed, [f"--model.init_args.sdc_lambda={sdc_lambda}"])
    module, datamodule = cli.model, cli.datamodule
    tracker = GraDNTracker(
        every=every, num_networks=networks, ema=ema, source=source, method=method,
        train_epochs=train_epochs, seed=seed, dirpath=str(workdir),
    )  # fmt: skip
    inloop = LoggedScalarRecorder(INLOOP_METRIC)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=steps, max_epochs=-1, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[tracker, inloop],
    )  # fmt: skip
    t0 = time.perf_counter()
    with progress(total=steps, desc=f"{type(module).__name__} λ={sdc_lambda:g}", unit="update") as bar:
        trainer.callbacks.append(update_callback(bar))
        trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - t0
    return {"method": type(module).__name__, "source": tracker.resolved_source(trainer), "seconds": seconds,
            "steps": np.asarray(tracker.steps, dtype=np.int64), "gradn": np.asarray(tracker.values, dtype=np.float64),
            "ema": np.asarray(tracker.ema_values, dtype=np.float64),
            "inloop_steps": np.asarray(inloop.steps, dtype=np.int64), "inloop": np.asarray(inloop.values, dtype=np.float64)}


def save_curves(runs: dict[str, dict[str, Any]], out: Path, settings: dict[str, Any], ema: float) -> dict[str, Path]:
    """Write ``<out>.npz`` and ``<out>.png`` (see the module docstring)."""
    arrays: dict[str, Any] = {}
    for name, run in runs.items():
        for key in ("steps", "gradn", "ema", "inloop_steps", "inloop"):
            arrays[f"{key}_{name}"] = run[key]
        arrays[f"seconds_{name}"] = np.float64(run["seconds"])
    arrays["sdc_lambda"] = np.float64(settings["sdc_lambda"])
    arrays["settings"] = np.asarray(json.dumps(settings, default=str))

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    npz = atomic_write(beside(out, ".npz"), write_npz)
    method = runs["base"]["method"]
    curves = {label: (runs[name]["steps"].tolist(), runs[name]["gradn"].tolist()) for name, label in
              (("base", f"{method} (λ = 0)"), ("sdc", f"{method} + SDC (λ = {settings['sdc_lambda']:g})"))}
    title = (f"{settings['config_name']}: mean GraDN, {settings['networks']} {runs['base']['source']} networks\n"
             f"faint: measured every {settings['every']} updates; bold: EMA (β = {ema:g}); grey band: the gap")
    png = plot_gradn_curves(curves, beside(out, ".png"), ema=ema, title=title)
    return {"npz": npz, "png": png}


def summary_lines(runs: dict[str, dict[str, Any]], sdc_lambda: float, ema: float) -> list[str]:
    """Start/end of every curve (raw and EMA) and of the in-loop norms, one line each."""
    lines = []
    for name, run in runs.items():
        s = curve_summary(run["steps"].tolist(), run["gradn"].tolist(), ema=ema)
        lam = 0.0 if name == "base" else sdc_lambda
        line = (
            f"{run['method']} λ={lam:g}: GraDN step {s['first_step']:.0f} = {s['start']:.4f} → step "
            f"{s['last_step']:.0f} = {s['end']:.4f} (EMA {s['start_ema']:.4f} → {s['end_ema']:.4f}); "
            f"{run['seconds']:.0f} s"
        )
        if run["inloop"].size:
            k = max(1, run["inloop"].size // 10)
            head, tail = run["inloop"][:k], run["inloop"][-k:]
            line += f"; in-loop ‖∇θ L_syn‖ first/last 10 %: {head.mean():.4f} → {tail.mean():.4f}"
        lines.append(line)
    return lines


def _portable(path: Path) -> str:
    """``path`` as its packaged config name when it is one (portable settings), else as given."""
    try:
        return str(path.resolve().relative_to(CONFIGS).with_suffix(""))
    except ValueError:
        return str(path)


def gradn_curve_command(
    run_config: str = DEFAULT_CONFIG,
    steps: int = 200,
    sdc_lambda: float = 1.0,
    every: int = 10,
    num_networks: int = 4,
    source: str = "auto",
    train_epochs: int = 3,
    ema: float = 0.9,
    grad_method: str = "auto",
    seed: int = 0,
    accelerator: str = "cpu",
    out: str = "runs/gradn_curve/gradn_curve",
    workdir: str = "runs/gradn_curve",
) -> list[str]:
    """GraDN of the synthetic set during distillation, with and without SDC (Figure 1a/1c).

    Writes the curves as ``.npz`` and their plot as ``.png``.

    Args:
        run_config: the distillation config (a file or a packaged name; default ``demo/mnist5k_dsa_ipc1``).
        steps: synthetic-set updates per run.
        sdc_lambda: λ of the SDC run (> 0; the other run has λ = 0).
        every: measure every N updates.
        num_networks: size of the tracker's ensemble.
        source: the tracker's ensemble: auto | init | experts | trained.
        train_epochs: epochs of each network for ``source=trained``.
        ema: EMA coefficient of the smoothed curve.
        grad_method: per-sample gradients: auto | vmap | loop.
        seed: seed of both runs and of the tracker.
        accelerator: Lightning accelerator.
        out: output stem: ``<out>.npz`` and ``<out>.png`` (``docs/figures/gradn_curve`` is the committed figure).
        workdir: where the tracker CSVs and ``summary.txt`` go.

    Returns:
        The ``.npz``, ``.png`` and ``summary.txt`` written.
    """
    from lightning_sdc.lightning_cli import UsageError, resolve_config

    path = resolve_config(run_config, "--run_config")
    for name, value in (("steps", steps), ("every", every), ("num_networks", num_networks),
                        ("train_epochs", train_epochs)):  # fmt: skip
        if value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    if not (sdc_lambda > 0 and math.isfinite(sdc_lambda)):
        raise UsageError(f"--sdc_lambda must be a finite number > 0 (the SDC run), got {sdc_lambda}")
    if not 0 <= ema < 1:
        raise UsageError(f"--ema must be in [0, 1), got {ema}")
    if source not in SOURCES:
        raise UsageError(f"--source {source!r}: allowed: {', '.join(SOURCES)}")
    if grad_method not in GRAD_METHODS:
        raise UsageError(f"--grad_method {grad_method!r}: allowed: {', '.join(GRAD_METHODS)}")
    workdir_path, out_path = prepare_output_dir(workdir, "--workdir"), Path(out)
    prepare_output_dir(out_path.parent, "--out (its directory)")  # both before any run
    with quiet_lightning():
        runs = {
            name: track_run(
                path, lam, steps=steps, every=every, networks=num_networks, source=source, ema=ema,
                train_epochs=train_epochs, method=grad_method, seed=seed, accelerator=accelerator,
                workdir=workdir_path / name,
            )  # fmt: skip
            for name, lam in zip(RUNS, (0.0, sdc_lambda))
        }
    settings = {
        "config": _portable(path), "config_name": path.stem, "steps": steps, "sdc_lambda": sdc_lambda,
        "every": every, "networks": num_networks, "source": runs["base"]["source"], "ema": ema,
        "train_epochs": train_epochs, "seed": seed,
    }  # fmt: skip
    paths = save_curves(runs, out_path, settings, ema)
    lines = summary_lines(runs, sdc_lambda, ema)
    paths["summary"] = atomic_write_text("\n".join(lines) + "\n", workdir_path / "summary.txt")
    print("\n".join(lines))
    return [str(p) for p in paths.values()]
