"""Reproduction harness: run a named grid of paper cells with and without SDC, resumable cell by cell.

``lightning-sdc reproduce --grid fmnist-cpu`` (``make reproduce GRID=fmnist-cpu``) runs every cell of the grid —
method × dataset × IPC × {baseline (λ = 0), SDC (the config's λ)} — for each seed: it distils through the same
LightningCLI path as ``lightning-sdc fit`` (the cell's packaged config plus the trainer preset), then trains
``eval_num_models`` fresh networks on the final synthetic set with the method's own evaluation protocol, each phase
under a progress bar. Each finished cell is cached as ``<out>/<grid>/<cell>.json`` (``--out``, default ``runs/reproduce``; written atomically) and skipped
on the next run; ``<out>/<grid>.md`` / ``.csv`` are rewritten after every cell with mean ± std over all evaluation
models of all seeds, the number of models, the iterations actually run, wall time, the machine and the paper's
number.

The reported accuracy is that of the *final* synthetic set (the paper's GM protocol; the paper's TM numbers
are the maximum over evaluation points, which this harness does not search — stated in the table).

A cell may name its own config (``Cell.config_file``, e.g. a ``demo/`` run) and a ``random`` cell is the
baseline row "Random" of the paper's tables: ``ipc`` real images per class drawn with the seed, trained on with
the evaluation protocol of the cell's config (its method's ``eval_kwargs``), nothing distilled.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightning_sdc.cost import RunCost, estimate_lines, evaluation_points, gm_run_cost, measured_rate
from lightning_sdc.io import atomic_write_text, prepare_output_dir
from lightning_sdc.lightning_cli import CONFIG_DIR as CONFIGS
from lightning_sdc.lightning_cli import UsageError, resolve_config
from lightning_sdc.progress import progress, quiet_lightning, update_callback

#: the method name of a Random-baseline cell (no distillation; evaluated with its config's protocol)
RANDOM = "random"

#: the paper's Table 1 (GM) and Table 2 (TM): method, dataset, then (baseline, +SDC) accuracy in % at IPC 1, 10, 50
_PAPER_ROWS = """
dc mnist 91.8 92 97.4 97.5 98.5 98.9
dc fashionmnist 70.3 70.7 82.1 82.4 83.6 84.7
dc svhn 31.1 31.4 75.3 76 82.1 82.3
dsa mnist 88.9 89.2 97.2 97.3 99.1 99.2
dsa fashionmnist 70.1 70.5 84.7 84.8 88.7 88.9
dsa svhn 29.4 30.6 79.2 79.4 84.3 85.3
dsac mnist 89.2 89.7 97.7 97.8 98.8 98.9
dsac fashionmnist 71.8 72.2 84.9 85.1 88.5 88.7
dsac svhn 47.5 48.1 80.1 80.4 87.3 87.4
mtt cifar10 45.8 46.2 64.7 65.3 71.5 71.8
mtt cifar100 23.9 24.3 38.7 38.8 47.3 47.3
mtt tinyimagenet 8.3 8.5 20.6 20.7 28 28
ftd cifar10 46.7 47.2 65.2 66.4 72.2 73.3
ftd cifar100 25.1 25.4 42.5 42.6 50.3 50.5
ftd tinyimagenet 10.9 11.2 21.8 22.2
tesla cifar10 47.4 47.9 65 65.3 71.4 71.8
tesla cifar100 23.9 24.2 35.8 35.9 44.9 45
datm cifar10 46.1 46.4 66.4 66.6 75.9 76.1
datm cifar100 27.7 28 47.6 47.8 52.1 52.5
datm tinyimagenet 17.1 17.4 30.1 30.7 39.7 39.9
"""
PAPER: dict[tuple[str, str, int], tuple[float, float]] = {
    (m, d, ipc): (float(acc[2 * k]), float(acc[2 * k + 1]))
    for m, d, *acc in (row.split() for row in _PAPER_ROWS.strip().splitlines())
    for k, ipc in enumerate((1, 10, 50)) if 2 * k < len(acc)}


@dataclass(frozen=True)
class Cell:
    """One paper cell: a config file, run with or without SDC.

    ``config_file`` (a file, or a packaged config name such as ``demo/digits_mtt_ipc1``) replaces the default
    packaged ``<method>/<dataset>_ipc<ipc>``. A ``random`` cell has no SDC variant.
    """

    method: str
    dataset: str
    ipc: int
    sdc: bool
    config_file: str | None = None

    def __post_init__(self) -> None:
        if self.method == RANDOM and self.sdc:
            raise ValueError(f"cell {self.method}_{self.dataset}_ipc{self.ipc}: a {RANDOM!r} cell has no SDC variant")

    @property
    def config(self) -> Path:
        if self.config_file is not None:
            try:
                return resolve_config(self.config_file)
            except UsageError:
                return Path(self.config_file)  # run_cell reports the missing file
        return CONFIGS / self.method / f"{self.dataset}_ipc{self.ipc}.yaml"

    @property
    def key(self) -> str:
        if self.method == RANDOM:
            return f"{self.method}_{self.dataset}_ipc{self.ipc}"
        return f"{self.method}_{self.dataset}_ipc{self.ipc}_{'sdc' if self.sdc else 'base'}"

    @property
    def paper(self) -> float | None:
        pair = PAPER.get((self.method, self.dataset, self.ipc))
        return None if pair is None else pair[1 if self.sdc else 0]


@dataclass
class Grid:
    """A named list of cells and the budget they run at (``None`` = the config's own)."""

    name: str
    cells: list[Cell]
    max_steps: int | None = None
    eval_num_models: int = 10
    eval_epochs: int | None = None
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""
    #: the trainer preset the grid is meant for (``reproduce --trainer_config`` replaces it)
    trainer_config: str = "trainer/cpu"


def _cells(methods: Sequence[str], datasets: Sequence[str], ipcs: Sequence[int]) -> list[Cell]:
    return [Cell(m, d, i, s) for m in methods for d in datasets for i in ipcs for s in (False, True)]


def _demo_cells(methods: Sequence[str], dataset: str, ipc: int, baseline_of: str) -> list[Cell]:
    """Random (with ``baseline_of``'s evaluation protocol), then each method's ``configs/demo`` run ± SDC."""
    demo = "demo/{}_{}_ipc{}"
    return [Cell(RANDOM, dataset, ipc, False, demo.format(dataset, baseline_of, ipc))] + [
        Cell(m, dataset, ipc, s, demo.format(dataset, m, ipc)) for m in methods for s in (False, True)]


GRIDS: dict[str, Grid] = {
    "table1-gpu": Grid(
        "table1-gpu", _cells(["dc", "dsa", "dsac"], ["mnist", "fashionmnist", "svhn"], [1, 10, 50]),
        eval_num_models=20, trainer_config="trainer/gpu",
        note="The paper's Table 1 (gradient matching) at each config's full protocol on one CUDA GPU: the "
        "reference's iterations (1000 for DC/DSA, 10000 for DSAC, × outer_loop image updates), batch_real 256, "
        "ConvNet-128, each method's evaluation protocol with 20 fresh networks on the whole test split, the "
        "final set; with the config's λ (paper Table 4) and with λ = 0, same seed"),
    "table2": Grid("table2", _cells(["mtt", "ftd", "tesla", "datm"], ["cifar10", "cifar100", "tinyimagenet"], [1, 10, 50]),
                   eval_num_models=5, note="the paper's Table 2 at the reference budget (GPU, experts required)"),
    "fmnist-cpu": Grid(
        "fmnist-cpu", _cells(["dc", "dsa", "dsac"], ["fashionmnist"], [1]), max_steps=30, eval_num_models=10,
        eval_epochs=300, overrides=["--model.init_args.batch_real=64"],
        method_overrides={"dsac": ["--model.init_args.outer_warmup=1"]},
        note="Fashion-MNIST IPC 1 (the full 60k/10k IDX files of Debian's dataset-fashion-mnist) on a shared 2-core "
        "CPU, one thread. Budget: 30 image updates (the reference: 1000 for DC/DSA, 10000 for DSAC) with 64 real "
        "images per class (reference 256); the paper's full-width ConvNet (128, depth 3, instance norm); DSAC's "
        "class-wise warm-up scaled from 250 of 1000 iterations to 1 of 3. Evaluation: 10 fresh ConvNets per cell, "
        "300 epochs for every method (the reference: 300 for DC, 1000 for DSA/DSAC) with each method's own "
        "augmentation (none for DC, DSA for DSA/DSAC), on all 10,000 test images",
    ),
    "tm-digits": Grid(
        "tm-digits", _demo_cells(["mtt", "ftd", "tesla", "datm"], "digits", 1, baseline_of="mtt"), eval_num_models=5,
        note="Trajectory matching on scikit-learn digits (1×8×8, 1437 train / 360 test images), IPC 1, one CPU "
        "thread: each method's CPU demo `configs/demo/digits_<method>_ipc1.yaml` as written (ConvNet width 32 "
        "depth 2, experts trained on first use into ./buffers — 4 × 15 epochs, plain SGD for MTT/TESLA/DATM, "
        "GSAM for FTD —, 10 inner steps, 150 updates) with the config's λ and with λ = 0, same seed. Not paper "
        "settings, so the paper column is empty. Evaluation: 5 fresh ConvNets × 300 epochs with DSA at the "
        "learned lr (FTD: on the EMA images; DATM: soft labels) on the 360 test images, of the final set only "
        "(no max over evaluation points). Random: one real image per class (seed 0) under the MTT demo's "
        "evaluation (lr 0.01, its initial syn_lr). \"distill s\" of the first cell on each buffer "
        "(mtt_base: SGD, ftd_base: GSAM) includes training those experts",
    ),
}


def _machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU x{torch.get_num_threads()} threads"
    return f"{platform.node() or 'host'} ({dev}, torch {torch.__version__})"


def _eval_kwargs(model: Any, grid: Grid) -> dict[str, Any]:
    kw = model.eval_kwargs()
    kw["num_models"] = grid.eval_num_models
    if grid.eval_epochs is not None:
        kw["epochs"] = grid.eval_epochs
    return kw


def run_cell(cell: Cell, grid: Grid, seed: int, trainer_config: Path) -> dict[str, Any]:
    """Distil ``cell`` with ``seed`` through the LightningCLI path and evaluate the final set, each phase under a
    bar. A ``random`` cell distils nothing: ``cell.ipc`` real images per class (``random_coreset`` with ``seed``)
    are evaluated with the protocol of the parsed model, on the dataset its DataModule would load (without
    building that DataModule's expert buffer)."""
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.lightning_cli import build_in_memory_cli
    from lightning_sdc.synthetic import random_coreset

    if not cell.config.exists():
        raise FileNotFoundError(f"cell {cell.key}: config {cell.config} does not exist")
    cli = build_in_memory_cli([trainer_config, cell.config], seed, cell_overrides(cell, grid))
    model, dm, kw = cli.model, cli.datamodule, _eval_kwargs(cli.model, grid)
    t0 = time.perf_counter()
    if cell.method == RANDOM:
        spec = load_dataset(dm.dataset, dm.root, download=dm.download, zca=dm.zca, **dm.dataset_kwargs)
        synset = random_coreset(spec, cell.ipc, seed=seed)
    else:
        with progress(total=cli.trainer.max_steps, desc=f"{cell.key} seed {seed}: distil", unit="update") as bar:
            cli.trainer.callbacks.append(update_callback(bar))
            cli.trainer.fit(model, datamodule=dm)
        spec, synset = dm.spec, model.eval_synset()
    distill_s = time.perf_counter() - t0
    with progress(total=kw["num_models"] * (kw["epochs"] + 1), desc=f"{cell.key} seed {seed}: evaluate",
                  unit="epoch") as bar:
        res = evaluate_synset(synset, (spec.test_images, spec.test_labels), on_epoch=bar.update, **kw)
    return {"seed": seed, "accuracies": res.accuracies, "steps": int(cli.trainer.global_step),
            "sdc_lambda": float(model.hparams.sdc_lambda), "distill_seconds": distill_s,
            "eval_seconds": res.seconds, "eval_epochs": res.epochs}


def summarise(grid: Grid, done: dict[str, list[dict[str, Any]]], overrides: Sequence[str] = ()) -> tuple[str, str]:
    """Markdown and CSV of every finished cell; ``overrides`` (``--max_steps 2`` …) are stated under the grid's
    note, and each row gives the networks, epochs and updates it actually ran."""
    ran = ([f"**Run with {', '.join(overrides)}**: the settings above are the grid's defaults; the table's "
            "models, eval epochs and steps columns are what ran.", ""] if overrides else [])
    md = [f"# {grid.name}", "", grid.note, "", *ran, f"Machine: {_machine()}", "",
          "| cell | λ | accuracy (%) | paper (%) | models | eval epochs | steps | distill s | eval s |",
          "|---|---|---|---|---|---|---|---|---|"]
    csv = ["cell,method,dataset,ipc,sdc,lambda,mean,std,paper,num_models,eval_epochs,steps,distill_seconds,"
           "eval_seconds"]
    for cell in grid.cells:
        runs = done.get(cell.key)
        if not runs:
            continue
        accs = torch.tensor([a for r in runs for a in r["accuracies"]], dtype=torch.float64) * 100
        mean, std = float(accs.mean()), float(accs.std(unbiased=False))
        steps = runs[0]["steps"]
        dist_s = sum(r["distill_seconds"] for r in runs)
        ev_s = sum(r["eval_seconds"] for r in runs)
        paper = "—" if cell.paper is None else f"{cell.paper:.1f}"
        lam = runs[0]["sdc_lambda"]
        lam_md, lam_csv = ("—", "") if cell.method == RANDOM else (f"{lam:g}", lam)
        epochs = runs[0].get("eval_epochs", "")
        md.append(f"| {cell.key} | {lam_md} | {mean:.2f} ± {std:.2f} | {paper} | {accs.numel()} | {epochs} | {steps} | "
                  f"{dist_s:.0f} | {ev_s:.0f} |")
        csv.append(f"{cell.key},{cell.method},{cell.dataset},{cell.ipc},{int(cell.sdc)},{lam_csv},{mean:.4f},{std:.4f},"
                   f"{'' if cell.paper is None else cell.paper},{accs.numel()},{epochs},{steps},{dist_s:.1f},{ev_s:.1f}")
    return "\n".join(md) + "\n", "\n".join(csv) + "\n"


def plan(grid: Grid, seeds: Sequence[int], trainer_config: str | Path, only: Sequence[str] | None = None
         ) -> list[str]:
    """What :func:`run_grid` will run: the run count, and per cell its updates, evaluations and an estimated time
    (:mod:`lightning_sdc.cost`: the cell's arithmetic at the rate measured on the cell's device; GM cells only).
    Configs are parsed, nothing is read or distilled."""
    from lightning_sdc.lightning_cli import build_in_memory_cli

    cells = [c for c in grid.cells if not only or c.key in only]
    lines = [f"{grid.name}: {len(cells)} cells × {len(seeds)} seed(s) = {len(cells) * len(seeds)} runs "
             f"(trainer {trainer_config})"]
    rows: list[tuple[str, RunCost, float, int]] = []
    rates: dict[tuple, float] = {}
    for cell in cells:
        if cell.method == RANDOM or not cell.config.exists():
            continue
        cli = build_in_memory_cli([resolve_config(trainer_config), cell.config], seeds[0], cell_overrides(cell, grid))
        model, trainer = cli.model, cli.trainer
        if not hasattr(model, "outer_loop"):
            lines.append(f"  {cell.key}: {trainer.max_steps} updates (no estimate: trajectory matching)")
            continue
        h = model.hparams
        points = 1 + len(evaluation_points(trainer))
        device = trainer.strategy.root_device
        key = (h.arch, repr(h.arch_kwargs), h.dataset, h.batch_real, str(device))
        if key not in rates:
            rates[key] = measured_rate(model, device)
        rows.append((cell.key, gm_run_cost(model, trainer.max_steps, points), rates[key], len(seeds)))
    return lines + (estimate_lines(rows) if rows else [])


def cell_overrides(cell: Cell, grid: Grid) -> list[str]:
    """The command-line settings of ``cell`` in ``grid`` after its config: the grid's, the method's, the budget,
    and ``sdc_lambda=0`` for the baseline."""
    overrides = [*grid.overrides, *grid.method_overrides.get(cell.method, [])]
    if grid.max_steps is not None:
        overrides.append(f"--trainer.max_steps={grid.max_steps}")
    if not cell.sdc:
        overrides.append("--model.init_args.sdc_lambda=0")
    return overrides


def cached_mismatch(cell: Cell, grid: Grid, seeds: Sequence[int], runs: list[dict[str, Any]]) -> str | None:
    """How a cached cell's runs differ from what this invocation asks (seeds, networks, epochs, updates), or
    ``None`` when they are what it would compute."""
    if [r.get("seed") for r in runs] != list(seeds):
        return f"seeds {[r.get('seed') for r in runs]}, asked {list(seeds)}"
    for r in runs:
        if len(r.get("accuracies", ())) != grid.eval_num_models:
            return f"{len(r.get('accuracies', ()))} evaluation networks, asked {grid.eval_num_models}"
        if grid.eval_epochs is not None and r.get("eval_epochs") != grid.eval_epochs:
            return f"{r.get('eval_epochs')} evaluation epochs, asked {grid.eval_epochs}"
        if grid.max_steps is not None and cell.method != RANDOM and r.get("steps") != grid.max_steps:
            return f"{r.get('steps')} updates, asked {grid.max_steps}"
    return None


def set_budget(grid: Grid, max_steps: int | None, eval_num_models: int | None, eval_epochs: int | None) -> None:
    """The command line's budget replaces the grid's where given (``None``: the grid's own)."""
    for name, value in (("max_steps", max_steps), ("eval_num_models", eval_num_models), ("eval_epochs", eval_epochs)):
        if value is not None:
            setattr(grid, name, value)


def run_grid(name: str, seeds: Sequence[int] = (0,), out: str | Path = "runs/reproduce",
             trainer_config: str | Path | None = None, max_steps: int | None = None,
             eval_num_models: int | None = None, only: Sequence[str] | None = None,
             eval_epochs: int | None = None) -> Path:
    """Run (or resume) grid ``name``; returns the Markdown path."""
    if name not in GRIDS:
        raise KeyError(f"unknown grid {name!r}; allowed: {', '.join(GRIDS)}")
    grid = GRIDS[name]
    given = [f"--{k} {v}" for k, v in (("max_steps", max_steps), ("num_models", eval_num_models),
                                      ("epochs", eval_epochs)) if v is not None]
    set_budget(grid, max_steps, eval_num_models, eval_epochs)
    out = prepare_output_dir(out, "--out")  # before any cell runs
    cache = out / grid.name
    trainer_config = trainer_config or grid.trainer_config
    with quiet_lightning():  # configs parsed per cell: no Lightning banner lines
        print("\n".join(plan(grid, seeds, trainer_config, only)), flush=True)
    done: dict[str, list[dict[str, Any]]] = {}

    def write_tables() -> tuple[str, Path]:
        md, csv = summarise(grid, done, given)
        atomic_write_text(csv, out / f"{grid.name}.csv")
        return md, atomic_write_text(md, out / f"{grid.name}.md")

    for cell in grid.cells:
        if only and cell.key not in only:
            continue
        path = cache / f"{cell.key}.json"
        if path.exists():
            try:
                cached = json.loads(path.read_text())["runs"]
            except (ValueError, KeyError, TypeError) as exc:  # a cut or foreign file: computed again
                cached, why = None, f"unreadable ({type(exc).__name__})"
            else:
                why = cached_mismatch(cell, grid, seeds, cached)
            if why is None:
                done[cell.key] = cached
                print(f"[skip] {cell.key}: finished earlier ({path})")
                continue
            print(f"[redo] {cell.key}: {path} holds other settings ({why}); computing it again", flush=True)
        runs = []
        for seed in seeds:
            print(f"[run] {cell.key} seed {seed}", flush=True)
            with quiet_lightning():
                runs.append(run_cell(cell, grid, seed, resolve_config(trainer_config)))
        atomic_write_text(json.dumps({"cell": asdict(cell), "runs": runs}, indent=1), path)
        done[cell.key] = runs
        write_tables()
    md, md_path = write_tables()
    print(f"{md}\nper-cell results: {cache}/")
    return md_path


def reproduce_command(
    grid: str = "fmnist-cpu",
    seeds: list[int] | None = None,
    out: str = "runs/reproduce",
    trainer_config: str | None = None,
    max_steps: int | None = None,
    num_models: int | None = None,
    epochs: int | None = None,
    only: list[str] | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Run (or resume) a reproduction grid of paper cells with and without SDC.

    Writes ``<out>/<grid>.md`` and ``.csv``, one JSON per finished cell.

    Args:
        grid: the grid to run (``fmnist-cpu``, ``tm-digits``, ``table1-gpu``, ``table2``).
        seeds: seeds of every cell, a plain list (``--seeds 0 1 2``; default: 0).
        out: directory of the tables and of the per-cell cache ``<out>/<grid>/`` (``results`` holds the committed
            tables).
        trainer_config: the trainer preset (a file or a packaged name: ``trainer/cpu``, ``trainer/gpu``, …;
            default: the grid's own, ``trainer/gpu`` for ``table1-gpu``).
        max_steps: override the grid's synthetic-set updates per cell.
        num_models: override the grid's fresh evaluation networks per cell.
        epochs: override the grid's training epochs of each evaluation network.
        only: cell keys to run, a plain list (default: all), e.g. ``--only dsa_fashionmnist_ipc1_sdc``.
        dry_run: print the plan (run count, per-cell budget and estimated time) and stop; without a CUDA device
            a GPU grid is planned with ``trainer/cpu`` (its time is then this CPU's).

    Returns:
        The Markdown and CSV tables written.
    """
    if grid not in GRIDS:
        raise UsageError(f"--grid {grid!r}: unknown; allowed: {', '.join(GRIDS)}")
    for name, value in (("max_steps", max_steps), ("num_models", num_models), ("epochs", epochs)):
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    keys = {c.key for c in GRIDS[grid].cells}
    unknown = sorted(set(only or ()) - keys)
    if unknown:
        raise UsageError(f"--only {', '.join(unknown)}: not a cell of {grid}; allowed: {', '.join(sorted(keys))}")
    if dry_run:
        g = GRIDS[grid]
        trainer = trainer_config or g.trainer_config
        if trainer == "trainer/gpu" and not torch.cuda.is_available():
            print(f"no CUDA device here: planning {grid} with trainer/cpu (times are this CPU's)")
            trainer = "trainer/cpu"
        set_budget(g, max_steps, num_models, epochs)
        with quiet_lightning():
            print("\n".join(plan(g, seeds or [0], trainer, only)))
        return []
    md = run_grid(grid, seeds or [0], out, trainer_config, max_steps, num_models, only, epochs)
    return [str(md), str(md.with_suffix(".csv"))]
