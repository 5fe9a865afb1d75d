"""The command line: console script, subcommands, and every YAML under configs/ resolving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightning_sdc.cli import SUBCOMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
TRAINER_CONFIGS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "trainer")


def test_python_m_help():
    out = subprocess.run([sys.executable, "-m", "lightning_sdc", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "fit" in out.stdout and "evaluate" in out.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def _print_config(configs: list[Path], capsys) -> str:
    args = ["fit"]
    for c in configs:
        args += ["--config", str(c)]
    with pytest.raises(SystemExit) as exc:
        main(args + ["--print_config"])
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    return captured.out


def test_there_are_configs():
    assert len(TRAINER_CONFIGS) >= 4 and len(RUN_CONFIGS) >= 27


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_every_config_resolves(config, capsys):
    out = _print_config([ROOT / "configs" / "trainer" / "cpu.yaml", config], capsys)
    assert "class_path: lightning_sdc.methods" in out
    assert "dataset:" in out


@pytest.mark.parametrize("trainer", TRAINER_CONFIGS, ids=lambda p: p.name)
def test_every_trainer_preset_resolves(trainer, capsys):
    demo = sorted((ROOT / "configs" / "demo").glob("*.yaml"))[0]
    out = _print_config([trainer, demo], capsys)
    assert "accelerator:" in out


def test_unknown_method_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model", "NoSuchMethod", "--print_config"])
    assert "NoSuchMethod" in capsys.readouterr().err
