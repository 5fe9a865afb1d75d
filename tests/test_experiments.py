"""The reproduction harness end to end on a tiny grid: tables, per-cell cache, resume without recompute."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lightning_sdc import experiments
from lightning_sdc.experiments import RANDOM, Cell, Grid, run_grid

DEMO = "demo/digits_dc_ipc1"  # a packaged config name


@pytest.fixture
def tiny_grid(monkeypatch: pytest.MonkeyPatch) -> tuple[Grid, list[str]]:
    """One DC + SDC cell on digits (2 updates of a width-8 ConvNet) and a Random row under DC's protocol;
    every evaluation is 1 network × 2 epochs. Returns the grid and the keys ``run_cell`` was called with."""
    grid = Grid("tiny", [Cell("dc", "digits", 1, True, DEMO), Cell(RANDOM, "digits", 1, False, DEMO)],
                max_steps=2, eval_num_models=1, eval_epochs=2,
                overrides=["--model.init_args.batch_real=8", "--model.init_args.arch_kwargs={width: 8, depth: 2}"],
                note="test grid")
    monkeypatch.setitem(experiments.GRIDS, grid.name, grid)
    calls: list[str] = []
    real_run_cell = experiments.run_cell

    def counting(cell: Cell, *args, **kwargs):
        calls.append(cell.key)
        return real_run_cell(cell, *args, **kwargs)

    monkeypatch.setattr(experiments, "run_cell", counting)
    return grid, calls


def test_grid_runs_writes_tables_and_resumes_without_recompute(tiny_grid, tmp_path: Path) -> None:
    grid, calls = tiny_grid
    md = run_grid(grid.name, out=tmp_path)
    assert calls == ["dc_digits_ipc1_sdc", "random_digits_ipc1"]
    cache = {c.key: tmp_path / grid.name / f"{c.key}.json" for c in grid.cells}
    assert md == tmp_path / "tiny.md" and md.exists() and (tmp_path / "tiny.csv").exists()
    assert all(p.exists() for p in cache.values())
    stamps = {k: p.stat().st_mtime_ns for k, p in cache.items()}

    rows = {r["cell"]: r for r in csv.DictReader((tmp_path / "tiny.csv").read_text().splitlines())}
    assert set(rows) == set(cache)
    for row in rows.values():
        assert 0.0 <= float(row["mean"]) <= 100.0 and float(row["std"]) >= 0.0
        assert int(row["num_models"]) == 1 and row["paper"] == ""
    dc, rnd = rows["dc_digits_ipc1_sdc"], rows["random_digits_ipc1"]
    assert int(dc["steps"]) == 2 and float(dc["lambda"]) == 0.01 and int(dc["sdc"]) == 1
    assert int(rnd["steps"]) == 0 and rnd["lambda"] == "" and int(rnd["sdc"]) == 0
    run = json.loads(cache["dc_digits_ipc1_sdc"].read_text())["runs"][0]
    assert run["eval_epochs"] == 2 and len(run["accuracies"]) == 1
    text = md.read_text()
    assert "test grid" in text and "| random_digits_ipc1 | — |" in text

    first_csv = (tmp_path / "tiny.csv").read_text()
    run_grid(grid.name, out=tmp_path)  # everything cached: nothing is recomputed or rewritten
    assert calls == ["dc_digits_ipc1_sdc", "random_digits_ipc1"]
    assert {k: p.stat().st_mtime_ns for k, p in cache.items()} == stamps
    assert (tmp_path / "tiny.csv").read_text() == first_csv


def test_cells_and_grids_are_validated() -> None:
    assert Cell("mtt", "cifar10", 1, False).config == experiments.CONFIGS / "mtt" / "cifar10_ipc1.yaml"
    assert Cell("mtt", "digits", 1, True, "demo/digits_mtt_ipc1").config.exists()
    assert Cell("mtt", "digits", 1, True, "configs/demo/digits_mtt_ipc1.yaml").config.exists()
    assert all(c.config.exists() for c in experiments.GRIDS["tm-digits"].cells)
    with pytest.raises(ValueError, match="no SDC variant"):
        Cell(RANDOM, "digits", 1, True)
    with pytest.raises(KeyError, match="unknown grid 'nope'"):
        run_grid("nope")


def test_reproduce_takes_plain_lists_and_refuses_bad_cells(monkeypatch) -> None:
    """`lightning-sdc reproduce --seeds 0 1 --only a b` as the shell splits it; unknown cells/grids are one line."""
    from lightning_sdc.cli import UsageError, run

    seen = {}
    monkeypatch.setattr(experiments, "run_grid", lambda *a: seen.setdefault("args", a) and Path("x.md"))
    keys = [c.key for c in experiments.GRIDS["tm-digits"].cells[:2]]
    assert run(["reproduce", "--grid", "tm-digits", "--seeds", "0", "1", "--only", *keys, "--num_models", "2"]) == [
        "x.md", "x.csv"]
    grid, seeds, _out, _trainer, _steps, num_models, only, _epochs = seen["args"]
    assert (grid, seeds, num_models, only) == ("tm-digits", [0, 1], 2, keys)
    with pytest.raises(UsageError, match="--only nope: not a cell of tm-digits; allowed: "):
        run(["reproduce", "--grid", "tm-digits", "--only", "nope"])
    with pytest.raises(UsageError, match="--grid 'nope': unknown; allowed: "):
        run(["reproduce", "--grid", "nope"])


def test_table1_gpu_dry_run_plans_and_estimates(capsys) -> None:
    """`reproduce --grid table1-gpu --dry_run` on a CPU: the run count, and each cell's updates and arithmetic from
    the ConvNet-128 count — DC's MNIST-size ConvNet pads its first convolution to 32×32, so one image's forward is
    2·9·128·(32² + 128·(16² + 8²)) + 2·2048·10 = 96,772,096 FLOPs, one DC IPC-1 update passes 10 × 256 real
    images (× 3) and 10 synthetic ones (× 6) — and the 300-epoch evaluation of 20 networks on 10,000 test images,
    at each of the config's 2 evaluation points; nothing is distilled."""
    from lightning_sdc.cli import run

    keys = ["dc_fashionmnist_ipc1_base", "dc_fashionmnist_ipc1_sdc"]
    assert run(["reproduce", "--grid", "table1-gpu", "--dry_run", "true", "--seeds", "0", "1", "--only", *keys]) == []
    text = capsys.readouterr().out
    assert "table1-gpu: 2 cells × 2 seed(s) = 4 runs" in text
    per_image = 2 * 9 * 128 * (32 * 32 + 128 * (16 * 16 + 8 * 8)) + 2 * 2048 * 10
    update = per_image * (3 * 10 * 256 + 6 * 10)
    evaluation = 20 * per_image * (3 * 300 * 10 + 10_000)
    for key in keys:
        assert (f"  {key}: 2 run(s) × (1000 updates × {update / 1e9:.0f} GFLOP + 2 evaluation(s) × "
                f"{evaluation / 1e12:.1f} TFLOP)") in text
    assert "estimated total:" in text and not list(Path().glob("results/table1-gpu*"))
