"""Pre-emption: SIGTERM / SIGUSR1 during ``fit`` write a checkpoint of the last completed
update and exit non-zero; the same command line with ``--ckpt_path last`` continues to the set an uninterrupted run
makes, bit for bit. Real child processes (``python -m lightning_sdc fit``), tiny digits settings."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lightning_sdc.callbacks import Preempted, PreemptionCheckpoint
from lightning_sdc.cli import run
from lightning_sdc.data import RealDataModule
from lightning_sdc.methods import DC
from lightning_sdc.synthetic import SyntheticSet

from .reliability_helpers import (
    SMALL,
    cli,
    cli_config,
    dc_model,
    expert_data,
    finish,
    ftd_model,
    quiet_trainer,
    real_data,
    train_tiny_experts,
    wait_for,
    write_config,
)


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_experts(tmp_path_factory.mktemp("preemption_experts"))


def park(at: int, marker: Path, stage: str = "train") -> dict:
    return {"class_path": "tests.reliability_helpers.ParkOnce",
            "init_args": {"step": at, "marker": str(marker), "stage": stage}}


def signal_then_resume(tmp: Path, model: dict, data: dict, steps: int, at: int, signum: int,
                       stage: str = "train", val_check_interval: int | None = None) -> dict:
    """One uninterrupted run (in this process) against a run signalled at update ``at`` and restarted with the same
    command line (``--ckpt_path last`` from its first start). Returns the final checkpoint of the cut run."""
    straight, cut, marker = tmp / "straight", tmp / "cut", tmp / "parked"
    final = [{"class_path": "lightning_sdc.callbacks.PreemptionCheckpoint",  # replaces the CLI's default
              "init_args": {"every_n_minutes": None, "every_n_steps": steps}}]  # a final checkpoint to compare
    straight_cfg = write_config(cli_config(model, data, straight, steps, final, val_check_interval),
                                tmp / "straight.yaml")
    cut_cfg = write_config(cli_config(model, data, cut, steps, [*final, park(at, marker, stage)], val_check_interval),
                           tmp / "cut.yaml")
    first_log, second_log = tmp / "first.log", tmp / "second.log"
    command = ("--ckpt_path", "last")  # from the first start: a requeued job repeats its command line
    first = cli(cut_cfg, *command, log=first_log)
    try:
        run(["fit", "--config", str(straight_cfg)])
        wait_for(marker, first, first_log)
        os.kill(first.pid, signum)
        rc = first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    text = first_log.read_text(errors="replace")
    assert rc == 128 + signum, f"exit status {rc}:\n{text[-3000:]}"
    name = signal.Signals(signum).name
    done = at + 1 if stage == "train" else at  # the update under way finishes; an evaluation is abandoned
    last = cut / "checkpoints" / "last.ckpt"
    assert f"{name} received; stopped after update {done}; checkpoint {last} written" in text
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == done
    assert not (cut / "synthetic" / "synset.pt").exists()  # no final set from a cut run
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no temporary left

    second = cli(cut_cfg, *command, log=second_log)
    finish(second, second_log)
    assert f"resuming from {last}" in second_log.read_text()
    a = SyntheticSet.load(straight / "synthetic" / "synset.pt")
    b = SyntheticSet.load(cut / "synthetic" / "synset.pt")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert (a.syn_lr is None and b.syn_lr is None) or torch.equal(a.syn_lr, b.syn_lr)
    assert not torch.equal(b.images, saved["state_dict"]["synset.images"])  # the resumed updates did change it
    fa = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    fb = torch.load(last, map_location="cpu", weights_only=True)
    for key, value in fa["state_dict"].items():
        assert torch.equal(value, fb["state_dict"][key]), key
    return fb


@pytest.mark.slow
def test_sigterm_mid_update_gm_checkpoints_exits_143_and_resumes_bit_exactly(tmp_path: Path) -> None:
    """DC (3 updates per network): SIGTERM in the middle of update 4; update 4 completes, is saved, exit 143."""
    final = signal_then_resume(tmp_path, dc_model(), real_data(), steps=7, at=4, signum=signal.SIGTERM)
    assert final["global_step"] == 7


@pytest.mark.slow
def test_sigusr1_during_evaluation_gm_stops_the_evaluation_and_resumes_bit_exactly(tmp_path: Path) -> None:
    """SIGUSR1 while the evaluation networks of update 2 train: no waiting for them; the checkpoint holds 2 updates."""
    model = dc_model(eval_epochs=200)
    signal_then_resume(tmp_path, model, real_data(), steps=4, at=2, signum=signal.SIGUSR1, stage="validation",
                       val_check_interval=2)


@pytest.mark.slow
def test_sigterm_tm_with_ema_resumes_bit_exactly(tmp_path: Path, experts: Path) -> None:
    """FTD (EMA of the images, learned lr): SIGTERM at update 2 of 5."""
    final = signal_then_resume(tmp_path, ftd_model(), expert_data(experts), steps=5, at=2, signum=signal.SIGTERM)
    assert not torch.equal(final["state_dict"]["ema_images"], final["state_dict"]["synset.images"])


# ------------------------------------------------------------------------------------------ in-process behaviour
def gm(**kw) -> DC:
    return DC(**{"dataset": "digits", "ipc": 1, "outer_loop": 2, "inner_loop": 1, "batch_real": 16,
                 "arch_kwargs": SMALL, "seed": 1, **kw})


def digits() -> RealDataModule:
    return RealDataModule("digits", download=False)


class SignalAt(pl.Callback):
    """Send ``signum`` to this process at the start of update ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_signal_in_process_raises_preempted_with_status_and_restores_handlers(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    cb = PreemptionCheckpoint(every_n_minutes=None, dirpath=str(tmp_path))
    trainer = quiet_trainer(6, [cb, SignalAt(2, signal.SIGUSR1)], enable_checkpointing=True,
                            default_root_dir=tmp_path)
    with pytest.raises(Preempted) as err:
        trainer.fit(gm(), digits())
    assert err.value.code == 128 + signal.SIGUSR1 and err.value.step == 3 and err.value.path == tmp_path / "last.ckpt"
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 3
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers put back


def test_signal_with_checkpointing_disabled_still_exits_non_zero(tmp_path: Path, capsys) -> None:
    cb = PreemptionCheckpoint(every_n_minutes=None, dirpath=str(tmp_path), resume="Run the same command to continue.")
    with pytest.raises(Preempted) as err:
        quiet_trainer(4, [cb, SignalAt(1, signal.SIGTERM)], default_root_dir=tmp_path / "root").fit(gm(), digits())
    assert err.value.code == 143 and err.value.path is None
    assert not any(p.name != "root" for p in tmp_path.iterdir())
    assert "exit status 143. Run the same command to continue." in capsys.readouterr().err  # a driver's own hint


def test_periodic_last_checkpoint_by_steps_and_by_time(tmp_path: Path, monkeypatch) -> None:
    by_steps = PreemptionCheckpoint(every_n_minutes=None, every_n_steps=2, dirpath=str(tmp_path / "steps"))
    quiet_trainer(5, [by_steps], enable_checkpointing=True, default_root_dir=tmp_path).fit(gm(), digits())
    assert by_steps.saves == 3  # after updates 2 and 4, and the final state (5)
    assert torch.load(tmp_path / "steps" / "last.ckpt", weights_only=True)["global_step"] == 5

    clock = iter(range(0, 10_000, 40))  # 40 s per call of time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    by_time = PreemptionCheckpoint(every_n_minutes=1.0, dirpath=str(tmp_path / "time"))
    quiet_trainer(5, [by_time], enable_checkpointing=True, default_root_dir=tmp_path).fit(gm(), digits())
    monkeypatch.undo()
    assert 2 <= by_time.saves < 5  # every other update or so (a minute = 1.5 updates of this clock), and the end
    assert stat.S_IMODE((tmp_path / "time" / "last.ckpt").stat().st_mode) & 0o044  # an ordinary, readable file


@pytest.mark.parametrize("kw,match", [({"every_n_minutes": 0}, "every_n_minutes"),
                                      ({"every_n_steps": 0}, "every_n_steps"),
                                      ({"signals": ["SIGKILL"]}, "SIGKILL")])
def test_bad_arguments_name_themselves(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        PreemptionCheckpoint(**kw)


def test_slurm_requeue_signal_requeues_the_job(tmp_path: Path, monkeypatch) -> None:
    """Under SLURM with auto-requeue, SIGUSR1 saves at the end of the update and runs ``scontrol requeue <job>``."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    record = tmp_path / "scontrol.args"
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" > {record}\n")
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "distil",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    cb = PreemptionCheckpoint(every_n_minutes=None, dirpath=str(tmp_path / "ck"))
    trainer = quiet_trainer(5, [cb, SignalAt(1, signal.SIGUSR1)], enable_checkpointing=True,
                            plugins=[SLURMEnvironment(auto_requeue=True)], default_root_dir=tmp_path)
    with pytest.raises(Preempted) as err:
        trainer.fit(gm(), digits())
    assert err.value.requeued and record.read_text().split() == ["requeue", "4242"]
    assert not list((tmp_path).glob("hpc_ckpt_*.ckpt"))  # not Lightning's mid-update checkpoint
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["global_step"] == 2


class FailingEvaluation(pl.Callback):
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        raise RuntimeError("out of memory (injected)")


def test_a_failed_evaluation_keeps_the_updates_before_it(tmp_path: Path, capsys) -> None:
    """An evaluation that fails after update 2 (e.g. out of memory) leaves last.ckpt at update 2."""
    cb = PreemptionCheckpoint(every_n_minutes=None, dirpath=str(tmp_path))
    trainer = quiet_trainer(6, [cb, FailingEvaluation()], enable_checkpointing=True, limit_val_batches=1,
                            val_check_interval=2, default_root_dir=tmp_path)
    with pytest.raises(RuntimeError, match="injected"):
        trainer.fit(gm(), digits())
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 2
    assert "the evaluation after update 2 failed (RuntimeError)" in capsys.readouterr().err


class SignalOnRank(SignalAt):
    """``SignalAt`` on one rank only: the other ranks must stop at the same update."""

    def __init__(self, step: int, signum: int, rank: int) -> None:
        super().__init__(step, signum)
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_signal_on_one_rank_stops_every_rank_after_the_same_update(tmp_path: Path) -> None:
    """SIGUSR1 reaches rank 1 only (during update 1): both ranks agree, rank 0 writes update 2, both exit 138."""
    from tests.gm_helpers import trainer as gm_trainer

    cb = PreemptionCheckpoint(every_n_minutes=None, dirpath=str(tmp_path / "ck"))
    tr = gm_trainer(6, strategy="ddp_spawn", devices=2, callbacks=[cb, SignalOnRank(1, signal.SIGUSR1, rank=1)],
                    enable_checkpointing=True, default_root_dir=str(tmp_path))
    with pytest.raises(Exception, match="138"):  # the spawned ranks exited with 128 + SIGUSR1
        tr.fit(gm(eval_num_models=1, eval_epochs=1), digits())
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["global_step"] == 2
