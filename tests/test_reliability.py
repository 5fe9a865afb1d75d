"""Reliability: exact resume after SIGKILL, atomic files, early and clear errors, divergence, determinism.

Fault injection on the CPU with tiny settings (digits 1×8×8, ConvNet width 8–16, depth 2). The SIGKILL tests run
the real command line (``python -m lightning_sdc fit``) in child processes; the bad-input table lives in
``reliability_helpers.CASES`` so that ``python -m tests.reliability_helpers OUT.md`` can print every message.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_sdc.callbacks import SyntheticSetExporter
from lightning_sdc.cli import run
from lightning_sdc.data import RealDataModule
from lightning_sdc.evaluation import EvalResult
from lightning_sdc.evaluation.tables import write_results
from lightning_sdc.experts import ExpertTrajectoryDataModule
from lightning_sdc.experts.buffer import write_manifest
from lightning_sdc.io import safe_torch_load
from lightning_sdc.methods import DATM, DC, DSA, FTD, MTT
from lightning_sdc.methods.base import AtomicCheckpointIO, DivergenceError
from lightning_sdc.synthetic import SyntheticSet

from .reliability_helpers import (
    CASES,
    SMALL,
    TM_ARCH,
    BadInput,
    Ctx,
    NoCompute,
    cli,
    dc_model,
    expert_data,
    finish,
    fit_without_compute,
    ftd_model,
    message_of,
    messages_markdown,
    quiet_trainer,
    ramp,
    real_data,
    run_config,
    train_tiny_experts,
    truncate,
    wait_for,
    write_config,
    write_half_then_fail,
)


@pytest.fixture(scope="module")
def experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 experts × 4 epochs of ConvNet-W8-D2 on digits."""
    return train_tiny_experts(tmp_path_factory.mktemp("reliability_experts"))


def gm_model(**kw) -> DC:
    args = {"dataset": "digits", "ipc": 1, "outer_loop": 3, "inner_loop": 1, "batch_real": 16, "arch_kwargs": SMALL,
            "seed": 1, "sdc_lambda": 0.01, **kw}
    return DC(**args)


def tm_model(cls, **kw):
    args = {"dataset": "digits", "ipc": 1, "arch_kwargs": TM_ARCH, "syn_steps": 3, "lr_img": 10.0, "lr_lr": 1e-4,
            "syn_lr": 0.01, "seed": 1, **kw}
    return cls(**args)


def tm_data(buffer: Path) -> ExpertTrajectoryDataModule:
    return ExpertTrajectoryDataModule("digits", str(buffer), arch_kwargs=TM_ARCH, expert_epochs=1, max_start_epoch=3,
                                      train_if_missing=False, download=False)


def every_step_checkpoint(dirpath: Path) -> ModelCheckpoint:
    return ModelCheckpoint(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=1)


def exporter(dirpath: Path) -> SyntheticSetExporter:
    return SyntheticSetExporter(dirpath=str(dirpath), formats=["lightning_sdc"], png=False)


# ================================================================================ 1. exact resume after SIGKILL
def kill_and_resume(tmp: Path, model: dict, data: dict, steps: int, kill_at: int) -> dict:
    """Run ``steps`` updates straight; run them again but SIGKILL the process at update ``kill_at`` (its
    ``last.ckpt`` holds ``kill_at`` updates), resume with ``--ckpt_path``; the two final sets must be equal bit for
    bit, and so must every tensor of the two final checkpoints (optimizer momentum, FTD's EMA, the GM network)."""
    straight_dir, killed_dir, marker = tmp / "straight", tmp / "killed", tmp / "parked"
    extra = [ramp(steps)]  # the ASDC λ ramp: its value must continue where the killed run stopped
    hang = {"class_path": "tests.reliability_helpers.HangAtStep",
            "init_args": {"step": kill_at, "marker": str(marker)}}
    straight_cfg = write_config(run_config(model, data, straight_dir, steps, extra), tmp / "straight.yaml")
    killed_cfg = write_config(run_config(model, data, killed_dir, steps, [*extra, hang]), tmp / "killed.yaml")
    resume_cfg = write_config(run_config(model, data, killed_dir, steps, extra), tmp / "resume.yaml")

    logs = {name: tmp / f"{name}.log" for name in ("killed", "resumed")}
    killed = cli(killed_cfg, log=logs["killed"])
    try:
        run(["fit", "--config", str(straight_cfg)])  # the uninterrupted run, in this process meanwhile
        wait_for(marker, killed, logs["killed"])
        last = killed_dir / "ckpt" / "last.ckpt"
        at_kill = torch.load(last, map_location="cpu", weights_only=True)
        assert at_kill["global_step"] == kill_at
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(timeout=60) == -signal.SIGKILL
    finally:
        if killed.poll() is None:
            killed.kill()
    assert not (killed_dir / "out" / "synset.pt").exists()  # killed before the end: nothing exported

    resumed = cli(resume_cfg, "--ckpt_path", str(last), log=logs["resumed"])
    finish(resumed, logs["resumed"])
    assert "Restoring states from the checkpoint path" in logs["resumed"].read_text()

    a = SyntheticSet.load(straight_dir / "out" / "synset.pt")
    b = SyntheticSet.load(killed_dir / "out" / "synset.pt")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert (a.syn_lr is None and b.syn_lr is None) or torch.equal(a.syn_lr, b.syn_lr)
    assert not torch.equal(a.images, at_kill["state_dict"]["synset.images"])  # the resumed steps did change it

    fa = torch.load(straight_dir / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    fb = torch.load(last, map_location="cpu", weights_only=True)
    assert fa["global_step"] == fb["global_step"] == steps
    for key, value in fa["state_dict"].items():
        assert torch.equal(value, fb["state_dict"][key]), key
    for sa, sb in zip(fa["optimizer_states"][0]["state"].values(), fb["optimizer_states"][0]["state"].values(),
                      strict=True):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    return fa


def test_sigkill_mid_iteration_then_resume_equals_uninterrupted_run_gm(tmp_path: Path) -> None:
    """DC (3 updates per network): killed at update 4 (iteration 1, after its first update), resumed to 7."""
    final = kill_and_resume(tmp_path, dc_model(), real_data(), steps=7, kill_at=4)
    assert final["gm_network"]["iteration"] == 2


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run_ftd_with_ema(tmp_path: Path, experts: Path) -> None:
    """FTD: the EMA of the images, the learned lr and the expert-draw offset survive a SIGKILL."""
    final = kill_and_resume(tmp_path, ftd_model(), expert_data(experts), steps=5, kill_at=2)
    assert not torch.equal(final["state_dict"]["ema_images"], final["state_dict"]["synset.images"])


# ================================================================================ 2. atomic files
def test_trainer_uses_atomic_checkpoints_and_a_failed_save_keeps_the_last_good_one(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    ckpt_dir = tmp_path / "ckpt"
    first = quiet_trainer(2, [every_step_checkpoint(ckpt_dir)], enable_checkpointing=True)
    first.fit(gm_model(), RealDataModule("digits", download=False))
    assert type(first.strategy.checkpoint_io) is AtomicCheckpointIO
    last = ckpt_dir / "last.ckpt"
    good = safe_torch_load(last)
    assert good["global_step"] == 2

    # resume, and let the disk fill up in the middle of writing the step-3 checkpoint
    monkeypatch.setattr(torch, "save", write_half_then_fail)
    second = quiet_trainer(4, [every_step_checkpoint(ckpt_dir)], enable_checkpointing=True)
    with pytest.raises(OSError, match="No space left"):
        second.fit(gm_model(), RealDataModule("digits", download=False), ckpt_path=str(last))
    monkeypatch.undo()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # no torn file, no temporary left
    kept = safe_torch_load(last)
    assert kept["global_step"] == 2
    assert torch.equal(kept["state_dict"]["synset.images"], good["state_dict"]["synset.images"])


def _write_slowly_then_park(path: str, marker: str) -> None:
    """Child process: start an atomic checkpoint write, write half the bytes, then wait to be SIGKILLed."""

    def half_then_sleep(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])  # atomic_torch_save passes a file object
        f.flush()
        Path(marker).write_text("half written")
        time.sleep(600)

    real_save = torch.save
    torch.save = half_then_sleep
    AtomicCheckpointIO().save_checkpoint({"global_step": 2, "w": torch.full((4096,), 2.0)}, path)


def test_sigkill_in_the_middle_of_a_checkpoint_write_leaves_the_previous_file(tmp_path: Path) -> None:
    path, marker = tmp_path / "last.ckpt", tmp_path / "half"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.full((4096,), 1.0)}, path)
    child = multiprocessing.get_context("fork").Process(target=_write_slowly_then_park, args=(str(path), str(marker)))
    child.start()
    deadline = time.monotonic() + 60
    while not marker.exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), "the child never reached the middle of the write"
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    kept = AtomicCheckpointIO().load_checkpoint(path)
    assert kept["global_step"] == 1 and torch.equal(kept["w"], torch.full((4096,), 1.0))
    torn = [p for p in tmp_path.iterdir() if p.name not in ("last.ckpt", "half")]
    assert len(torn) == 1 and torn[0].name.startswith(".last.ckpt.")  # the half-written temporary, never renamed


def _set(version: int) -> SyntheticSet:
    s = SyntheticSet.blank(num_classes=3, ipc=2, image_shape=(1, 4, 4), dataset="custom", syn_lr=0.01)
    with torch.no_grad():
        s.images.fill_(float(version))
    return s


def _checkpoint(d: Path, version: int) -> list[Path]:
    AtomicCheckpointIO().save_checkpoint({"global_step": version}, d / "last.ckpt")
    return [d / "last.ckpt"]


WRITERS = {
    "synthetic set": lambda d, v: [_set(v).save(d / "synset.pt", png=True), d / "synset.png"],
    "tm export": lambda d, v: _set(v).export_tm(d),
    "results tables": lambda d, v: write_results([EvalResult("ConvNet", [0.5 + v / 10, 0.6], 1, 0.01)], d / "table"),
    "expert manifest": lambda d, v: [write_manifest(d, {"dataset": "digits", "epochs": v}, [], requested=v)],
    "checkpoint": _checkpoint,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_crash_after_writing_before_renaming_keeps_every_previous_file(writer: str, tmp_path: Path,
                                                                          monkeypatch) -> None:
    """The failure comes after the new bytes are written (at the fsync before the rename): the old files stay."""
    paths = WRITERS[writer](tmp_path, 1)
    before = {p.name: p.read_bytes() for p in paths}

    def no_fsync(fd):
        raise OSError(5, "I/O error (injected)")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError, match="injected"):
        WRITERS[writer](tmp_path, 2)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no temporaries left
    assert WRITERS[writer](tmp_path, 2) and {p.name: p.read_bytes() for p in paths} != before


def test_atomic_files_get_ordinary_permissions(tmp_path: Path) -> None:
    """``mkstemp`` makes 0600 files; a synthetic set or checkpoint must be readable like any other file."""
    old = os.umask(0o022)
    try:
        for p in WRITERS["synthetic set"](tmp_path, 1) + WRITERS["checkpoint"](tmp_path, 1):
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    finally:
        os.umask(old)


# ================================================================================ 3. truncated files name themselves
def test_truncated_checkpoint_names_itself_before_any_step(tmp_path: Path) -> None:
    quiet_trainer(1, [every_step_checkpoint(tmp_path)], enable_checkpointing=True).fit(
        gm_model(), RealDataModule("digits", download=False))
    last = truncate(tmp_path / "last.ckpt")
    with pytest.raises(ValueError, match=rf"cannot read checkpoint {last}: corrupt or truncated"):
        fit_without_compute(gm_model(), RealDataModule("digits", download=False), ckpt_path=str(last))


def test_truncated_expert_files_name_themselves(tmp_path: Path, experts: Path) -> None:
    buffer = tmp_path / "buffer"
    shutil.copytree(experts, buffer)
    truncate(buffer / "expert_0001.pt")  # read on first draw of expert 1: the draw that needs it fails
    with pytest.raises(ValueError, match=r"expert_0001\.pt: corrupt or truncated"):
        quiet_trainer(6).fit(tm_model(MTT), datamodule=tm_data(buffer))
    truncate(buffer / "expert_0000.pt")  # opened when the DataModule is set up: fails before any step
    with pytest.raises(ValueError, match=r"expert_0000\.pt: corrupt or truncated"):
        fit_without_compute(tm_model(MTT), tm_data(buffer))


def test_truncated_export_names_itself_in_evaluate(tmp_path: Path) -> None:
    path = truncate(_set(1).save(tmp_path / "synset.pt"))
    with pytest.raises(ValueError, match=rf"cannot read synthetic set {path}: corrupt or truncated"):
        run(["evaluate", str(path), "--epochs", "0", "--num_models", "1"])
    images = truncate(_set(1).export_tm(tmp_path)[0])
    with pytest.raises(ValueError, match=r"images_best\.pt: corrupt or truncated"):
        safe_torch_load(images, what="exported images")


# ================================================================================ 4. bad inputs, before any compute
@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory, experts: Path) -> Ctx:
    return Ctx(tmp=tmp_path_factory.mktemp("bad_inputs"), buffer=experts)


def test_the_table_is_large_and_covers_every_stage() -> None:
    assert len(CASES) >= 15 and len({c.id for c in CASES}) == len(CASES)
    assert {c.when for c in CASES} == {"construct", "setup", "load"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_early_naming_key_value_and_allowed(case: BadInput, ctx: Ctx) -> None:
    with pytest.raises(case.error) as err:
        case.trigger(ctx)
    msg = message_of(err.value)
    missing = [s for s in case.names if s not in msg]
    assert not missing, f"{case.description}: message lacks {missing}: {msg}"


def test_message_table_renders_one_row_per_input() -> None:
    rows = [(CASES[0], "ValueError", "ipc must be an integer > 0, got 0"),
            (CASES[-1], "ValueError", "a | b\n  second line")]
    table = messages_markdown(rows, [("cut file", "ValueError", "cannot read x")])
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 3  # header + rows
    assert "a \\| b ⏎ second line" in table and "`DC(ipc=0)`" in table
    assert "**3 inputs tried, 2 clean** (the expected error, naming what it must), **1 left**" in table


# ================================================================================ 5. divergence
class NaNGradientAt(pl.Callback):
    """From update ``step`` on, every gradient reaching the synthetic images is NaN (finite loss)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            pl_module.synset.images.register_hook(lambda g: torch.full_like(g, math.nan))


class NaNPixelAt(NaNGradientAt):
    """At update ``step`` one synthetic pixel becomes NaN (the references' users' NaN images)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.synset.images[3, 0, 2, 2] = math.nan


@pytest.mark.parametrize("inject,what", [(NaNGradientAt, "gradient of the images"), (NaNPixelAt, "loss")],
                         ids=["grad", "pixel"])
def test_gm_divergence_stops_naming_step_and_checkpoint_and_writes_nothing_non_finite(inject, what, tmp_path) -> None:
    model = gm_model()
    ckpt_dir, out = tmp_path / "ckpt", tmp_path / "out"
    trainer = quiet_trainer(6, [inject(3), every_step_checkpoint(ckpt_dir), exporter(out)], enable_checkpointing=True)
    with pytest.raises(DivergenceError) as err:
        trainer.fit(model, RealDataModule("digits", download=False))
    last = ckpt_dir / "last.ckpt"
    assert f"non-finite {what} at step 3 of DC" in str(err.value)
    assert f"Last good checkpoint: {last}" in str(err.value)
    saved = safe_torch_load(last)
    assert saved["global_step"] == 3 and torch.isfinite(saved["state_dict"]["synset.images"]).all()
    assert not out.exists() or not any(out.iterdir())  # the exporter never wrote the set
    if what.startswith("gradient"):  # the update was refused: the images are those of the last checkpoint
        assert torch.equal(model.synset.images.detach(), saved["state_dict"]["synset.images"])


class NaNTargetAt(NaNGradientAt):
    """At update ``step`` the expert's target parameters are NaN (a corrupt snapshot): a non-finite matching loss."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["target_params"] = torch.full_like(batch["target_params"], math.nan)


class ExplodingLrAt(NaNGradientAt):
    """At update ``step`` the learned student lr explodes (MTT users' diverging ``syn_lr``)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.synset.syn_lr.fill_(1e38)


@pytest.mark.parametrize("inject", [NaNTargetAt, ExplodingLrAt], ids=["nan-target", "exploding-lr"])
def test_tm_divergence_stops_mtt_naming_the_step(inject, experts: Path) -> None:
    model = tm_model(MTT)
    with pytest.raises(DivergenceError, match="non-finite trajectory-matching loss at step 1 of MTT.*none saved"):
        quiet_trainer(4, [inject(1)]).fit(model, datamodule=tm_data(experts))
    assert model.global_step == 1


class Snapshots(pl.Callback):
    def __init__(self) -> None:
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before.append(pl_module.synset.images.detach().clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(pl_module.synset.images.detach().clone())


def test_datm_skips_a_non_finite_update_and_continues(experts: Path) -> None:
    """DATM steps only when ``loss <= threshold`` (reference): a NaN loss is a skipped iteration, not a crash."""
    model, snaps = tm_model(DATM, threshold=1e6), Snapshots()  # the gate only ever sees the injected NaN
    with pytest.warns(UserWarning, match="non-finite matching loss at step 1; update skipped"):
        quiet_trainer(3, [NaNTargetAt(1), snaps]).fit(model, datamodule=tm_data(experts))
    assert model.global_step == 3 and model.skipped_updates == 1
    changed = [not torch.equal(b, a) for b, a in zip(snaps.before, snaps.after, strict=True)]
    assert changed == [True, False, True]
    assert model.synset.is_finite()
    with pytest.raises(DivergenceError, match="at step 1 of DATM"):  # no gate: the run stops as any other
        quiet_trainer(3, [NaNTargetAt(1)]).fit(tm_model(DATM, threshold=None), datamodule=tm_data(experts))


# ================================================================================ 6. determinism
def test_same_seed_same_synthetic_set_gm_whatever_the_global_rng() -> None:
    """DSA draws real batches, Siamese augmentations and networks: all from generators keyed on the seed."""
    kw = {"ipc": 2, "outer_loop": 2, "seed": 3, "sdc_lambda": 0.05}
    runs = []
    for global_seed in (0, 12345):
        torch.manual_seed(global_seed)  # library code must not read the global RNG
        model = DSA("digits", **{**kw, "inner_loop": 1, "batch_real": 16, "arch_kwargs": SMALL})
        quiet_trainer(4).fit(model, RealDataModule("digits", download=False))
        runs.append(model.synset.images.detach().clone())
    assert torch.equal(runs[0], runs[1])
    other = DSA("digits", **{**kw, "seed": 4, "inner_loop": 1, "batch_real": 16, "arch_kwargs": SMALL})
    quiet_trainer(4).fit(other, RealDataModule("digits", download=False))
    assert not torch.equal(runs[0], other.synset.images.detach())


def test_same_seed_same_synthetic_set_tm(experts: Path) -> None:
    """FTD: images, EMA and learned lr identical across two runs; another seed gives another set."""
    states = []
    for seed in (1, 1, 2):
        torch.manual_seed(100 + len(states))
        model = tm_model(FTD, seed=seed, ema_decay=0.9, sdc_lambda=0.01)
        quiet_trainer(3).fit(model, datamodule=ExpertTrajectoryDataModule(
            "digits", str(experts), arch_kwargs=TM_ARCH, expert_epochs=1, max_start_epoch=3, train_if_missing=False,
            download=False, seed=seed))
        states.append((model.synset.images.detach().clone(), model.ema_images.clone(), model.synset.syn_lr.detach()))
    for a, b in zip(states[0], states[1], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(states[0][0], states[2][0])


def test_no_compute_guard_has_teeth() -> None:
    """The guard of the setup-time cases fails when a step does start (so those cases prove 'before compute')."""
    with pytest.raises(AssertionError, match="training step started"):
        quiet_trainer(1, [NoCompute()]).fit(gm_model(), RealDataModule("digits", download=False))
