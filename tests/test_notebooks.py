"""Execute every notebook under ``notebooks/`` at tiny settings (nbclient, a kernel of this interpreter).

A cell overriding the notebook's ``parameters`` cell is injected right after it (papermill-style), so each
notebook runs its real code path on a few steps / one evaluation network / a few epochs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TINY = {
    "DATASET": "digits",
    "STEPS": 3,
    "EVAL_MODELS": 1,
    "EVAL_EPOCHS": 5,
    "WIDTH": 16,
    "DEPTH": 2,
    "BATCH_REAL": 32,
    "CROSS_ARCHS": ["ConvNet", "ConvNetBN"],
    "ENSEMBLE": 2,
    "ENSEMBLE_EPOCHS": 1,
    "NUM_SAMPLES": 200,
    "TRACK_EVERY": 1,
    "TRACK_NETWORKS": 1,
}
# text that must appear in the outputs of each notebook (a key result, not just "it ran")
EXPECTED = {
    "01_quickstart.ipynb": ["| architecture | accuracy (%)", "ACCURACY DSA + SDC"],
    "02_difficulty.ipynb": ["Spearman", "GRADN DSA + SDC"],
    "04_your_own_data.ipynb": ["| architecture | accuracy (%)", "SAVED"],
}
NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Register a kernel spec for ``sys.executable`` in a private Jupyter path and return its name."""
    import os

    from jupyter_client.kernelspec import KernelSpecManager

    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "src" / "lsdc-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "lightning_sdc test kernel",
        "language": "python",
    }))
    data_dir = root / "data"
    KernelSpecManager(data_dir=str(data_dir)).install_kernel_spec(str(spec_dir), kernel_name="lsdc-test",
                                                                  prefix=None, user=False)
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(data_dir) + (os.pathsep + old if old else "")
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield "lsdc-test"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


def _inject_tiny(nb) -> None:
    """Insert an override cell after the ``parameters`` cell (only names the notebook defines)."""
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    src = nb.cells[idx].source
    lines = [f"{k} = {v!r}" for k, v in TINY.items() if f"{k} =" in src]
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


def test_notebooks_exist() -> None:
    names = {p.name for p in NOTEBOOK_FILES}
    assert set(EXPECTED) <= names, f"missing notebooks: {set(EXPECTED) - names}"


#: over a minute each on 2 busy cores (they distil and train ensembles): run by `make test-all`
SLOW_NOTEBOOKS = {"01_quickstart", "02_difficulty"}
NOTEBOOK_PARAMS = [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p for p in NOTEBOOK_FILES]


@pytest.mark.parametrize("path", NOTEBOOK_PARAMS, ids=[p.stem for p in NOTEBOOK_FILES])
def test_notebook_runs(path: Path, kernel_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = nbformat.read(path, as_version=4)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), f"{path.name}: no parameters cell"
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), "outputs not stripped"
    _inject_tiny(nb)
    monkeypatch.setenv("LSDC_NOTEBOOK_OUT", str(tmp_path))
    start = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    elapsed = time.perf_counter() - start
    text = _text_outputs(nb)
    for needle in EXPECTED.get(path.name, []):
        assert needle in text, f"{path.name}: {needle!r} not in the outputs"
    print(f"{path.name}: {elapsed:.1f} s")
