"""Execute every notebook under ``notebooks/`` at tiny settings (nbclient, a kernel of this interpreter).

A cell overriding the notebook's ``parameters`` cell is injected right after it (papermill-style), so each
notebook runs its real code path on a few steps / one evaluation network / a few epochs. The kernels run with
one torch/OpenMP thread and the Agg backend (a kernel spec written to a private Jupyter path), so the four
notebooks take about 40 s on two busy CPU cores, most of it each kernel importing Lightning.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
KERNEL = "lsdc-test"
CROSS_ARCHS = ["ConvNet", "ConvNetBN"]
TINY = {
    # 01, 02, 04: distillation and evaluation
    "DATASET": "digits",
    "STEPS": 3,
    "EVAL_MODELS": 1,
    "EVAL_EPOCHS": 5,
    "WIDTH": 16,
    "DEPTH": 2,
    "BATCH_REAL": 32,
    "CROSS_ARCHS": CROSS_ARCHS,
    # 02: GraDN tracking, expert trajectories, Figure 3 ensemble
    "TRACK_EVERY": 1,
    "TRACK_NETWORKS": 1,
    "EXPERTS": 1,
    "MAX_START_EPOCH": 1,
    "EXPERT_EPOCHS": 1,
    "SYN_STEPS": 2,
    "ENSEMBLE": 2,
    "ENSEMBLE_EPOCHS": 1,
    "NUM_SAMPLES": 200,
    # 03: theory curves and simulations
    "N_ALPHA": 4,
    "FS": (1.0, 0.4),
    "SIM_ALPHAS": (1.0, 4.0),
    "REPEATS": 2,
    "D_PERFECT": 40,
    "D_IMPERFECT": 30,
    "ANGLES": (0.0, 20.0),
    "PLANE": (4, 3),
    "CROSSOVER_FS": (0.4,),
}
_NUM = r"\d+\.\d+"  # a finite number (never nan / inf)
_ACC = rf"{_NUM} ± {_NUM}"
# regular expressions that must match the text outputs of each notebook: its key results, with numbers
EXPECTED = {
    "01_quickstart.ipynb": [
        rf"ACCURACY DSA: {_ACC} %",
        rf"ACCURACY DSA \+ SDC: {_ACC} %",
        *(rf"\| {arch} \| {_ACC} \| 1 \| 5 \|" for arch in CROSS_ARCHS),
    ],
    "02_difficulty.ipynb": [
        *(
            rf"GRADN {name}: first {_NUM}, last {_NUM}"
            for name in ("DSA", r"DSA \+ SDC", "MTT", r"MTT \+ SDC")
        ),
        *(rf"Spearman {pair}: rho = -?{_NUM}" for pair in ("χ ~ GraDN", "χ ~ loss", "GraDN ~ loss")),
    ],
    "03_theory.ipynb": [
        # the unpruned maximal-stability perceptron at alpha = 1 (Gardner / Engel & Van den Broeck)
        r"alpha=    1: eps=0\.2657",
        rf"f=0\.4: keep easy below alpha_syn={_NUM} \(alpha_tot={_NUM}\), keep hard above",
    ],
    "04_your_own_data.ipynb": [
        *(rf"\| {arch} \| {_ACC} \| 1 \| 5 \|" for arch in CROSS_ARCHS),
        re.escape("SAVED bars_blobs_dc.pt: (3, 1, 16, 16)"),
    ],
}

# files each notebook must write into its output folder (``LSDC_NOTEBOOK_OUT``)
EXPECTED_FILES = {
    "02_difficulty.ipynb": ["dsa.csv", "dsa_sdc.csv", "mtt.csv", "mtt_sdc.csv"],
    "04_your_own_data.ipynb": ["bars_blobs_dc.pt"],
}


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A kernel spec for ``sys.executable`` (one thread, Agg) in a private Jupyter data path; its name."""
    import os

    data_dir = tmp_path_factory.mktemp("jupyter")
    spec_dir = data_dir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "lightning_sdc test kernel",
                "language": "python",
                "env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
            }
        )
    )
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(data_dir) + (os.pathsep + old if old else "")
    yield KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def _parameters_index(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))


def _inject_tiny(nb) -> None:
    """Insert an override cell after the ``parameters`` cell (only names the notebook defines)."""
    idx = _parameters_index(nb)
    src = nb.cells[idx].source
    lines = [f"{k} = {v!r}" for k, v in TINY.items() if re.search(rf"^{k} =", src, re.MULTILINE)]
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell("\n".join(lines)))


def _text_outputs(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append(out["text"])
            for key in ("text/plain", "text/markdown"):
                if key in out.get("data", {}):
                    parts.append(out["data"][key])
    return "\n".join(parts)


def test_every_notebook_has_checks() -> None:
    names = {p.name for p in NOTEBOOK_FILES}
    assert names == set(EXPECTED), (
        f"notebooks without checks: {names - set(EXPECTED)}; "
        f"checks without notebooks: {set(EXPECTED) - names}"
    )


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=[p.stem for p in NOTEBOOK_FILES])
def test_notebook_is_stripped_and_parametrised(path: Path) -> None:
    """Committed notebooks carry no outputs, execution counts or widget state, and one ``parameters`` cell."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i}: outputs not stripped"
            assert cell.get("execution_count") is None, f"{path.name} cell {i}: execution_count not stripped"
        assert "attachments" not in cell, f"{path.name} cell {i}: attachments"
    assert "widgets" not in raw["metadata"], f"{path.name}: widget state in the metadata"
    tagged = [c for c in raw["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0]["cell_type"] == "code", f"{path.name}: needs one parameters cell"
    params = "".join(tagged[0]["source"])
    assert any(re.search(rf"^{k} =", params, re.MULTILINE) for k in TINY), f"{path.name}: no tiny override"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=[p.stem for p in NOTEBOOK_FILES])
def test_notebook_runs(path: Path, kernel_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(path, as_version=4)
    _inject_tiny(nb)
    monkeypatch.setenv("LSDC_NOTEBOOK_OUT", str(tmp_path))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        nb, timeout=240, kernel_name=kernel_name, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    elapsed = time.perf_counter() - start
    text = _text_outputs(nb)
    for pattern in EXPECTED[path.name]:
        assert re.search(pattern, text), (
            f"{path.name}: no match for {pattern!r} in the outputs:\n{text[-3000:]}"
        )
    for name in EXPECTED_FILES.get(path.name, []):
        assert (tmp_path / name).is_file(), f"{path.name} did not write {name} into LSDC_NOTEBOOK_OUT"
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, f"{path.name} wrote into notebooks/"
    print(f"{path.name}: {elapsed:.1f} s")
