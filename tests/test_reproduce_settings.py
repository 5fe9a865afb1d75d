"""``reproduce`` reports what it ran: a cached cell computed with other settings is computed again,
not reused, and the report states the command line's overrides and each cell's networks, epochs and updates."""

from __future__ import annotations

from dataclasses import replace

from lightning_sdc.experiments import GRIDS, cached_mismatch, summarise


def _runs(seeds=(0,), models=5, epochs=300, steps=150) -> list[dict]:
    return [{"seed": s, "accuracies": [0.5] * models, "steps": steps, "sdc_lambda": 0.01, "distill_seconds": 1.0,
             "eval_seconds": 1.0, "eval_epochs": epochs} for s in seeds]


def test_a_cached_cell_with_other_settings_is_not_reused() -> None:
    grid = replace(GRIDS["tm-digits"], eval_num_models=5, eval_epochs=300, max_steps=150)
    cell = grid.cells[1]
    assert cached_mismatch(cell, grid, [0], _runs()) is None
    assert cached_mismatch(cell, grid, [0, 1], _runs()) == "seeds [0], asked [0, 1]"
    assert cached_mismatch(cell, grid, [0], _runs(models=1)) == "1 evaluation networks, asked 5"
    assert cached_mismatch(cell, grid, [0], _runs(epochs=2)) == "2 evaluation epochs, asked 300"
    assert cached_mismatch(cell, grid, [0], _runs(steps=2)) == "2 updates, asked 150"


def test_the_report_states_the_overrides_and_what_each_cell_ran() -> None:
    grid = replace(GRIDS["tm-digits"], eval_num_models=1, eval_epochs=2)
    cell = grid.cells[1]
    md, csv = summarise(grid, {cell.key: _runs(models=1, epochs=2, steps=3)}, ["--num_models 1", "--epochs 2"])
    assert "**Run with --num_models 1, --epochs 2**: the settings above are the grid's defaults" in md
    assert f"| {cell.key} | 0.01 | 50.00 ± 0.00 | — | 1 | 2 | 3 |" in md
    assert csv.splitlines()[0].split(",")[9:12] == ["num_models", "eval_epochs", "steps"]
