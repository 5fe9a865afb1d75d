"""Packaging: the wheel ships every config and the licence; configs are package data, named from any directory."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import lightning_sdc
from lightning_sdc.cli import CONFIG_DIR, packaged_configs

ROOT = Path(__file__).resolve().parents[1]
SOURCE_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """``pip wheel . --no-deps`` of a copy of the source (so no build/ lands in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCE_FILES:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "lightning_sdc", src / "lightning_sdc", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = (tmp / "dist").glob("lightning_sdc-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_every_config_and_the_licence(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    shipped = {n for n in names if n.startswith("lightning_sdc/configs/") and n.endswith(".yaml")}
    in_tree = {f"lightning_sdc/configs/{p.relative_to(CONFIG_DIR).as_posix()}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert len(in_tree) >= 69 and shipped == in_tree
    licence = [n for n in names if n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")]
    assert licence and "MIT License" in wheel.read(licence[0]).decode()
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "lightning-sdc = lightning_sdc.cli:main" in wheel.read(entry_points).decode()
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = wheel.read(metadata).decode()
    assert "Provides-Extra: tensorboard" in meta and "Requires-Dist: pytorch-lightning" in meta
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    assert "lightning_sdc/__main__.py" in names and "lightning_sdc/cli.py" in names


def test_configs_are_package_data_and_the_checkout_path_still_works() -> None:
    assert CONFIG_DIR == Path(lightning_sdc.__file__).resolve().parent / "configs"
    top = ROOT / "configs"
    assert top.is_symlink() and top.resolve() == CONFIG_DIR  # `--config configs/...` in a checkout
    assert sorted(str(p.relative_to(top).with_suffix("")) for p in top.rglob("*.yaml")) == packaged_configs()


def test_drivers_resolve_configs_inside_the_package(tmp_path, monkeypatch) -> None:
    """demo, reproduce and gradn-curve name packaged configs, never paths relative to the source tree."""
    from lightning_sdc import demo, experiments
    from lightning_sdc import gradn_curve as curve
    from lightning_sdc.cli import resolve_config

    monkeypatch.chdir(tmp_path)  # no configs/ here
    for name in (demo.CONFIG, demo.TRAINER, curve.DEFAULT_CONFIG):
        assert resolve_config(name).is_relative_to(CONFIG_DIR)
    for grid in experiments.GRIDS.values():
        for cell in grid.cells:
            assert cell.config.is_relative_to(CONFIG_DIR), cell.key
    for name in ("fmnist-cpu", "tm-digits"):  # the CPU grids: every cell has its config
        assert all(cell.config.is_file() for cell in experiments.GRIDS[name].cells)


def test_extras_and_licence_are_declared() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "MIT" and (ROOT / "LICENSE").is_file()
    extras = {k: v.split() for k, v in cfg["options.extras_require"].items()}
    assert "tensorboard" in extras["tensorboard"] and "tensorboard" in extras["dev"]
    assert "pytorch-lightning>=2.4" in cfg["options"]["install_requires"].split()
