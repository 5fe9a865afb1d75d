"""Fault-injection helpers for ``test_reliability.py`` and the bad-input message table.

* callbacks a test config can name by class path (``tests.reliability_helpers.HangAtStep``): the child process
  of the SIGKILL test parks itself at a known step so the parent kills it deterministically;
* tiny CLI configs (digits, ConvNet width 16/8 depth 2) written as YAML for ``python -m lightning_sdc fit``;
* :data:`CASES`: every bad input the reliability tests try, each with the exception type and the substrings
  (key, bad value, allowed set/range) its message must contain. ``python -m tests.reliability_helpers OUT.md``
  runs them all and writes the input → message table.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SMALL = {"width": 16, "depth": 2}
TM_ARCH = {"width": 8, "depth": 2}


# ------------------------------------------------------------------------------------------- callbacks
class HangAtStep(pl.Callback):
    """At the start of update ``step`` (the checkpoint of ``step`` updates is on disk), write ``marker`` and sleep.

    The parent process waits for ``marker`` and kills this one with SIGKILL: the kill lands at a known step, in
    the middle of the epoch loop, not at a polite stop.
    """

    def __init__(self, step: int, marker: str, seconds: float = 600.0) -> None:
        self.step, self.marker, self.seconds = step, marker, seconds

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(self.step))
            time.sleep(self.seconds)


class ParkOnce(pl.Callback):
    """Park the run once, at update ``step`` (``stage="train"``: at the start of the update, so a signal lands in
    the middle of it) or in the evaluation after update ``step`` (``stage="validation"``), until a signal arrives.

    The first time it parks it writes ``marker``; a run that finds ``marker`` (the resumed run, started with the
    same command line and so the same callbacks) does not park. The wait is in short sleeps that return early
    once the process has received SIGTERM/SIGUSR1, so the signal does not have to interrupt a long ``sleep``.
    """

    def __init__(self, step: int, marker: str, stage: str = "train", seconds: float = 300.0) -> None:
        self.step, self.marker, self.stage, self.seconds = step, marker, stage, seconds

    def _park(self, trainer: pl.Trainer) -> None:
        from lightning_sdc.callbacks import PreemptionCheckpoint

        if trainer.global_step != self.step or Path(self.marker).exists():
            return
        Path(self.marker).write_text(str(self.step))
        own = [cb for cb in trainer.callbacks if isinstance(cb, PreemptionCheckpoint)]
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if trainer.received_sigterm or any(cb.received is not None for cb in own):
                return
            time.sleep(0.02)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.stage == "train":
            self._park(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stage == "validation":
            self._park(trainer)


class NoCompute(pl.Callback):
    """Fails the test if a training step starts: errors must come before any compute."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        raise AssertionError(f"a training step started (global_step={trainer.global_step}) before the error")


def quiet_trainer(steps: int, callbacks: list[pl.Callback] | tuple = (), **kw: Any) -> pl.Trainer:
    """A CPU trainer without logger, progress bar, validation or (unless given) checkpoints."""
    kw.setdefault("enable_checkpointing", False)
    kw.setdefault("limit_val_batches", 0)
    return pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, max_epochs=-1,
                      check_val_every_n_epoch=None, callbacks=list(callbacks), **kw)


def fit_without_compute(model: pl.LightningModule, datamodule: pl.LightningDataModule,
                        ckpt_path: str | None = None) -> None:
    """``Trainer.fit`` that must raise before the first training step (setup-time validation)."""
    quiet_trainer(1, [NoCompute()]).fit(model, datamodule=datamodule, ckpt_path=ckpt_path)


# ------------------------------------------------------------------------------------------- CLI configs
def _callback(class_path: str, **init_args: Any) -> dict[str, Any]:
    return {"class_path": class_path, "init_args": init_args}


def run_config(model: dict[str, Any], data: dict[str, Any], run_dir: Path, steps: int,
               extra_callbacks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A ``fit`` config: ``last.ckpt`` after every update, the final set exported to ``run_dir/out/synset.pt``."""
    callbacks = [
        _callback("pytorch_lightning.callbacks.ModelCheckpoint", dirpath=str(run_dir / "ckpt"), save_last=True,
                  every_n_train_steps=1, save_top_k=0),
        _callback("lightning_sdc.callbacks.SyntheticSetExporter", dirpath=str(run_dir / "out"),
                  formats=["lightning_sdc"], png=False),
        *(extra_callbacks or []),
    ]
    return {
        "seed_everything": model["init_args"].get("seed", 0),  # the method's seed follows it
        "model": model,
        "data": data,
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": steps,
                    "logger": False, "limit_val_batches": 0, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(run_dir), "callbacks": callbacks},
    }


def cli_config(model: dict[str, Any], data: dict[str, Any], root: Path, steps: int,
               extra_callbacks: list[dict[str, Any]] | None = None, val_check_interval: int | None = None,
               logger: bool = False) -> dict[str, Any]:
    """A ``fit`` config with the CLI's own run layout (no checkpoint callback of its own): ``root`` is the
    ``default_root_dir``; the CLI adds the exporter and ``PreemptionCheckpoint`` (``last.ckpt`` under
    ``root/checkpoints`` without a logger). Evaluation every ``val_check_interval`` updates, or none."""
    trainer = {"accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": steps, "logger": logger,
               "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(root),
               "callbacks": list(extra_callbacks or [])}
    if val_check_interval is None:
        trainer["limit_val_batches"] = 0
    else:
        trainer["val_check_interval"] = val_check_interval
    return {"seed_everything": model["init_args"].get("seed", 0), "model": model, "data": data, "trainer": trainer}


def dc_model(**overrides: Any) -> dict[str, Any]:
    """DC on digits, IPC 1, a small ConvNet, 3 updates per network (so a kill can land mid-iteration)."""
    args = {"dataset": "digits", "ipc": 1, "sdc_lambda": 0.01, "batch_real": 16, "outer_loop": 3, "inner_loop": 1,
            "arch_kwargs": dict(SMALL), "eval_num_models": 1, "eval_epochs": 1, "seed": 5, **overrides}
    return {"class_path": "lightning_sdc.methods.DC", "init_args": args}


def real_data(dataset: str = "digits") -> dict[str, Any]:
    return {"class_path": "lightning_sdc.data.RealDataModule", "init_args": {"dataset": dataset, "download": False}}


def ftd_model(**overrides: Any) -> dict[str, Any]:
    """FTD on digits with an EMA (state that a resume must restore)."""
    args = {"dataset": "digits", "ipc": 1, "arch_kwargs": dict(TM_ARCH), "syn_steps": 3, "lr_img": 10.0,
            "lr_lr": 1e-4, "syn_lr": 0.01, "ema_decay": 0.9, "sdc_lambda": 0.01, "eval_num_models": 1,
            "eval_epochs": 1, "seed": 5, **overrides}
    return {"class_path": "lightning_sdc.methods.FTD", "init_args": args}


def expert_data(buffer_dir: Path, **overrides: Any) -> dict[str, Any]:
    args = {"dataset": "digits", "buffer_dir": str(buffer_dir), "arch_kwargs": dict(TM_ARCH), "expert_epochs": 1,
            "max_start_epoch": 3, "train_if_missing": False, "download": False, **overrides}
    return {"class_path": "lightning_sdc.experts.ExpertTrajectoryDataModule", "init_args": args}


def ramp(steps: int) -> dict[str, Any]:
    return _callback("lightning_sdc.callbacks.ASDCRamp", lambda_start=0.001, lambda_end=0.02, steps=steps)


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli(config: Path, *extra: str, log: Path) -> subprocess.Popen:
    """Start ``python -m lightning_sdc fit --config <config> …`` in the repository root (one torch thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    out = open(log, "wb")  # noqa: SIM115 - handed to the child, closed with it
    return subprocess.Popen([sys.executable, "-m", "lightning_sdc", "fit", "--config", str(config), *extra],
                            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    """Wait for a CLI run and fail with the tail of its log unless it exited 0."""
    rc = proc.wait(timeout=timeout)
    assert rc == 0, f"exit status {rc}:\n{log.read_text(errors='replace')[-3000:]}"


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    """Poll until ``path`` exists; fail early (with the log) if the process exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended (status {proc.returncode}) before {path.name}:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------- fault injection
def write_half_then_fail(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    """A ``torch.save`` stand-in that writes a torn half file and raises, like a full disk mid-write."""
    import io

    buf = io.BytesIO()
    _REAL_TORCH_SAVE(obj, buf)
    data = buf.getvalue()[: max(1, len(buf.getvalue()) // 2)]
    if isinstance(f, (str, os.PathLike)):
        Path(f).write_bytes(data)
    else:
        f.write(data)
    raise OSError(28, "No space left on device (injected)")


_REAL_TORCH_SAVE = torch.save


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def train_tiny_experts(out: Path, num_experts: int = 2, epochs: int = 4) -> Path:
    """Width-8 ConvNet experts on digits (plain SGD, batch 64): a few seconds on one core."""
    from lightning_sdc.data import load_dataset
    from lightning_sdc.experts import train_experts

    train_experts(load_dataset("digits"), arch="ConvNet", arch_kwargs=TM_ARCH, num_experts=num_experts,
                  epochs=epochs, out=str(out), seed=0, device="cpu", progress=False, batch_size=64, lr=0.02)
    return out


# ------------------------------------------------------------------------------------------- bad inputs
@dataclass
class Ctx:
    """What the bad-input cases need: a scratch directory and a tiny digits expert buffer (2 × 4 epochs)."""

    tmp: Path
    buffer: Path
    _cache: dict[str, Any] = field(default_factory=dict)

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


@dataclass(frozen=True)
class BadInput:
    """One bad input: ``trigger(ctx)`` must raise ``error`` whose message contains every string of ``names``.

    ``names`` are the key, the bad value and, where the message can state it, the allowed set or range.
    ``when`` says at which point the error is raised (``construct``, ``setup`` or ``load``) — all before compute.
    """

    id: str
    description: str
    trigger: Callable[[Ctx], Any]
    error: type[BaseException]
    names: tuple[str, ...]
    when: str = "construct"


def _methods() -> Any:
    from lightning_sdc import methods

    return methods


def _gm(**kw: Any) -> Any:
    args = {"dataset": "digits", "ipc": 1, "batch_real": 16, "arch_kwargs": dict(SMALL), **kw}
    return _methods().DC(**args)


def _tm(name: str, **kw: Any) -> Any:
    args = {"dataset": "digits", "ipc": 1, "arch_kwargs": dict(TM_ARCH), "syn_steps": 2, **kw}
    return getattr(_methods(), name)(**args)


def _expert_dm(ctx: Ctx, dataset: str = "digits", buffer: Path | None = None, **kw: Any) -> Any:
    from lightning_sdc.experts import ExpertTrajectoryDataModule

    args = {"arch_kwargs": dict(TM_ARCH), "expert_epochs": 1, "max_start_epoch": 3, "train_if_missing": False,
            "download": False, **kw}
    return ExpertTrajectoryDataModule(dataset, str(buffer or ctx.buffer), **args)


def _real_dm(dataset: str = "digits", **kw: Any) -> Any:
    from lightning_sdc.data import RealDataModule

    return RealDataModule(dataset, download=False, **kw)


def _tm_fit(ctx: Ctx, method_kw: dict[str, Any] | None = None, **dm_kw: Any) -> None:
    fit_without_compute(_tm("MTT", **(method_kw or {})), _expert_dm(ctx, **dm_kw))


def _other_ipc_checkpoint(ctx: Ctx) -> Path:
    """A checkpoint of a DC run with IPC 2 (one update)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def make() -> Path:
        d = ctx.tmp / "ipc2"
        ck = ModelCheckpoint(dirpath=d, save_last=True, save_top_k=0, every_n_train_steps=1)
        quiet_trainer(1, [ck], enable_checkpointing=True).fit(_gm(ipc=2, outer_loop=1, inner_loop=1), _real_dm())
        return d / "last.ckpt"

    return ctx.once("ipc2", make)


def _synset_file(ctx: Ctx, name: str, **kw: Any) -> Path:
    """A saved blank synthetic set (``SyntheticSet.blank(**kw)``) under ``ctx.tmp``."""
    from lightning_sdc.synthetic import SyntheticSet

    return SyntheticSet.blank(**kw).save(ctx.tmp / f"{name}.pt")


def _evaluate(synset: Any, spec: Any) -> Any:
    from lightning_sdc.evaluation import evaluate_synset

    return evaluate_synset(synset, spec, num_models=1, epochs=0, augment="none")


def _spec(ctx: Ctx, name: str) -> Any:
    from lightning_sdc.data import load_dataset

    return ctx.once(f"spec:{name}", lambda: load_dataset(name))


def _evaluate_cli(path: Path) -> Any:
    from lightning_sdc.cli import run

    return run(["evaluate", str(path), "--epochs", "0", "--num_models", "1"])


def _digits(zca: bool = False) -> Any:
    from lightning_sdc.data import load_dataset

    return load_dataset("digits", zca=zca)


def _blank(**kw: Any) -> Any:
    from lightning_sdc.synthetic import SyntheticSet

    return SyntheticSet.blank(**{"num_classes": 10, "ipc": 1, "image_shape": (1, 8, 8), "dataset": "digits", **kw})


def _cli_ipc0(ctx: Ctx) -> None:
    from lightning_sdc.cli import build_cli

    build_cli(["--config", str(REPO / "configs" / "trainer" / "cpu.yaml"),
               "--config", str(REPO / "configs" / "demo" / "digits_dc_ipc1.yaml"),
               "--trainer.logger=false", "--model.init_args.ipc=0"], run=False)


def _asdc(**kw: Any) -> Any:
    from lightning_sdc.callbacks import ASDCRamp

    return ASDCRamp(**kw)


# ------------------------------------------------------------------------------------------- CLI runs
DEMO_DC = ["--config", str(REPO / "configs" / "trainer" / "cpu.yaml"),
           "--config", str(REPO / "configs" / "demo" / "digits_dc_ipc1.yaml")]


def _tiny_fit_args(root: Path, *extra: str, steps: int = 1) -> list[str]:
    """``fit`` on the DC demo config at CPU-test size, no logger, in ``root``."""
    return ["fit", *DEMO_DC, f"--trainer.default_root_dir={root}", f"--trainer.max_steps={steps}",
            "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.limit_val_batches=0", "--model.init_args.arch_kwargs={width: 8, depth: 2}",
            "--model.init_args.batch_real=16", "--model.init_args.eval_num_models=1",
            "--model.init_args.eval_epochs=1", *extra]


def _cli(*args: str) -> Any:
    from lightning_sdc.cli import run

    return run(list(args))


def _cli_fit(ctx: Ctx, name: str, *extra: str) -> Any:
    return _cli(*_tiny_fit_args(ctx.tmp / name, *extra))


def _finished_run(ctx: Ctx) -> Path:
    """``<ctx.tmp>/finished``: a 1-update DC run of :func:`_tiny_fit_args`; its ``checkpoints/last.ckpt``."""

    def make() -> Path:
        _cli_fit(ctx, "finished")
        return ctx.tmp / "finished" / "checkpoints" / "last.ckpt"

    return ctx.once("finished", make)


def _resume(ctx: Ctx, *extra: str) -> Any:
    """Resume :func:`_finished_run` (same root, ``--ckpt_path last``) with ``extra`` settings."""
    _finished_run(ctx)
    return _cli_fit(ctx, "finished", "--ckpt_path=last", "--trainer.max_steps=2", *extra)


def _crafted_checkpoint(ctx: Ctx) -> Path:
    """The finished run's checkpoint with ``hyper_parameters._class_path`` naming a module beside it."""
    ckpt = torch.load(_finished_run(ctx), map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = "sdc_table_marker.Foo"
    d = ctx.tmp / "crafted"
    d.mkdir(exist_ok=True)
    (d / "sdc_table_marker.py").write_text("open(__file__ + '.IMPORTED', 'w').close()\nclass Foo: pass\n")
    torch.save(ckpt, d / "crafted.ckpt")
    return d / "crafted.ckpt"


def _second_live_run(ctx: Ctx) -> None:
    """Another live process holds the run directory's lock while ``fit`` starts there."""
    root = ctx.tmp / "busy"
    hold = ("import sys, time; from lightning_sdc.runs import lock_run_dir; lock_run_dir(sys.argv[1]); "
            "print('held', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", hold, str(root / ".lightning_sdc.lock")], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        _cli(*_tiny_fit_args(root))
    finally:
        child.kill()
        child.wait(30)


def _empty_yaml(ctx: Ctx) -> Any:
    path = ctx.tmp / "empty.yaml"
    path.write_text("# nothing but a comment\n")
    return _cli("fit", "--config", str(path))


def _validate_without_checkpoint(ctx: Ctx) -> Any:
    args = [a for a in _tiny_fit_args(ctx.tmp / "validate") if not a.startswith("--trainer.max_steps")]
    return _cli("validate", *args[1:])


def _api_validate_blank(ctx: Ctx) -> Any:
    return quiet_trainer(1, limit_val_batches=1).validate(_gm(), datamodule=_real_dm())


def _difficulty(**kw: Any) -> Any:
    from lightning_sdc.difficulty.command import difficulty_command

    return difficulty_command(**{"dataset": "digits", "models": 1, "epochs": 0, "quiet": True, **kw})


def _existing_file(ctx: Ctx) -> str:
    path = ctx.tmp / "scores_here"
    path.write_text("not a directory\n")
    return str(path)


# ----------------------------------------------------------------------------------- bad values, one line
class ConsoleError(Exception):
    """What ``lightning-sdc`` printed on stderr for an error (its last ``lightning-sdc…error`` line) and its exit
    status; raised by :func:`_console` when the command failed."""


def _console(*args: str) -> None:
    """``lightning-sdc ARGS`` through the console entry point (:func:`lightning_sdc.cli.main`), as a user meets it."""
    import contextlib
    import io

    from lightning_sdc.cli import main

    err = io.StringIO()
    code: Any = 0
    with contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("lightning-sdc") and "error" in ln]
    if code not in (0, None):
        raise ConsoleError(f"{lines[-1] if lines else err.getvalue().strip()} (exit status {code}; "
                           f"{len(lines)} error line{'s' if len(lines) != 1 else ''})")


def _console_fit(ctx: Ctx, name: str, *extra: str) -> None:
    _console(*_tiny_fit_args(ctx.tmp / name, *extra))


def _no_gpu() -> str:
    """An accelerator this machine lacks: ``gpu`` without CUDA (``mps`` on a CUDA machine)."""
    return "mps" if torch.cuda.is_available() else "gpu"


def _second_run_other_settings(ctx: Ctx) -> Any:
    root = ctx.tmp / "one_run"
    _cli(*_tiny_fit_args(root))
    return _cli(*_tiny_fit_args(root, "--model.init_args.sdc_lambda=0.5"))


def _users_config_yaml(ctx: Ctx) -> Any:
    root = ctx.tmp / "users_dir"
    root.mkdir()
    (root / "config.yaml").write_text("# my own notes\nlr: 0.1\n")
    return _cli(*_tiny_fit_args(root))


def _damaged_checkpoint(ctx: Ctx, damage: str) -> Path:
    """The finished run's checkpoint without optimizer state, without hyper-parameters, or with a NaN pixel."""
    ckpt = torch.load(_finished_run(ctx), map_location="cpu", weights_only=True)
    if damage == "weights_only":
        ckpt.pop("optimizer_states")
    elif damage == "no_hparams":
        ckpt.pop("hyper_parameters")
    else:
        ckpt["state_dict"]["synset.images"].view(-1)[0] = float("nan")
    path = ctx.tmp / f"{damage}.ckpt"
    torch.save(ckpt, path)
    return path


def _resume_from(ctx: Ctx, damage: str) -> Any:
    return _cli_fit(ctx, f"resume_{damage}", f"--ckpt_path={_damaged_checkpoint(ctx, damage)}")


def _damaged_buffer(ctx: Ctx, damage: str) -> Path:
    import shutil

    copy = ctx.tmp / f"buffer_{damage}"
    shutil.copytree(ctx.buffer, copy)
    target = copy / "expert_0001.pt"
    if damage == "empty":
        target.write_bytes(b"")
    else:
        obj = torch.load(target, weights_only=True)
        obj["trajectory"][2, 3] = float("nan")
        torch.save(obj, target)
    return copy


def _a_file(ctx: Ctx, name: str) -> Path:
    path = ctx.tmp / name
    path.write_text("a file, not a directory\n")
    return path


def _bad_set(ctx: Ctx, name: str, **changes: Callable[[dict], Any] | Any) -> Path:
    """A digits IPC-1 set file (``SyntheticSet.to_dict``) with ``changes`` applied (a callable gets the dict)."""
    d = _blank().to_dict()
    d.update({k: v(d) if callable(v) else v for k, v in changes.items()})
    torch.save(d, ctx.tmp / name)
    return ctx.tmp / name


def _console_evaluate(path: Path | str, *extra: str) -> None:
    _console("evaluate", str(path), "--epochs", "0", "--num_models", "1", *extra)


def _image_folder(ctx: Ctx, name: str, size: int = 8) -> Path:
    """One sub-folder of PNGs per digits class; class 3's image ``size`` × ``size`` pixels."""
    from torchvision.utils import save_image

    for c in range(10):
        (ctx.tmp / name / str(c)).mkdir(parents=True, exist_ok=True)
        save_image(torch.rand(1, size if c == 3 else 8, size if c == 3 else 8), ctx.tmp / name / str(c) / "0.png")
    return ctx.tmp / name


_SET = {"num_classes": 10, "ipc": 1, "image_shape": (1, 8, 8), "dataset": "digits"}


def _saved(ctx: Ctx, name: str, obj: Any) -> Path:
    torch.save(obj, ctx.tmp / name)
    return ctx.tmp / name


def _dir_md(ctx: Ctx) -> Path:
    """``<tmp>/table`` whose ``table.md`` is a directory."""
    (ctx.tmp / "table.md").mkdir(exist_ok=True)
    return ctx.tmp / "table"


def _cross_arch(**kw: Any) -> Any:
    from lightning_sdc.callbacks import CrossArchEvaluation

    return CrossArchEvaluation(**kw)


def _preemption(**kw: Any) -> Any:
    from lightning_sdc.callbacks import PreemptionCheckpoint

    return PreemptionCheckpoint(**kw)


CASES: list[BadInput] = [
    # ---------------------------------------------------------------- method arguments (construct time)
    BadInput("ipc-0", "DC(ipc=0)", lambda c: _gm(ipc=0), ValueError, ("ipc", "0", "> 0")),
    BadInput("ipc-neg", "DC(ipc=-1)", lambda c: _gm(ipc=-1), ValueError, ("ipc", "-1", "> 0")),
    BadInput("ipc-float", "DC(ipc=1.5)", lambda c: _gm(ipc=1.5), ValueError, ("ipc", "1.5", "integer")),
    BadInput("lambda-neg", "DC(sdc_lambda=-1)", lambda c: _gm(sdc_lambda=-1.0), ValueError,
             ("sdc_lambda", "-1", ">= 0")),
    BadInput("lambda-nan", "DSA(sdc_lambda=nan)", lambda c: _methods().DSA("digits", 1, sdc_lambda=math.nan),
             ValueError, ("sdc_lambda", "nan", ">= 0")),
    BadInput("lambda-str", "DC(sdc_lambda='0.1')", lambda c: _gm(sdc_lambda="0.1"), ValueError,
             ("sdc_lambda", "'0.1'", "number")),
    BadInput("power-3", "DC(sdc_power=3)", lambda c: _gm(sdc_power=3), ValueError, ("sdc_power", "3", "1", "2")),
    BadInput("lr_img-0", "DC(lr_img=0)", lambda c: _gm(lr_img=0.0), ValueError, ("lr_img", "0", "> 0")),
    BadInput("lr_img-neg", "MTT(lr_img=-100)", lambda c: _tm("MTT", lr_img=-100.0), ValueError,
             ("lr_img", "-100", "> 0")),
    BadInput("syn_lr-0", "MTT(syn_lr=0)", lambda c: _tm("MTT", syn_lr=0.0), ValueError, ("syn_lr", "0", "> 0")),
    BadInput("lr_lr-neg", "MTT(lr_lr=-1e-5)", lambda c: _tm("MTT", lr_lr=-1e-5), ValueError,
             ("lr_lr", "-1e-05", ">= 0")),
    BadInput("syn_steps-0", "MTT(syn_steps=0)", lambda c: _tm("MTT", syn_steps=0), ValueError,
             ("syn_steps", "0", "> 0")),
    BadInput("batch_syn-0", "MTT(batch_syn=0)", lambda c: _tm("MTT", batch_syn=0), ValueError,
             ("batch_syn", "0", "> 0")),
    BadInput("batch_real-0", "DC(batch_real=0)", lambda c: _gm(batch_real=0), ValueError,
             ("batch_real", "0", "> 0")),
    BadInput("outer_loop-0", "DC(outer_loop=0)", lambda c: _gm(outer_loop=0), ValueError,
             ("outer_loop", "0", "> 0")),
    BadInput("eval_num_models-0", "DC(eval_num_models=0)", lambda c: _gm(eval_num_models=0), ValueError,
             ("eval_num_models", "0", "> 0")),
    BadInput("seed-str", "DC(seed='a')", lambda c: _gm(seed="a"), ValueError, ("seed", "'a'", "integer")),
    BadInput("dataset-unknown", "DC(dataset='cifar11')", lambda c: _gm(dataset="cifar11"), KeyError,
             ("dataset", "'cifar11'", "allowed: cifar10, cifar100, digits")),
    BadInput("arch-unknown", "DC(arch='ResNet99')", lambda c: _gm(arch="ResNet99", arch_kwargs={}), KeyError,
             ("arch=", "'ResNet99'", "allowed: AlexNet")),
    BadInput("eval_arch-unknown", "DC(eval_arch='Foo')", lambda c: _gm(eval_arch="Foo"), KeyError,
             ("eval_arch=", "'Foo'", "allowed: AlexNet")),
    BadInput("arch_kwargs-typo", "DC(arch_kwargs={'widht': 16})", lambda c: _gm(arch_kwargs={"widht": 16}),
             ValueError, ("arch_kwargs", "widht", "allowed:", "width")),
    BadInput("dis_metric", "DC(dis_metric='l1')", lambda c: _gm(dis_metric="l1"), ValueError,
             ("dis_metric", "'l1'", "ours, mse, cos")),
    BadInput("init", "DC(init='zeros')", lambda c: _gm(init="zeros"), ValueError, ("init", "'zeros'", "real, noise")),
    BadInput("eval_augment", "DC(eval_augment='flip')", lambda c: _gm(eval_augment="flip"), ValueError,
             ("eval_augment", "'flip'", "dsa, dc, none")),
    BadInput("memory", "MTT(memory='cheap')", lambda c: _tm("MTT", memory="cheap"), ValueError,
             ("memory", "'cheap'", "unrolled, constant")),
    BadInput("meta_gradient", "MTT(meta_gradient='second')", lambda c: _tm("MTT", meta_gradient="second"),
             ValueError, ("meta_gradient", "'second'", "exact")),
    BadInput("ema_decay-1", "FTD(ema_decay=1.0)", lambda c: _tm("FTD", ema_decay=1.0), ValueError,
             ("ema_decay", "1.0", "[0, 1)")),
    BadInput("datm-threshold-0", "DATM(threshold=0)", lambda c: _tm("DATM", threshold=0), ValueError,
             ("threshold", "0", "> 0")),
    BadInput("datm-hard-labels", "DATM(label_mode='hard')", lambda c: _tm("DATM", label_mode="hard"), ValueError,
             ("label_mode", "'hard'", "allowed: learned")),
    BadInput("cli-ipc-0", "lightning-sdc fit --config digits_dc_ipc1.yaml --model.init_args.ipc=0", _cli_ipc0,
             ValueError, ("ipc", "0", "> 0")),
    BadInput("momentum_img-1.5", "DC(momentum_img=1.5)", lambda c: _gm(momentum_img=1.5), ValueError,
             ("momentum_img", "1.5", "[0, 1)")),
    BadInput("momentum_lr-1", "MTT(momentum_lr=1.0)", lambda c: _tm("MTT", momentum_lr=1.0), ValueError,
             ("momentum_lr", "1.0", "[0, 1)")),
    BadInput("momentum-neg", "DATM(momentum_y=-0.1)", lambda c: _tm("DATM", momentum_y=-0.1), ValueError,
             ("momentum_y", "-0.1", ">= 0")),
    BadInput("dataset-none", "DC(dataset=None)", lambda c: _methods().DC(None, 1), TypeError,
             ("dataset", "NoneType", "None")),
    BadInput("cli-test-batch-0", "lightning-sdc fit ... --data.init_args.test_batch_size 0",
             lambda c: _cli_fit(c, "tbs0", "--data.init_args.test_batch_size=0"), ValueError,
             ("test_batch_size", ">= 1", "got 0")),
    BadInput("difficulty-batch-0", "lightning-sdc difficulty --batch_size 0 (before the ensemble trains)",
             lambda c: _difficulty(batch_size=0, out=str(c.tmp / "difficulty_b0")), ValueError,
             ("batch_size", "0", ">= 1")),
    BadInput("cli-empty-yaml", "lightning-sdc fit --config empty.yaml (only a comment)", _empty_yaml, ValueError,
             ("empty.yaml", "is empty", "mapping")),
    BadInput("preemption-minutes-0", "PreemptionCheckpoint(every_n_minutes=0)",
             lambda c: _preemption(every_n_minutes=0), ValueError, ("every_n_minutes", "0", "> 0")),
    BadInput("preemption-signal", "PreemptionCheckpoint(signals=['SIGKILL'])",
             lambda c: _preemption(signals=["SIGKILL"]), ValueError, ("signals", "'SIGKILL'", "SIGTERM")),
    BadInput("difficulty-chunk-0", "lightning-sdc difficulty --chunk_size 0 (before the ensemble trains)",
             lambda c: _difficulty(chunk_size=0), ValueError, ("chunk_size", "0", ">= 1")),
    BadInput("difficulty-out-file", "lightning-sdc difficulty --out <an existing file>",
             lambda c: _difficulty(out=_existing_file(c)), ValueError, ("out=", "scores_here", "existing file",
                                                                         "directory")),
    BadInput("difficulty-out-under-file", "lightning-sdc difficulty --out <a path under a file>",
             lambda c: _difficulty(out=_existing_file(c) + "/sub"), ValueError,
             ("out=", "scores_here/sub", "cannot be created")),
    # ---------------------------------------------------------------- DataModule and callback arguments
    BadInput("window-min>max", "ExpertTrajectoryDataModule(min_start_epoch=5, max_start_epoch=3)",
             lambda c: _expert_dm(c, min_start_epoch=5, max_start_epoch=3), ValueError,
             ("max_start_epoch", "3", ">= 6")),
    BadInput("window-current>max", "ExpertTrajectoryDataModule(max_start_epoch=3, current_max_start_epoch=8)",
             lambda c: _expert_dm(c, current_max_start_epoch=8, expansion_end_step=10), ValueError,
             ("current_max_start_epoch", "8", "(0, 3]")),
    BadInput("expert_epochs-0", "ExpertTrajectoryDataModule(expert_epochs=0)",
             lambda c: _expert_dm(c, expert_epochs=0), ValueError, ("expert_epochs", "0", ">= 1")),
    BadInput("train_kwargs-unknown", "ExpertTrajectoryDataModule(train_kwargs={'lr_teacher': 0.01})",
             lambda c: _expert_dm(c, train_kwargs={"lr_teacher": 0.01}), ValueError,
             ("train_kwargs", "lr_teacher", "allowed:", "lr")),
    BadInput("data-unknown", "RealDataModule('imagenet1k')", lambda c: _real_dm("imagenet1k"), KeyError,
             ("dataset", "'imagenet1k'", "allowed:")),
    BadInput("asdc-end-neg", "ASDCRamp(lambda_end=-0.01)", lambda c: _asdc(lambda_end=-0.01), ValueError,
             ("lambda_end", "-0.01", ">= 0")),
    BadInput("asdc-steps-0", "ASDCRamp(steps=0)", lambda c: _asdc(steps=0), ValueError,
             ("steps", "0", ">= 1")),
    BadInput("asdc-shape", "ASDCRamp(shape='cubic')", lambda c: _asdc(shape="cubic"), ValueError,
             ("shape", "'cubic'", "log, geometric, linear")),
    # ---------------------------------------------------------------- run set-up (Trainer.fit, before step 0)
    BadInput("ipc-too-large", "DC(ipc=200) on digits (139 images in its smallest class)",
             lambda c: fit_without_compute(_gm(ipc=200, outer_loop=1, inner_loop=1), _real_dm()), ValueError,
             ("ipc=200", "139", "ipc <= 139"), "setup"),
    BadInput("dm-dataset-mismatch", "DC(dataset='digits') with RealDataModule('mnist5k')",
             lambda c: fit_without_compute(_gm(), _real_dm("mnist5k")), ValueError,
             ("dataset", "'digits'", "'mnist5k'"), "setup"),
    BadInput("dm-zca-mismatch", "DC(zca=False) with RealDataModule('digits', zca=True)",
             lambda c: fit_without_compute(_gm(), _real_dm(zca=True)), ValueError,
             ("zca=False", "zca=True"), "setup"),
    BadInput("missing-data-dir", "RealDataModule('cifar10', root=<empty dir>, download=False)",
             lambda c: fit_without_compute(_methods().DC("cifar10", 1), _real_dm("cifar10", root=str(c.tmp / "missing_data"))),
             FileNotFoundError, ("'cifar10'", "not available", "missing_data", "download=True"), "setup"),
    BadInput("buffer-missing", "ExpertTrajectoryDataModule(buffer_dir=<empty dir>)",
             lambda c: fit_without_compute(_tm("MTT"), _expert_dm(c, buffer=c.tmp / "no_buffer")),
             FileNotFoundError, ("no_buffer", "train_if_missing=False"), "setup"),
    BadInput("buffer-dataset", "digits expert buffer used for mnist5k",
             lambda c: fit_without_compute(_methods().MTT("mnist5k", 1, arch_kwargs=TM_ARCH), _expert_dm(c, "mnist5k")),
             ValueError, ("dataset:", "buffer has 'digits'", "run uses 'mnist5k'"), "setup"),
    BadInput("buffer-arch", "ConvNet expert buffer used with arch='LeNet'",
             lambda c: _tm_fit(c, {"arch": "LeNet", "arch_kwargs": {}}, arch="LeNet", arch_kwargs={}), ValueError,
             ("arch:", "buffer has 'ConvNet'", "run uses 'LeNet'"), "setup"),
    BadInput("buffer-zca", "expert buffer without ZCA used with zca=True",
             lambda c: _tm_fit(c, {"zca": True}, zca=True), ValueError,
             ("zca:", "buffer has False", "run uses True"), "setup"),
    BadInput("buffer-width", "width-8 expert buffer used with width 16",
             lambda c: _tm_fit(c, {"arch_kwargs": SMALL}, arch_kwargs=SMALL), ValueError,
             ("arch_kwargs:", "'width': 8", "'width': 16"), "setup"),
    BadInput("buffer-epochs", "4-epoch buffer with max_start_epoch=4, expert_epochs=2 (needs 5)",
             lambda c: _tm_fit(c, max_start_epoch=4, expert_epochs=2), ValueError,
             ("max_start_epoch=4", "expert_epochs=2", "buffer has 4 epochs", "<= 5"), "setup"),
    BadInput("resume-other-ipc", "DC(ipc=1) resumed from an IPC-2 checkpoint",
             lambda c: fit_without_compute(_gm(), _real_dm(), ckpt_path=str(_other_ipc_checkpoint(c))),
             RuntimeError, ("synset.images", "[20, 1, 8, 8]", "[10, 1, 8, 8]"), "setup"),
    BadInput("eval_arch-impossible", "DC(eval_arch='VGG11') on 8×8 digits (fails at the first evaluation before)",
             lambda c: fit_without_compute(_gm(eval_arch="VGG11"), _real_dm()), ValueError,
             ("eval_arch='VGG11'", "(1, 8, 8)", "does not support"), "setup"),
    BadInput("cli-val-check-0", "lightning-sdc fit ... --trainer.val_check_interval 0",
             lambda c: _cli_fit(c, "vci0", "--trainer.val_check_interval=0"), ValueError,
             ("val_check_interval=0", "integer >= 1", "(0, 1]"), "setup"),
    BadInput("cli-max-steps-0", "lightning-sdc fit ... --trainer.max_steps 0",
             lambda c: _cli_fit(c, "ms0", "--trainer.max_steps=0"), ValueError,
             ("--trainer.max_steps 0", "integer >= 1")),
    BadInput("cli-validate-no-ckpt", "lightning-sdc validate <configs> (no --ckpt_path: the set is blank)",
             _validate_without_checkpoint, ValueError, ("validate needs --ckpt_path", "blank", "evaluate"), "setup"),
    BadInput("api-validate-blank", "Trainer.validate(DC(...)) on a module never fitted",
             _api_validate_blank, ValueError, ("blank", "ckpt_path"), "setup"),
    BadInput("cli-second-live-run", "lightning-sdc fit --trainer.logger false in a directory another live run holds",
             _second_live_run, ValueError, ("another live run (pid", "busy", "default_root_dir"), "setup"),
    # ---------------------------------------------------------------- resuming (lightning-sdc fit --ckpt_path)
    BadInput("resume-missing-file", "lightning-sdc fit ... --ckpt_path nothing_here.ckpt",
             lambda c: _cli_fit(c, "nockpt", f"--ckpt_path={c.tmp / 'nothing_here.ckpt'}"), ValueError,
             ("--ckpt_path", "nothing_here.ckpt", "no such checkpoint"), "load"),
    BadInput("resume-other-lambda", "resume a sdc_lambda=0.01 run with --model.init_args.sdc_lambda 0.02",
             lambda c: _resume(c, "--model.init_args.sdc_lambda=0.02"), ValueError,
             ("model.sdc_lambda: checkpoint 0.01, this run 0.02", "--resume_override"), "load"),
    BadInput("resume-other-eval", "resume with --model.init_args.eval_num_models 3 (checkpoint: 1)",
             lambda c: _resume(c, "--model.init_args.eval_num_models=3"), ValueError,
             ("model.eval_num_models: checkpoint 1, this run 3",), "load"),
    BadInput("resume-other-method", "resume a DC checkpoint with --config digits_dsa_ipc1.yaml",
             lambda c: _resume(c, "--config", str(REPO / "configs" / "demo" / "digits_dsa_ipc1.yaml"),
                               "--model.init_args.arch_kwargs={width: 8, depth: 2}"), ValueError,
             ("is a lightning_sdc.methods.DC run", "DSA"), "load"),
    BadInput("resume-override-frozen", "--resume_override [ipc] with another ipc",
             lambda c: _resume(c, "--model.init_args.ipc=10", "--resume_override=[ipc]"), ValueError,
             ("--resume_override model.ipc", "cannot change"), "load"),
    BadInput("resume-foreign-class", "a checkpoint whose hyper_parameters._class_path is sdc_table_marker.Foo",
             lambda c: _cli_fit(c, "foreign", f"--ckpt_path={_crafted_checkpoint(c)}"), ValueError,
             ("_class_path='sdc_table_marker.Foo'", "outside lightning_sdc", "nothing was imported"), "load"),
    # ---------------------------------------------------------------- evaluation of a saved set
    BadInput("eval-shape", "a (1, 28, 28) set evaluated on digits (1, 8, 8)",
             lambda c: _evaluate(_blank(image_shape=(1, 28, 28), dataset="custom"), _digits()), ValueError,
             ("(1, 28, 28)", "(1, 8, 8)"), "load"),
    BadInput("eval-dataset", "a set distilled from mnist evaluated on mnist5k",
             lambda c: _evaluate(_blank(image_shape=(1, 28, 28), dataset="mnist"), _spec(c, "mnist5k")),
             ValueError, ("dataset='mnist'", "'mnist5k'"), "load"),
    BadInput("eval-zca", "a ZCA-space set evaluated on digits without ZCA",
             lambda c: _evaluate(_blank(zca_state=_digits(zca=True).zca.to_dict()), _digits()), ValueError,
             ("zca=True", "zca=False"), "load"),
    BadInput("eval-classes", "a 5-class set evaluated on 10-class digits",
             lambda c: _evaluate(_blank(num_classes=5, ipc=2), _digits()), ValueError,
             ("num_classes=5", "9"), "load"),
    # ---------------------------------------------------------------- one line, before compute
    BadInput("cli-union-int", "lightning-sdc fit ... --model.init_args.ipc abc",
             lambda c: _console_fit(c, "u_int", "--model.init_args.ipc", "abc"), ConsoleError,
             ("model.init_args.ipc", "abc", "int", "1 error line")),
    BadInput("cli-split-dict", "lightning-sdc fit ... --model.init_args.arch_kwargs {width: 8, depth: 2} (unquoted)",
             lambda c: _console_fit(c, "u_dict", "--model.init_args.arch_kwargs", "{width:", "8,", "depth:", "2}"),
             ConsoleError, ("model.init_args.arch_kwargs", "{width:", "quote it", "1 error line")),
    BadInput("cli-max-steps-neg", "lightning-sdc fit ... --trainer.max_steps -5",
             lambda c: _cli_fit(c, "ms_neg", "--trainer.max_steps=-5"), ValueError,
             ("--trainer.max_steps -5", "integer >= 1")),
    BadInput("cli-limit-train-frac", "lightning-sdc fit ... --trainer.limit_train_batches 0.5",
             lambda c: _cli_fit(c, "ltb", "--trainer.limit_train_batches=0.5"), ValueError,
             ("limit_train_batches 0.5", "1.0 or an integer")),
    BadInput("cli-no-gpu", "lightning-sdc fit ... --trainer.accelerator gpu (on a machine without one)",
             lambda c: _cli_fit(c, "gpu", f"--trainer.accelerator={_no_gpu()}"), ValueError,
             ("--trainer.accelerator", "no ", "allowed here: cpu or auto")),
    BadInput("cli-devices-0", "lightning-sdc fit ... --trainer.devices 0",
             lambda c: _cli_fit(c, "dev0", "--trainer.devices=0"), ValueError,
             ("--trainer.devices 0", "integer >= 1")),
    BadInput("cli-check-val-0", "lightning-sdc fit ... --trainer.check_val_every_n_epoch 0",
             lambda c: _cli_fit(c, "cve0", "--trainer.check_val_every_n_epoch=0"), ValueError,
             ("check_val_every_n_epoch 0", "integer >= 1")),
    BadInput("cli-accumulate", "lightning-sdc fit ... --trainer.accumulate_grad_batches 2",
             lambda c: _cli_fit(c, "acc2", "--trainer.accumulate_grad_batches=2"), ValueError,
             ("accumulate_grad_batches 2", "manual optimisation", "allowed: 1")),
    BadInput("cli-clip", "lightning-sdc fit ... --trainer.gradient_clip_val 1.0",
             lambda c: _cli_fit(c, "clip", "--trainer.gradient_clip_val=1.0"), ValueError,
             ("gradient_clip_val 1.0", "manual optimisation", "allowed: null")),
    BadInput("cli-fast-dev-run", "lightning-sdc fit ... --trainer.fast_dev_run true",
             lambda c: _cli_fit(c, "fdr", "--trainer.fast_dev_run=true"), ValueError,
             ("fast_dev_run", "not supported", "--trainer.max_steps 1")),
    BadInput("cli-config-binary", "lightning-sdc fit --config /bin/ls",
             lambda c: _cli("fit", "--config", "/bin/ls"), ValueError, ("--config /bin/ls", "not a text file")),
    BadInput("experts-config-binary", "lightning-sdc experts --config /bin/ls",
             lambda c: _console("experts", "--config", "/bin/ls"), ConsoleError,
             ("--config /bin/ls", "not a text file", "exit status 2", "1 error line")),
    BadInput("cli-model-nosuch", "lightning-sdc fit --model nosuch",
             lambda c: _cli("fit", "--model", "nosuch"), ValueError, ("--model nosuch", "allowed", "DSA", "MTT")),
    BadInput("cli-second-run", "a second fit with another sdc_lambda into the same --trainer.logger false directory",
             _second_run_other_settings, ValueError,
             ("already holds another run", "sdc_lambda", "that run 0.01, this run 0.5", "default_root_dir"), "setup"),
    BadInput("cli-users-config", "fit --trainer.logger false into a directory holding the user's own config.yaml",
             _users_config_yaml, ValueError, ("config.yaml is not a run config", "default_root_dir"), "setup"),
    BadInput("resume-weights-only", "fit --ckpt_path <a checkpoint without optimizer state>",
             lambda c: _resume_from(c, "weights_only"), ValueError,
             ("weights_only.ckpt", "no optimizer state", "momentum"), "load"),
    BadInput("resume-no-hparams", "fit --ckpt_path <a checkpoint without hyper-parameters>",
             lambda c: _resume_from(c, "no_hparams"), ValueError, ("no_hparams.ckpt", "no hyper-parameters"), "load"),
    BadInput("resume-nan-pixel", "fit --ckpt_path <a checkpoint with one NaN pixel>",
             lambda c: _resume_from(c, "nan_pixel"), ValueError, ("nan_pixel.ckpt", "synset.images", "NaN"), "load"),
    BadInput("buffer-nan-expert", "a buffer whose expert_0001.pt holds a NaN (sampled at a later update)",
             lambda c: _expert_dm(c, buffer=_damaged_buffer(c, "nan")).setup("fit"), ValueError,
             ("expert_0001.pt", "NaN", "epoch 2"), "setup"),
    BadInput("buffer-empty-expert", "a buffer whose expert_0001.pt is a zero-byte file",
             lambda c: _expert_dm(c, buffer=_damaged_buffer(c, "empty")).setup("fit"), ValueError,
             ("expert_0001.pt", "corrupt or truncated"), "setup"),
    BadInput("buffer-dir-file", "ExpertTrajectoryDataModule(buffer_dir=<a file>)",
             lambda c: _expert_dm(c, buffer=_a_file(c, "buffer_file")).setup("fit"), ValueError,
             ("buffer_dir=", "buffer_file", "is a file", "directory")),
    BadInput("fit-buffer-under-file", "lightning-sdc fit --config demo/digits_mtt_ipc1 --data.init_args.buffer_dir "
             "<file>/sub (train_if_missing: before any expert trains)",
             lambda c: _console("fit", "--config", "demo/digits_mtt_ipc1", "--trainer.logger=false",
                                f"--trainer.default_root_dir={c.tmp / 'mtt_f8'}",
                                f"--data.init_args.buffer_dir={_a_file(c, 'f8') / 'sub'}"),
             ConsoleError, ("buffer_dir=", "f8/sub", "f8' is a file", "allowed: a directory", "1 error line")),
    BadInput("experts-out-under-file", "lightning-sdc experts --out <file>/buffer",
             lambda c: _console("experts", "--dataset", "digits", "--out", str(_a_file(c, "f1") / "buffer")),
             ConsoleError, ("--out", "f1/buffer", "cannot be created", "1 error line")),
    BadInput("theory-out-file", "lightning-sdc theory --figure 4a --quick true --out <file>",
             lambda c: _console("theory", "--figure", "4a", "--quick", "true", "--out", str(_a_file(c, "f2"))),
             ConsoleError, ("--out", "f2", "is an existing file", "1 error line")),
    BadInput("demo-out-under-file", "lightning-sdc demo --out <file>/demo",
             lambda c: _console("demo", "--steps", "1", "--out", str(_a_file(c, "f3") / "demo")),
             ConsoleError, ("--out", "f3/demo", "cannot be created", "1 error line")),
    BadInput("reproduce-out-under-file", "lightning-sdc reproduce --grid tm-digits --out <file>/results",
             lambda c: _console("reproduce", "--grid", "tm-digits", "--out", str(_a_file(c, "f4") / "results")),
             ConsoleError, ("--out", "f4/results", "cannot be created", "1 error line")),
    BadInput("compare-out-under-file", "lightning-sdc compare --cell demo/digits_dc_ipc1 --vary ... --out <file>/cmp",
             lambda c: _console("compare", "--cell", "demo/digits_dc_ipc1", "--vary", "model.init_args.sdc_lambda=0,0.1",
                                "--out", str(_a_file(c, "f10") / "cmp")),
             ConsoleError, ("--out", "f10/cmp", "cannot be created", "1 error line")),
    BadInput("gradn-workdir-file", "lightning-sdc gradn-curve --workdir <file>",
             lambda c: _console("gradn-curve", "--steps", "1", "--workdir", str(_a_file(c, "f5"))),
             ConsoleError, ("--workdir", "f5", "is an existing file", "1 error line")),
    BadInput("evaluate-int8", "lightning-sdc evaluate <a set file whose images are int8>",
             lambda c: _console_evaluate(_bad_set(c, "int8.pt", images=lambda d: d["images"].to(torch.int8))),
             ConsoleError, ("int8.pt", "dtype torch.int8", "allowed:", "float16, bfloat16, float32 or float64",
                            "1 error line"), "load"),
    BadInput("evaluate-complex", "lightning-sdc evaluate <a set file whose images are complex>",
             lambda c: _console_evaluate(_bad_set(c, "cplx.pt", images=lambda d: d["images"].to(torch.complex64))),
             ConsoleError, ("cplx.pt", "dtype torch.complex64", "float16, bfloat16, float32 or float64",
                            "1 error line"), "load"),
    BadInput("evaluate-1e30", "lightning-sdc evaluate <a set file whose pixels are 1e30>",
             lambda c: _console_evaluate(_bad_set(c, "huge.pt", images=torch.full((10, 1, 8, 8), 1e30))),
             ConsoleError, ("huge.pt", "|x| = 1e+30", "allowed: |x| <= 1000", "1 error line"), "load"),
    BadInput("evaluate-labels-all-0", "lightning-sdc evaluate <a 10-class IPC-1 set whose labels are all 0>",
             lambda c: _console_evaluate(_bad_set(c, "zeros.pt", labels=torch.zeros(10, dtype=torch.long))),
             ConsoleError, ("zeros.pt", "not class-major", "row 1 has label 0, expected 1", "allowed:",
                            "1 error line"), "load"),
    BadInput("evaluate-protocol-models-0", "lightning-sdc evaluate <a set recording eval_protocol num_models 0>",
             lambda c: _console("evaluate", str(_bad_set(c, "p0.pt", eval_protocol={"num_models": 0}))),
             ConsoleError, ("p0.pt", "recorded eval_protocol num_models=0", "allowed: an integer >= 1",
                            "1 error line"), "load"),
    BadInput("evaluate-protocol-epochs-neg", "lightning-sdc evaluate <a set recording eval_protocol epochs -5>",
             lambda c: _console("evaluate", str(_bad_set(c, "pm5.pt", eval_protocol={"epochs": -5}))),
             ConsoleError, ("pm5.pt", "recorded eval_protocol epochs=-5", "allowed: an integer >= 0",
                            "1 error line"), "load"),
    BadInput("evaluate-protocol-arch", "lightning-sdc evaluate <a set recording eval_protocol arch NoNet>",
             lambda c: _console("evaluate", str(_bad_set(c, "pnn.pt", eval_protocol={"arch": "NoNet"}))),
             ConsoleError, ("pnn.pt", "recorded eval_protocol arch='NoNet'", "allowed: a registered network",
                            "ConvNet", "1 error line"), "load"),
    BadInput("evaluate-lr-neg", "lightning-sdc evaluate <set> --lr -1",
             lambda c: _console_evaluate(_synset_file(c, "ok1", **_SET), "--lr", "-1"), ConsoleError,
             ("lr=-1.0", "allowed: a finite number > 0", "1 error line")),
    BadInput("evaluate-archs-twice", "lightning-sdc evaluate <set> --archs ConvNet ConvNet",
             lambda c: _console_evaluate(_synset_file(c, "ok2", **_SET), "--archs", "ConvNet", "ConvNet"),
             ConsoleError, ("names ConvNet more than once", "allowed: each architecture once", "1 error line")),
    BadInput("evaluate-out-under-file", "lightning-sdc evaluate <set> --out <file>/res",
             lambda c: _console_evaluate(_synset_file(c, "ok3", **_SET), "--out", str(_a_file(c, "f6") / "res")),
             ConsoleError, ("--out=", "f6/res.md", "lies under the file", "allowed:", "1 error line")),
    BadInput("evaluate-out-directory", "lightning-sdc evaluate <set> --out <d> where <d>.md is a directory",
             lambda c: _console_evaluate(_synset_file(c, "ok4", **_SET), "--out", str(_dir_md(c))),
             ConsoleError, ("--out=", "table.md", "is a directory", "1 error line")),
    BadInput("coreset-out-under-file", "lightning-sdc coreset --method random --dataset digits --ipc 1 --out <file>/x",
             lambda c: _console("coreset", "--method", "random", "--dataset", "digits", "--ipc", "1", "--out",
                                str(_a_file(c, "f7") / "sets")),
             ConsoleError, ("--out", "f7/sets", "cannot be created", "1 error line")),
    BadInput("evaluate-folder-size", "lightning-sdc evaluate <folder of images, one 9×9> --dataset digits",
             lambda c: _console_evaluate(_image_folder(c, "folder9", 9), "--dataset", "digits"), ConsoleError,
             ("3/0.png", "9×9 pixels", "allowed: 8×8", "1 error line"), "load"),
    BadInput("evaluate-folder-no-dataset", "lightning-sdc evaluate <folder of images> (no --dataset)",
             lambda c: _console_evaluate(_image_folder(c, "folder8")), ConsoleError,
             ("folder8", "records no dataset", "--dataset NAME", "1 error line"), "load"),
    BadInput("evaluate-dc-res-data", "lightning-sdc evaluate <res_DC_digits_ConvNet_1ipc.pt whose 'data' is a str>",
             lambda c: _console_evaluate(_saved(c, "res_DC_digits_ConvNet_1ipc.pt", {"data": "x"})), ConsoleError,
             ("res_DC_digits_ConvNet_1ipc.pt", "not DC's list of [image_syn, label_syn] pairs", "1 error line"),
             "load"),
    BadInput("cli-config-checkpoint", "lightning-sdc fit --config <a checkpoint> (run.ckpt)",
             lambda c: _console("fit", "--config", str(_finished_run(c))), ConsoleError,
             ("--config", "last.ckpt", "not a text file", "exit status 2", "1 error line")),
    BadInput("cli-ipc-0-console", "lightning-sdc fit ... --model.init_args.ipc 0",
             lambda c: _console_fit(c, "u_ipc0", "--model.init_args.ipc", "0"), ConsoleError,
             ("ipc must be an integer >= 1", "got 0", "exit status 1", "1 error line")),
    BadInput("evaluate-lr-nan", "lightning-sdc evaluate <set> --lr nan",
             lambda c: _console_evaluate(_synset_file(c, "ok5", **_SET), "--lr", "nan"), ConsoleError,
             ("lr: expected a number", "given: nan", "exit status 2", "1 error line")),
    BadInput("cross-arch-twice", "CrossArchEvaluation(archs=['ConvNet', 'convnet']) (fails after fit before)",
             lambda c: _cross_arch(archs=["ConvNet", "convnet"]), ValueError,
             ("names ConvNet more than once", "allowed: each architecture once")),
    BadInput("fit-root-under-file", "lightning-sdc fit ... --trainer.default_root_dir <file>/run (default logger)",
             lambda c: _console(*[a for a in _tiny_fit_args(_a_file(c, "f9") / "run") if a != "--trainer.logger=false"]),
             ConsoleError, ("--trainer.default_root_dir=", "f9/run", "cannot be created as a directory",
                            "1 error line"), "setup"),
    BadInput("fit-exporter-under-file", "lightning-sdc fit ... --trainer.callbacks+=SyntheticSetExporter "
             "--trainer.callbacks.dirpath <file>/x (fails after the last update before)",
             lambda c: _console_fit(c, "exp_f10", "--trainer.callbacks+=SyntheticSetExporter",
                                    f"--trainer.callbacks.dirpath={_a_file(c, 'f10') / 'x'}"),
             ConsoleError, ("SyntheticSetExporter.dirpath=", "f10/x", "cannot be created as a directory",
                            "1 error line"), "setup"),
    BadInput("cli-val-check-str", "lightning-sdc fit ... --trainer.val_check_interval abc (a Lightning traceback before)",
             lambda c: _console_fit(c, "vci_abc", "--trainer.val_check_interval", "abc"), ConsoleError,
             ("--trainer.val_check_interval abc", "allowed: an integer >= 1", "exit status 2", "1 error line")),
    BadInput("cli-val-check-time", "lightning-sdc fit ... --trainer.val_check_interval 00:00:10:00 (a time)",
             lambda c: _console_fit(c, "vci_time", "--trainer.val_check_interval", "00:00:10:00"), ConsoleError,
             ("--trainer.val_check_interval 00:00:10:00", "allowed: an integer >= 1", "1 error line")),
    BadInput("cli-val-check-1.5", "lightning-sdc fit ... --trainer.val_check_interval 1.5",
             lambda c: _console_fit(c, "vci_15", "--trainer.val_check_interval", "1.5"), ConsoleError,
             ("--trainer.val_check_interval 1.5", "a float in (0, 1]", "exit status 2", "1 error line")),
    BadInput("cli-limit-val-neg", "lightning-sdc fit ... --trainer.limit_val_batches -1 (a Lightning traceback before)",
             lambda c: _console_fit(c, "lvb", "--trainer.limit_val_batches", "-1"), ConsoleError,
             ("-1.0 for limit_val_batches", "in [0.0, 1.0] or an int", "exit status 2", "1 error line")),
    BadInput("cli-max-time-abc", "lightning-sdc fit ... --trainer.max_time abc (a Lightning traceback before)",
             lambda c: _console_fit(c, "mt", "--trainer.max_time", "abc"), ConsoleError,
             ("duration='abc'", "DD:HH:MM:SS", "exit status 2", "1 error line")),
    BadInput("coreset-ipc-0", "lightning-sdc coreset --method random --dataset digits --ipc 0",
             lambda c: _console("coreset", "--method", "random", "--dataset", "digits", "--ipc", "0", "--out",
                                str(c.tmp / "cs0")),
             ConsoleError, ("ipc=0 is not allowed", "allowed: an integer in [1, ", "1 error line")),
    BadInput("evaluate-cli-shape", "lightning-sdc evaluate <a 28x28 set whose metadata says digits>",
             lambda c: _evaluate_cli(_synset_file(c, "wrong_shape", num_classes=10, ipc=1, image_shape=(1, 28, 28),
                                                  dataset="digits")),
             ValueError, ("wrong_shape.pt", "(1, 28, 28)", "(1, 8, 8)"), "load"),
]


def collect_messages(ctx: Ctx) -> list[tuple[BadInput, str, str, bool]]:
    """Run every case; ``(case, exception type name, message, clean)`` (an unexpected outcome too): clean = the
    expected exception type (or a subclass) whose message holds every expected string."""
    rows = []
    for case in CASES:
        try:
            case.trigger(ctx)
        except BaseException as exc:  # noqa: BLE001 - recorded as it is
            msg = message_of(exc)
            rows.append((case, type(exc).__name__, msg,
                         isinstance(exc, case.error) and all(name in msg for name in case.names)))
        else:
            rows.append((case, "(no error)", "", False))
    return rows


def message_of(exc: BaseException) -> str:
    """The text a user reads: ``str`` of the exception (``KeyError`` without its repr quotes)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def messages_markdown(rows: list[tuple[Any, ...]], extra: list[tuple[str, ...]] = ()) -> str:
    """The bad-input table (docs/bad_inputs.md): input → exception → message (one line each), with counts.

    ``rows``: ``(case, exception name, message[, clean])`` (clean defaults to: the exception's name is the
    case's and the message holds every expected string); ``extra``: ``(description, exception name, message[,
    raised at])``, clean when something was raised."""

    def cell(text: str) -> str:
        text = " ⏎ ".join(line.strip() for line in text.strip().splitlines() if line.strip())
        if len(text) > 400:
            text = text[:400] + " …"
        return text.replace("|", "\\|")

    clean = sum(_row_clean(row) for row in rows)
    clean_extra = sum(row[1] != "(no error)" for row in extra)
    tried = len(rows) + len(extra)
    lines = [
        "# Bad inputs and the messages they produce",
        "",
        "Generated by `python -m tests.reliability_helpers docs/bad_inputs.md` from `tests/reliability_helpers.py:CASES`",
        "(the cases `tests/test_reliability.py` asserts: exception type, and that the message names the key, the",
        "bad value and, where it can, what is allowed) plus the truncated-file and full-disk cases. `raised at`:",
        "`construct` = building the object or parsing the command line, `setup` = before the first update,",
        "`load` = reading a file or checkpoint (before it is used). `UsageError` is the command line's one-line",
        "error (a `ValueError`; `lightning-sdc` prints it on one line, exit status 2); `ConsoleError` rows ran the",
        "console entry point and show the line it printed, its exit status and how many error lines it printed.",
        "Multi-line messages are joined with ⏎; long lists of allowed names are cut at 400 characters; temporary",
        "paths read `<tmp>`.",
        "",
        f"**{tried} inputs tried, {clean + clean_extra} clean** (the expected error, naming what it must), "
        f"**{tried - clean - clean_extra} left**.",
        "",
        "| # | bad input | raised at | exception | message |",
        "|---|---|---|---|---|",
    ]
    for i, (case, kind, msg, *_) in enumerate(rows, 1):
        lines.append(f"| {i} | `{cell(case.description)}` | {case.when} | {kind} | {cell(msg)} |")
    for j, (desc, kind, msg, *when) in enumerate(extra, len(rows) + 1):
        lines.append(f"| {j} | {cell(desc)} | {when[0] if when else 'load'} | {kind} | {cell(msg)} |")
    return "\n".join(lines) + "\n"


def truncated_file_messages(tmp: Path, buffer: Path) -> list[tuple[str, str, str]]:
    """``(description, exception, message)`` for a truncated checkpoint, expert file and exported set."""
    import shutil

    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightning_sdc.experts import ExpertBuffer
    from lightning_sdc.synthetic import SyntheticSet

    out = []
    ck_dir = tmp / "trunc_ckpt"
    quiet_trainer(1, [ModelCheckpoint(dirpath=ck_dir, save_last=True, save_top_k=0, every_n_train_steps=1)],
                  enable_checkpointing=True).fit(_gm(outer_loop=1, inner_loop=1), _real_dm())
    ckpt = truncate(ck_dir / "last.ckpt")
    copy = tmp / "trunc_buffer"
    shutil.copytree(buffer, copy)
    truncate(copy / "expert_0001.pt")
    synset = truncate(_blank().save(tmp / "trunc_synset.pt"))
    attempts = [
        ("`lightning-sdc fit … --ckpt_path last.ckpt` with the checkpoint cut in half",
         lambda: quiet_trainer(2).fit(_gm(), _real_dm(), ckpt_path=str(ckpt))),
        ("expert buffer whose `expert_0001.pt` is cut in half", lambda: ExpertBuffer(copy).snapshot(1, 0)),
        ("`lightning-sdc evaluate synset.pt` with the file cut in half", lambda: SyntheticSet.load(synset)),
    ]
    for desc, attempt in attempts:
        try:
            attempt()
        except BaseException as exc:  # noqa: BLE001
            out.append((desc, type(exc).__name__, message_of(exc)))
        else:
            out.append((desc, "(no error)", ""))
    return out


def _row_clean(row: tuple[Any, ...]) -> bool:
    case, kind, msg = row[:3]
    if len(row) > 3:
        return bool(row[3])
    return kind == case.error.__name__ and all(name in msg for name in case.names)


def full_disk_messages(tmp: Path) -> list[tuple[str, str, str]]:
    """``(description, exception, message)`` for writes into a 64 KiB tmpfs (needs root; none otherwise)."""
    from lightning_sdc.callbacks.images import SyntheticSetExporter, write_all_or_nothing
    from lightning_sdc.io import atomic_torch_save

    mnt = tmp / "full_disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        return []
    synset = _blank(ipc=6, image_shape=(1, 10, 10), dataset="custom")
    with torch.no_grad():
        synset.images.normal_()
    exporter = SyntheticSetExporter(dirpath=str(mnt))
    attempts = [
        ("a 400 KB checkpoint into a 64 KiB filesystem (`AtomicCheckpointIO`, every `torch.save` of the package)",
         lambda: atomic_torch_save({"x": torch.zeros(100_000)}, mnt / "last.ckpt")),
        ("`SyntheticSetExporter` into a 64 KiB filesystem: the set fits, the set + its TM copy do not",
         lambda: write_all_or_nothing(mnt, lambda d: exporter._write(synset, d))),
    ]
    out = []
    try:
        for desc, attempt in attempts:
            try:
                attempt()
            except BaseException as exc:  # noqa: BLE001
                left = sorted(p.name for p in mnt.iterdir())
                out.append((desc, type(exc).__name__, f"{message_of(exc)} (files left: {left or 'none'})", "write"))
            else:
                out.append((desc, "(no error)", ""))
    finally:
        import gc

        gc.collect()
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.reliability_helpers OUT.md``: run every case and write the message table."""
    import warnings

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m tests.reliability_helpers OUT.md")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ctx = Ctx(tmp=tmp, buffer=train_tiny_experts(tmp / "buffer"))
        rows = collect_messages(ctx)
        extra = truncated_file_messages(tmp, ctx.buffer) + full_disk_messages(tmp)
        text = messages_markdown(rows, extra).replace(str(tmp), "<tmp>")
    from lightning_sdc.io import atomic_write_text

    atomic_write_text(text, argv[0])
    clean = sum(_row_clean(row) for row in rows) + sum(row[1] != "(no error)" for row in extra)
    print(f"{len(rows) + len(extra)} inputs tried, {clean} clean, {len(rows) + len(extra) - clean} left; "
          f"written to {argv[0]}")


if __name__ == "__main__":
    main()
