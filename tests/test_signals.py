"""Every long command stops the same way on SIGTERM, SIGUSR1 and SIGINT (issue #25): exit status 128 + signal, one
line saying so, finished work kept on disk, no worker left running, and the same command continues. Each case is a
real ``lightning-sdc`` child process parked in the middle of a unit of work (:mod:`tests.signal_child`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_sdc import signals
from lightning_sdc.cli import run

from .reliability_helpers import (
    REPO,
    cli_config,
    dc_model,
    expert_data,
    ftd_model,
    real_data,
    wait_for,
    write_config,
)

TRAINING_EPOCH = "lightning_sdc.training.loop:TrainingLoop.run_epoch"
UPDATE = "pytorch_lightning.loops.training_epoch_loop:_TrainingEpochLoop.advance"
EVALUATION = "pytorch_lightning.loops.evaluation_loop:_EvaluationLoop.run"
TINY_NET = "{width: 8, depth: 1}"


def start(tmp: Path, target: str, nth: int, *args: str, log: str = "run.log") -> tuple[subprocess.Popen, Path, Path]:
    """``lightning-sdc ARGS`` in ``tmp``, parked at the ``nth`` call of ``target``; returns (process, marker, log)."""
    marker, log_path = tmp / f"parked.{log}", tmp / log
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO), "LIGHTNING_SDC_QUIET": "1"}
    out = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "tests.signal_child", str(marker), target, str(nth), *args],
                            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, marker, log_path


def children(pid: int) -> list[int]:
    """Live (non-zombie) children of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(errors="replace").rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if stat[1] == str(pid) and stat[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace").rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return stat[0] != "Z"


def interrupt(tmp: Path, signum: int, target: str, nth: int, *args: str, command: str,
              workers: int = 0) -> str:
    """Run the command parked in its long phase, send ``signum``; check status, the one line, no workers left.
    Returns the log."""
    proc, marker, log = start(tmp, target, nth, *args)
    try:
        wait_for(marker, proc, log, timeout=300)
        pids: list[int] = []
        if workers:
            deadline = time.monotonic() + 120
            while len(pids) < workers and time.monotonic() < deadline:
                pids = [p for p in children(proc.pid) if b"spawn" in Path(f"/proc/{p}/cmdline").read_bytes()]
                time.sleep(0.1)
            assert len(pids) >= workers, f"{len(pids)} workers found"
        os.kill(proc.pid, signum)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert rc == 128 + signum, f"exit status {rc}:\n{text[-3000:]}"
    name = signal.Signals(signum).name
    # a distillation in progress (fit, a compare run) reports the update it stopped after
    said = f"{name} received" if command in ("fit", "compare") else f"lightning-sdc {command}: {name} received"
    assert said in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "a worker outlived its parent"
    return text


def rerun(tmp: Path, *args: str) -> str:
    proc, _, log = start(tmp, TRAINING_EPOCH, 0, *args, log="rerun.log")
    rc = proc.wait(timeout=600)
    text = log.read_text(errors="replace")
    assert rc == 0, f"exit status {rc}:\n{text[-3000:]}"
    return text


# ------------------------------------------------------------------------------------------- the mechanism
def test_stop_on_signals_raises_stopped_with_the_status_and_restores_handlers(capsys) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(signals.Stopped) as info, signals.stop_on_signals("unit"):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(5)  # interrupted by the handler
    assert info.value.code == 138 and info.value.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lightning-sdc unit: SIGUSR1 received; stopped (exit status 138)" in err


def test_hold_finishes_the_block_then_stops() -> None:
    done = []
    with pytest.raises(signals.Stopped) as info, signals.stop_on_signals("unit"):
        with signals.hold():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            done.append("row")  # the unit in progress is finished
        done.append("next")  # never reached
    assert done == ["row"] and info.value.code == 143


def test_stopped_command_terminates_its_workers() -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(signals.Stopped), signals.stop_on_signals("unit"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert worker.wait(timeout=10) == -signal.SIGTERM
    finally:
        if worker.poll() is None:
            worker.kill()


# ------------------------------------------------------------------------------------------- per command
def test_experts_stop_keeps_finished_experts_and_the_same_command_continues(tmp_path: Path) -> None:
    args = ["experts", "--dataset", "digits", "--num_experts", "2", "--epochs", "2", "--out", "buf",
            "--arch_kwargs", TINY_NET, "--batch_size", "128", "--progress", "false"]
    interrupt(tmp_path, signal.SIGTERM, TRAINING_EPOCH, 3, *args, command="experts")  # expert 1's first epoch
    first = tmp_path / "buf" / "expert_0000.pt"
    assert first.is_file() and not (tmp_path / "buf" / "expert_0001.pt").exists()
    stamp = first.stat().st_mtime_ns
    rerun(tmp_path, *args)
    assert first.stat().st_mtime_ns == stamp  # kept, not retrained
    assert (tmp_path / "buf" / "expert_0001.pt").is_file()


def test_theory_stops_on_sigint(tmp_path: Path) -> None:
    interrupt(tmp_path, signal.SIGINT, "lightning_sdc.theory.figures:figure_data", 1,
              "theory", "--figure", "4a", "--quick", "true", "--out", "figs", command="theory")
    assert not (tmp_path / "figs" / "fig4a.png").exists()


def _synset(tmp: Path) -> Path:
    from lightning_sdc.synthetic import SyntheticSet

    return SyntheticSet.blank(dataset="digits", ipc=1, num_classes=10, image_shape=(1, 8, 8)).save(tmp / "set.pt")


@pytest.mark.slow
def test_evaluate_stops_on_sigusr1(tmp_path: Path) -> None:
    path = _synset(tmp_path)
    interrupt(tmp_path, signal.SIGUSR1, TRAINING_EPOCH, 2, "evaluate", str(path), "--num_models", "1",
              "--epochs", "3", "--archs", "ConvNet", "--arch_kwargs", TINY_NET, command="evaluate")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "experts"])
def test_ddp_spawn_workers_end_with_their_parent(tmp_path: Path, command: str) -> None:
    layout = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp_spawn"]
    if command == "evaluate":
        args = ["evaluate", str(_synset(tmp_path)), "--num_models", "2", "--epochs", "2000", "--archs", "ConvNet",
                "--arch_kwargs", TINY_NET, *layout]
    else:
        args = ["experts", "--dataset", "digits", "--num_experts", "2", "--epochs", "200", "--out", "buf",
                "--arch_kwargs", TINY_NET, "--progress", "false", *layout]
    _signal_spawned(tmp_path, args)


def _signal_spawned(tmp: Path, args: list[str]) -> None:
    proc, _, log = start(tmp, TRAINING_EPOCH, 0, *args)
    try:
        pids: list[int] = []
        deadline = time.monotonic() + 240
        while len(pids) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            pids = [p for p in children(proc.pid) if b"spawn" in Path(f"/proc/{p}/cmdline").read_bytes()]
            time.sleep(0.1)
        assert len(pids) == 2, "no spawned workers"
        time.sleep(8)  # the workers import and start training
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert rc == 143, f"exit status {rc}:\n{text[-3000:]}"
    assert "SIGTERM received" in text
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "a worker outlived its parent"


def _stop_after_the_first_network(tmp: Path, args: list[str], out: str, first: str) -> tuple[Path, Path]:
    """SIGTERM in the second network's first epoch: exit 143 and only the first network kept in ``<out>/networks``;
    the same command then reuses it (says so in one line) and ends as the uninterrupted run in ``ref/`` (in this
    process, one thread as the child). Every kept network equals the reference's (same file name: same settings).
    Returns both output directories."""
    command = args[0]
    interrupt(tmp, signal.SIGTERM, TRAINING_EPOCH, 3, *args, command=command)  # epochs 2: network 1's first epoch
    (kept,) = (tmp / out / "networks").glob("*.pt")
    assert kept.name.startswith(first), kept.name
    stamp = kept.stat().st_mtime_ns
    proc, _, log = start(tmp, TRAINING_EPOCH, 0, *args, log="rerun.log")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run([*args[:-1], str(tmp / "ref" / out)])
        rc = proc.wait(timeout=600)
    finally:
        torch.set_num_threads(threads)
        if proc.poll() is None:
            proc.kill()
    text = log.read_text(errors="replace")
    assert rc == 0, f"exit status {rc}:\n{text[-3000:]}"
    assert f"{command}: reused 1 of 2 trained networks kept in {out}/networks" in text, text[-3000:]
    assert kept.stat().st_mtime_ns == stamp  # kept, not trained again
    names = sorted(p.name for p in (tmp / out / "networks").glob("*.pt"))
    assert len(names) == 2 and names == sorted(p.name for p in (tmp / "ref" / out / "networks").glob("*.pt"))
    for name in names:
        a, b = (torch.load(d / out / "networks" / name, weights_only=True) for d in (tmp, tmp / "ref"))
        assert a["settings"] == b["settings"] and all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])
    return tmp / out, tmp / "ref" / out


def test_difficulty_stopped_keeps_its_finished_networks_and_the_same_command_gives_the_same_scores(
        tmp_path: Path) -> None:
    args = ["difficulty", "--dataset", "digits", "--models", "2", "--epochs", "2", "--arch_kwargs", TINY_NET,
            "--per_class", "2", "--batch_size", "128", "--out", "diff"]
    resumed, reference = _stop_after_the_first_network(tmp_path, args, "diff", "ensemble_000_")
    a, b = (torch.load(d / "scores.pt", weights_only=True) for d in (resumed, reference))
    for key in ("gradn", "el2n", "loss", "wrong", "labels", "indices"):
        assert torch.equal(a[key], b[key]), key
    assert a["meta"] == b["meta"]


def test_forgetting_coreset_stopped_keeps_its_finished_runs_and_the_same_command_gives_the_same_set(
        tmp_path: Path) -> None:
    args = ["coreset", "--method", "forgetting", "--dataset", "digits", "--ipc", "2", "--runs", "2", "--epochs", "2",
            "--arch_kwargs", TINY_NET, "--batch_size", "128", "--evaluate", "false", "--out", "cs"]
    resumed, reference = _stop_after_the_first_network(tmp_path, args, "cs", "forgetting_000_")
    a, b = (torch.load(d / "digits_forgetting_ipc2.pt", weights_only=True) for d in (resumed, reference))
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])


@pytest.mark.slow
def test_coreset_stops_on_sigterm(tmp_path: Path) -> None:
    interrupt(tmp_path, signal.SIGTERM, TRAINING_EPOCH, 2, "coreset", "--method", "random", "--dataset", "digits",
              "--ipc", "1", "--out", "cs", "--eval_num_models", "1", "--eval_epochs", "3",
              "--eval_arch_kwargs", TINY_NET, command="coreset")


@pytest.mark.slow
def test_demo_stops_on_sigterm(tmp_path: Path) -> None:
    interrupt(tmp_path, signal.SIGTERM, UPDATE, 2, "demo", "--run_config", "demo/digits_dsa_ipc1", "--steps", "3",
              "--num_models", "1", "--epochs", "1", "--out", "demo", command="demo")


@pytest.mark.slow
def test_gradn_curve_stops_on_sigusr1(tmp_path: Path) -> None:
    interrupt(tmp_path, signal.SIGUSR1, UPDATE, 2, "gradn-curve", "--steps", "3", "--every", "1",
              "--num_networks", "1", "--out", "figures/gradn_curve", "--workdir", "runs/gradn_curve",
              command="gradn-curve")


@pytest.mark.slow
def test_reproduce_stops_and_keeps_the_finished_cells(tmp_path: Path) -> None:
    args = ["reproduce", "--grid", "tm-digits", "--max_steps", "2", "--num_models", "1", "--epochs", "1",
            "--only", "random_digits_ipc1", "mtt_digits_ipc1_base", "--out", "results"]
    # the Random cell's one evaluation epoch is call 1; call 3 is inside the MTT cell (its experts)
    interrupt(tmp_path, signal.SIGTERM, TRAINING_EPOCH, 3, *args, command="reproduce")
    assert [p.name for p in (tmp_path / "results" / "tm-digits").glob("*.json")] == ["random_digits_ipc1.json"]


@pytest.mark.slow
def test_compare_stops_on_sigterm(tmp_path: Path) -> None:
    interrupt(tmp_path, signal.SIGTERM, UPDATE, 2, "compare", "--cell", "demo/digits_dsa_ipc1", "--vary",
              "model.init_args.sdc_lambda=0,0.01", "--seeds", "2", "--num_models", "1", "--epochs", "1",
              "--gradn_networks", "0", "--test_size", "100", "--overrides", "[trainer.max_steps=3]",
              "--bootstrap", "100", "--out", "cmp", command="compare")


@pytest.mark.slow
def test_compare_stopped_in_a_runs_setup_keeps_the_finished_runs(tmp_path: Path) -> None:
    """SIGTERM while the second run sets up its data (before its first update): exit 143, the first run's result
    kept; the same command reads it back instead of computing it again."""
    args = ["compare", "--cell", "demo/digits_dsa_ipc1", "--vary", "model.init_args.sdc_lambda=0,0.01", "--seeds",
            "2", "--num_models", "1", "--epochs", "1", "--gradn_networks", "0", "--test_size", "100", "--overrides",
            "[trainer.max_steps=2]", "--bootstrap", "100", "--out", "cmp"]
    interrupt(tmp_path, signal.SIGTERM, "lightning_sdc.data.real:RealDataModule.setup", 2, *args, command="compare")
    (first,) = (tmp_path / "cmp" / "runs").glob("sdc_lambda=0_seed0_*.json")
    stamp = first.stat().st_mtime_ns
    assert not list((tmp_path / "cmp" / "runs").glob("sdc_lambda=0.01_*.json"))
    again = rerun(tmp_path, *args)
    assert f"[skip 1/4] model.init_args.sdc_lambda=0 seed 0: {first.name}" in again and "[run 2/4]" in again
    assert first.stat().st_mtime_ns == stamp and len(list((tmp_path / "cmp" / "runs").glob("*.json"))) == 4


# ------------------------------------------------------------------------------------------- fit, validate
def _fit_command(tmp: Path, model: dict, data: dict, steps: int, callbacks: list[dict] = (),
                 val_check_interval: int | None = None) -> list[str]:
    config = cli_config(model, data, tmp / "run", steps, list(callbacks), val_check_interval)
    return ["fit", "--config", str(write_config(config, tmp / "fit.yaml")), "--ckpt_path", "last"]


def test_ctrl_c_during_fit_writes_last_ckpt_and_the_same_command_continues(tmp_path: Path) -> None:
    park = {"class_path": "tests.reliability_helpers.ParkOnce",  # parks in update 2; its marker is start()'s
            "init_args": {"step": 1, "marker": str(tmp_path / "parked.run.log")}}
    command = _fit_command(tmp_path, dc_model(), real_data(), 3, [park])
    text = interrupt(tmp_path, signal.SIGINT, TRAINING_EPOCH, 0, *command, command="fit")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"SIGINT received; stopped after update 2; checkpoint {last} written; exit status 130" in text
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
    again = rerun(tmp_path, *command)
    assert f"resuming from {last}" in again
    assert (tmp_path / "run" / "synthetic" / "synset.pt").is_file()


@pytest.mark.slow
def test_sigterm_while_fit_trains_its_experts_resumes_the_partial_expert(tmp_path: Path) -> None:
    buffer = tmp_path / "buffer"
    data = expert_data(buffer, train_if_missing=True, train_num_experts=1, train_epochs=3)
    command = _fit_command(tmp_path, ftd_model(), data, 2)
    interrupt(tmp_path, signal.SIGTERM, TRAINING_EPOCH, 2, *command, command="fit")  # expert 0, epoch 2
    assert (buffer / "expert_0000.pt.partial").is_file() and not (buffer / "expert_0000.pt").exists()
    again = rerun(tmp_path, *command)
    assert (buffer / "expert_0000.pt").is_file() and not (buffer / "expert_0000.pt.partial").exists()
    assert (tmp_path / "run" / "synthetic" / "synset.pt").is_file(), again[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_stop_on_sigterm(tmp_path: Path, command: str) -> None:
    fit = _fit_command(tmp_path, dc_model(), real_data(), 1, val_check_interval=1)
    run(fit)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    interrupt(tmp_path, signal.SIGTERM, EVALUATION, 1, command, *fit[1:3], "--ckpt_path", str(last), command=command)
