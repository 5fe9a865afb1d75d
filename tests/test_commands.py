"""Every command a user reads runs as written.

* the quickstart at the top of README.md (its first fenced block), verbatim and in order through the installed
  console script in one fresh directory, ``evaluate`` on the path ``fit`` printed (tiny settings appended to
  ``demo``, ``fit`` and ``evaluate``; the ``make`` lines checked with ``make -n``);
* every command in the fenced ``bash`` blocks of README.md and docs/*.md, in order, in one temporary directory,
  with tiny settings appended (:data:`TINY`) and Lightning's default logger and progress bar on; the commands that
  cannot run here are listed in :data:`NOT_RUN` with the reason and checked as far as possible (``--print_config``,
  ``make -n``); a command that is neither run nor listed fails the test;
* every packaged config through ``fit --print_config``, every trainer preset with a demo config;
* for each method (DC, DSA, DSAC, MTT, FTD, TESLA, DATM) its ``configs/demo/digits_*`` config for two real ``fit``
  steps with the default logger and progress bar (TM: experts trained first), the exported set checked;
* the console script itself once, as a subprocess (the user's path; the rest runs in-process through
  :func:`lightning_sdc.cli.run`, the same code).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_sdc.cli import CONFIG_DIR, packaged_configs, run

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

#: commands that cannot run on a CPU machine without network, root or a cluster: what is checked instead, and why
NOT_RUN = {
    "make test": "the test suite itself (`make -n test` checks the target)",
    "make install": "creates .venv and installs from the package index (`make -n install` checks the target)",
    "source .venv/bin/activate": "a shell built-in: the quickstart test checks the environment it activates",
    "sudo apt-get install dataset-fashion-mnist": "a system package (root, network); the IDX reader is tested in "
    "tests/test_data.py and the Fashion-MNIST commands run when the files are present",
    "lightning-sdc fit --config trainer/gpu --config mtt/cifar10_ipc10 --trainer.precision bf16-mixed": "a GPU and "
    "CIFAR-10 (a download); checked with --print_config",
    "lightning-sdc fit --config trainer/ddp --config dsac/svhn_ipc10": "GPUs (DDP) and SVHN (a download); checked "
    "with --print_config",
    "srun lightning-sdc fit --config trainer/ddp --trainer.num_nodes 4 --config mtt/cifar100_ipc10": "SLURM, GPUs "
    "and CIFAR-100; the lightning-sdc part is checked with --print_config",
    "lightning-sdc fit --config trainer/ddp_cpu --config demo/digits_mtt_ipc1 --data.init_args.train_if_missing false":
    "2 DDP processes re-launch the program, which pytest's in-process runner cannot be; checked with --print_config "
    "here, and tests/test_cli_ddp.py runs DDP fit through the console script",
}

#: datasets a command needs that are not always on the machine: the check that tells, and how to get them
OPTIONAL_DATA = {"fashionmnist": "apt-get install dataset-fashion-mnist"}


def _fit_tiny(config: dict) -> list[str]:
    args = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--model.init_args.eval_num_models", "1",
            "--model.init_args.eval_epochs", "1"]
    data = config["data"]
    if data["class_path"].endswith("ExpertTrajectoryDataModule"):  # one short expert, enough epochs for the draws
        init = data["init_args"]
        args += ["--data.init_args.train_num_experts", "1", "--data.init_args.train_epochs",
                 str(init["max_start_epoch"] - 1 + init["expert_epochs"])]
    return args


#: subcommand -> tiny settings appended to the command as written (the last value of an option wins)
TINY = {
    "evaluate": ["--num_models", "1", "--epochs", "1"],
    "demo": ["--steps", "2", "--num_models", "1", "--epochs", "1"],
    "gradn-curve": ["--steps", "2", "--every", "1", "--num_networks", "1", "--out", "figures/gradn_curve",
                    "--workdir", "runs/gradn_curve"],
    "theory": ["--quick", "true"],
    "experts": ["--num_experts", "2", "--epochs", "1", "--progress", "false"],
    "compare": ["--seeds", "2", "--num_models", "1", "--epochs", "1", "--gradn_networks", "0", "--test_size", "100",
                "--overrides", "trainer.max_steps=2", "model.init_args.batch_real=16", "--bootstrap", "100"],
    "configs": [],
    "--help": [],
}


def doc_blocks(path: Path) -> list[str]:
    """The fenced bash blocks of ``path``."""
    return re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", path.read_text(), re.S)


def block_commands(block: str) -> list[list[str]]:
    """The commands of a block: continuations joined, comments dropped, ``&&`` split."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        while tokens:
            cut = tokens.index("&&") if "&&" in tokens else len(tokens)
            commands.append(tokens[:cut])
            tokens = tokens[cut + 1:]
    return commands


def doc_commands(path: Path) -> list[list[str]]:
    return [c for block in doc_blocks(path) for c in block_commands(block)]


def _in_process(args: list[str]) -> tuple[object, str]:
    """``run(args)`` with stdout captured; ``SystemExit(0)`` (``--help``, ``--print_config``) is success."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            result = run(args)
        except SystemExit as exc:
            assert exc.code in (0, None), f"{shlex.join(args)} exited with {exc.code}"
            result = None
    return result, buf.getvalue()


def print_config(args: list[str]) -> dict:
    """``fit ... --print_config`` of ``args`` (everything after ``fit``), parsed."""
    _, out = _in_process(["fit", *args, "--print_config"])
    config = yaml.safe_load(out)
    assert config["model"]["class_path"].startswith("lightning_sdc.methods."), out[:500]
    return config


def _data_available(name: str) -> bool:
    from lightning_sdc.data import load_dataset

    try:
        load_dataset(name, download=False)
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False
    return True


def _check_fit(cli: object, args: list[str]) -> None:
    trainer = cli.trainer
    assert trainer.global_step == 2, shlex.join(args)
    log_dir = Path(trainer.log_dir)
    assert (log_dir / "synthetic" / "synset.pt").is_file(), log_dir
    assert trainer.loggers and trainer.progress_bar_callback is not None  # the default logger and bar were on


def run_doc_command(tokens: list[str], report: list[str]) -> None:
    """Run one documented command (see the module docstring); append what was done to ``report``."""
    text = shlex.join(tokens)
    if text in NOT_RUN:
        if tokens[0] == "make":
            out = subprocess.run(["make", "-n", tokens[1]], cwd=ROOT, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
        elif "lightning-sdc" in tokens:
            args = tokens[tokens.index("lightning-sdc") + 2:]
            print_config(args)
        report.append(f"checked only ({NOT_RUN[text]}): {text}")
        return
    program = tokens[0].removeprefix(".venv/bin/")
    if program == "make":
        target, variables = tokens[1], dict(t.split("=", 1) for t in tokens[2:] if "=" in t)
        out = subprocess.run(["make", "-n", target, *tokens[2:]], cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        command = {"demo": ["demo"], "reproduce": ["reproduce", "--grid", variables.get("GRID", "fmnist-cpu")]}
        assert target in command, f"no runner for `{text}`: add it to tests/test_commands.py"
        assert f"lightning-sdc {command[target][0]}" in out.stdout
        run_cli(command[target], report, text)
        return
    if program == "python" and tokens[1:3] == ["-m", "lightning_sdc"]:
        out = subprocess.run([sys.executable, *tokens[1:]], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "subcommands:" in out.stdout and "args parameter" not in out.stderr
        report.append(f"ran (subprocess): {text}")
        return
    assert program == "lightning-sdc", f"`{text}` is neither run nor listed in NOT_RUN (tests/test_commands.py)"
    run_cli(tokens[1:], report, text)


def run_cli(args: list[str], report: list[str], text: str) -> None:
    sub = args[0] if args else "--help"
    if sub in ("fit", "validate", "test"):
        config = print_config(args[1:])
        dataset = config["data"]["init_args"]["dataset"]
        if dataset in OPTIONAL_DATA and not _data_available(dataset):
            pytest.skip(f"`{text}` needs {dataset} ({OPTIONAL_DATA[dataset]})")
        full = [*args, *_fit_tiny(config)]
        cli, _ = _in_process(full)
        _check_fit(cli, full)
    elif sub == "reproduce":
        from lightning_sdc.experiments import GRIDS

        grid = args[args.index("--grid") + 1] if "--grid" in args else "fmnist-cpu"
        first = GRIDS[grid].cells[0].key
        full = [*args, "--max_steps", "2", "--num_models", "1", "--epochs", "1", "--only", first, "--out", "results"]
        written, _ = _in_process(full)
        assert written and all(Path(p).is_file() for p in written)
    else:
        assert sub in TINY, f"no tiny settings for `lightning-sdc {sub}`: add them to TINY in tests/test_commands.py"
        full = [*args, *TINY[sub]]
        result, out = _in_process(full)
        if sub == "--help":
            assert "subcommands:" in out
        if isinstance(result, list) and result and sub != "configs":
            assert all(Path(p).exists() for p in result), result
    report.append(f"ran: {text}  [+ {shlex.join(full[len(args):])}]" if full[len(args):] else f"ran: {text}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the module: expert buffers trained once are shared by the TM runs."""
    return tmp_path_factory.mktemp("commands")


#: blocks on the full Fashion-MNIST (60k images, width-128 ConvNet) run in `make test-all`
SLOW_WORDS = ("fashionmnist",)
BLOCKS = [pytest.param(doc, i, id=f"{doc.name}-block{i}",
                       marks=[pytest.mark.slow] if any(w in block for w in SLOW_WORDS) else [])
          for doc in DOCS for i, block in enumerate(doc_blocks(doc)) if (doc.name, i) != ("README.md", 0)]

#: the quickstart's steps, in order (the first two words of each command)
QUICKSTART = ["make install", "source .venv/bin/activate", "lightning-sdc demo", "lightning-sdc fit",
              "lightning-sdc evaluate", "make test"]
QUICKSTART_TINY = {"demo": TINY["demo"], "evaluate": TINY["evaluate"],
                   "fit": ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
                           "--model.init_args.eval_num_models", "1", "--model.init_args.eval_epochs", "1"]}


def quickstart() -> str:
    return doc_blocks(ROOT / "README.md")[0]


def test_readme_opens_with_a_quickstart_of_at_most_12_lines() -> None:
    text, block = (ROOT / "README.md").read_text(), quickstart()
    assert text.index(block) < text.index("\n## ") and len(block.strip().splitlines()) <= 12
    assert [" ".join(t[:2]) for t in block_commands(block)] == QUICKSTART
    assert "| command | what it writes | where" in text[:text.index("\n## ")]  # the table right below it


def test_readme_quickstart_runs_verbatim(tmp_path: Path) -> None:
    """Each quickstart command as written, in one fresh directory, through the installed ``lightning-sdc`` (what
    ``source .venv/bin/activate`` puts first on PATH); ``evaluate`` scores the path that ``fit`` printed."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    printed: dict[str, list[Path]] = {}
    for tokens in block_commands(quickstart()):
        if tokens[0] == "make":
            out = subprocess.run(["make", "-n", *tokens[1:]], cwd=ROOT, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
            continue
        if tokens[0] == "source":  # the environment running these tests is the one `make install` makes
            assert tokens[1] == ".venv/bin/activate" and "VENV ?= .venv" in (ROOT / "Makefile").read_text()
            assert (BIN / "activate").is_file() and (BIN / "lightning-sdc").is_file()
            continue
        out = subprocess.run([*tokens, *QUICKSTART_TINY[tokens[1]]], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        wrote = [tmp_path / line.removeprefix("wrote ") for line in out.stdout.splitlines() if line.startswith("wrote ")]
        assert all(p.exists() for p in wrote), out.stdout[-2000:]
        printed[tokens[1]] = [p.resolve() for p in wrote]
        if tokens[1] == "fit":
            fit_accuracy = re.search(r"^accuracy (\d+\.\d\d ± \d+\.\d\d) % over 1 networks", out.stdout, re.M)
        if tokens[1] == "evaluate":  # the README's path is the set `fit` wrote and said it wrote
            assert (tmp_path / tokens[2]).resolve() in printed["fit"], (tokens[2], printed["fit"])
            # the same networks score the final set in `fit` and in `evaluate`: one accuracy for one set
            assert fit_accuracy and f"| ConvNet | {fit_accuracy[1]} | 1 |" in out.stdout, (fit_accuracy, out.stdout)
    assert {p.name for p in printed["demo"]} == {"dsa.pt", "dsa_sdc.pt", "sets.png"}


def test_the_docs_have_commands() -> None:
    assert len(BLOCKS) >= 4 and sum(len(doc_commands(d)) for d in DOCS) >= 15


@pytest.mark.parametrize("doc, index", BLOCKS)
def test_every_documented_command_runs(doc: Path, index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fenced block of README.md / docs/*.md, in order, in a fresh directory (a block's commands build on
    each other, blocks do not)."""
    monkeypatch.chdir(tmp_path)
    commands = block_commands(doc_blocks(doc)[index])
    report: list[str] = []
    for tokens in commands:
        run_doc_command(tokens, report)
    assert len(report) == len(commands)
    print("\n".join(report))


def test_not_run_commands_are_still_in_the_docs() -> None:
    """NOT_RUN lists only commands the docs show (a stale entry would hide a new, unrun command)."""
    documented = {shlex.join(t) for doc in DOCS for t in doc_commands(doc)}
    assert set(NOT_RUN) <= documented, set(NOT_RUN) - documented


# ---------------------------------------------------------------------- every config
RUN_CONFIGS = [n for n in packaged_configs() if not n.startswith("trainer/")]


def test_configs_are_all_listed() -> None:
    assert len(RUN_CONFIGS) >= 64 and {"trainer/cpu", "trainer/gpu", "trainer/ddp", "trainer/ddp_cpu"} <= set(packaged_configs())


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_every_config_prints(name: str) -> None:
    config = print_config(["--config", "trainer/cpu", "--config", name])
    assert config["data"]["init_args"]["dataset"]
    assert "dataset" not in config["model"]["init_args"]  # given once, on the DataModule
    assert config["trainer"]["max_steps"] > 0


@pytest.mark.parametrize("trainer", [n for n in packaged_configs() if n.startswith("trainer/")])
def test_every_trainer_preset_prints(trainer: str) -> None:
    config = print_config(["--config", trainer, "--config", "demo/digits_dc_ipc1"])
    assert config["trainer"]["accelerator"] in ("cpu", "gpu")


# ---------------------------------------------------------------------- two real steps per method
METHOD_DEMOS = ["dc", "dsa", "dsac", "mtt", "ftd", "tesla", "datm"]
SLOW_DEMOS = {"ftd", "tesla", "datm"}  # each trains its experts / runs a TM step: make test-all


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_DEMOS else m
                                    for m in METHOD_DEMOS])
def test_each_method_fits_two_steps_with_the_default_logger(method: str, workdir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    args = ["fit", "--config", "trainer/cpu", "--config", f"demo/digits_{method}_ipc1"]
    config = print_config(args[1:])
    full = [*args, *_fit_tiny(config), f"--trainer.default_root_dir=runs/{method}"]
    cli, _ = _in_process(full)
    _check_fit(cli, full)
    logged = Path(cli.trainer.log_dir)
    assert (logged / "config.yaml").is_file() and list(logged.glob("events.out.tfevents.*") or logged.glob("*.csv"))
    assert "eval/acc_mean" in cli.trainer.callback_metrics


def test_console_script_fits_as_a_subprocess(tmp_path: Path) -> None:
    """The installed ``lightning-sdc`` script, a packaged config named from an empty directory, 2 steps."""
    script = shutil.which("lightning-sdc", path=str(BIN)) or shutil.which("lightning-sdc")
    assert script, "the lightning-sdc console script is not installed"
    args = [script, "fit", "--config", "trainer/cpu", "--config", "demo/digits_dsa_ipc1",
            "--model.init_args.arch_kwargs={width: 8, depth: 1}", "--model.init_args.batch_real=8",
            "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--model.init_args.eval_num_models", "1",
            "--model.init_args.eval_epochs", "1"]
    out = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "args parameter" not in out.stderr and "max_steps=2` reached" in out.stderr + out.stdout
    assert list(tmp_path.glob("lightning_logs/version_0/synthetic/synset.pt"))
    assert CONFIG_DIR.is_dir()
