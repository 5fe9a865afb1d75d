"""``PreemptionCheckpoint``: a resumable ``last.ckpt`` every few minutes, and on SIGTERM / SIGUSR1 / SIGINT a
checkpoint of the last completed update, then a non-zero exit (or a SLURM requeue).

Lightning's own handling exits 0 without a checkpoint (its SLURM plugin saves inside the signal handler, in the
middle of an update). This callback records the signal and, at the end of the update in progress, writes
``last.ckpt`` through the Trainer (atomically) and raises :class:`Preempted` (exit status ``128 + signal``); under
``lightning-sdc`` every stop signal is held while updates run. A signal during the evaluation inside ``fit`` stops
it at once (the checkpoint holds the last update), as does a failed evaluation. Under SLURM auto-requeue the
requeue signal saves, then runs ``scontrol requeue``. It also saves every ``every_n_minutes`` (10) or
``every_n_steps`` updates and when ``fit`` ends; ``--ckpt_path last`` then continues bit-exactly
(:mod:`lightning_sdc.runs`). With ``enable_checkpointing=False`` it writes nothing but still exits non-zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightning_sdc import signals as stop_signals
from lightning_sdc.checks import check_int, check_number
from lightning_sdc.signals import Stopped

SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP", "SIGCONT")


class Preempted(SIGTERMException, Stopped):
    """``fit`` stopped by a signal after writing a checkpoint; exit status ``128 + signum``."""

    def __init__(self, signum: int, step: int, path: Path | None, requeued: bool = False, handled: bool = False):
        SystemExit.__init__(self, 128 + int(signum))
        self.signum, self.step, self.path, self.requeued = int(signum), step, path, requeued
        self.reported = self.handled = handled  # checkpoint written (or checkpointing off) and reported


def _signal_number(name: Any) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        return int(name)
    if isinstance(name, str) and name.upper() in SIGNALS and hasattr(signal, name.upper()):
        return int(getattr(signal, name.upper()))
    raise ValueError(f"signals: {name!r} is not allowed; allowed: {', '.join(s for s in SIGNALS if hasattr(signal, s))}")


class PreemptionCheckpoint(pl.Callback):
    """Periodic and on-signal ``last.ckpt`` (see the module docstring).

    Args:
        every_n_minutes: wall-clock period of ``last.ckpt`` (``None``: no time-based saves).
        every_n_steps: period in updates (``None``: none). Both may be set; a save at step ``k`` is not repeated.
        dirpath: where ``last.ckpt`` goes (default: the run's checkpoint directory,
            :func:`lightning_sdc.runs.checkpoint_dir`, the one ``ModelCheckpoint`` uses).
        signals: the signals that stop ``fit`` with a checkpoint (names such as ``"SIGTERM"``).
        resume: what the stop message tells the user to run to continue (a driver that resumes by itself, such
            as ``compare``, says "Run the same command to continue.").
    """

    def __init__(self, every_n_minutes: float | None = 10.0, every_n_steps: int | None = None,
                 dirpath: str | None = None, signals: Sequence[str] = ("SIGTERM", "SIGUSR1", "SIGINT"),
                 resume: str = "Run the same command with --ckpt_path last to continue.") -> None:
        if every_n_minutes is not None:
            check_number("every_n_minutes", every_n_minutes)
        if every_n_steps is not None:
            check_int("every_n_steps", every_n_steps, 1)
        self.every_n_minutes, self.every_n_steps, self.dirpath = every_n_minutes, every_n_steps, dirpath
        self.signals = tuple(_signal_number(s) for s in signals)
        self.resume, self.saves, self._saved_step, self._next_time = str(resume), 0, -1, float("inf")
        self.received: int | None = None
        self.last_path: Path | None = None
        self._trainer: pl.Trainer | None = None
        self._lock: Path | None = None
        self._hold: set[int] | None = None
        self._previous: dict[int, Any] = {}
        self._validating = False

    # ------------------------------------------------------------------ where, and whether
    def path(self, trainer: pl.Trainer) -> Path:
        """``<dirpath or the run's checkpoint directory>/last.ckpt``."""
        from lightning_sdc.runs import LAST, checkpoint_dir

        return Path(self.dirpath) / LAST if self.dirpath is not None else checkpoint_dir(trainer) / LAST

    @staticmethod
    def enabled(trainer: pl.Trainer) -> bool:
        """Checkpointing is on (Lightning adds a ``ModelCheckpoint`` unless ``enable_checkpointing=False``)."""
        return trainer.checkpoint_callback is not None

    def save(self, trainer: pl.Trainer) -> Path | None:
        """Write ``last.ckpt`` now (every rank must call: ``Trainer.save_checkpoint`` is collective)."""
        if not self.enabled(trainer):
            return None
        path = self.path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.last_path, self._saved_step = path, trainer.global_step
        self.saves += 1
        return path

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lightning_sdc.runs import lock_path, lock_run_dir

        path = lock_path(trainer)  # every rank: trainer.log_dir is a collective broadcast under DDP
        if trainer.is_global_zero:
            self._lock = lock_run_dir(path)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer, self.received = trainer, None
        self._saved_step = trainer.global_step  # the state we started from is already on disk (or the init)
        if self.every_n_minutes is not None:
            self._next_time = time.monotonic() + 60.0 * self.every_n_minutes
        self._install()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validating = trainer.state.fn == TrainerFn.FITTING

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validating = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        signalled = self.received is not None or trainer.received_sigterm or stop_signals.received() is not None
        timed = time.monotonic() >= self._next_time
        if trainer.world_size > 1:  # every rank must take the same decision (the save is collective)
            flags = trainer.strategy.reduce(torch.tensor([float(signalled), float(timed)],
                                                         device=pl_module.device), reduce_op="sum")
            signalled, timed = bool(flags[0] > 0), bool(flags[1] > 0)
        stepped = self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0
        if signalled:
            self.stop(trainer)
        if (timed or stepped) and self._saved_step != trainer.global_step:
            self.save(trainer)
        if timed:
            self._next_time = time.monotonic() + 60.0 * self.every_n_minutes

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The final state too: a later ``fit --ckpt_path last --trainer.max_steps <more>`` continues from it."""
        self._restore()
        if self._saved_step != trainer.global_step:
            self.save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        validating = self._validating
        self._restore()
        self._unlock()
        if not isinstance(exception, SIGTERMException):
            if isinstance(exception, Stopped):
                return  # a signal outside the update loop (set-up): there is no finished update to keep
            if self._trainer is not None:  # a failure after updates began (an evaluation, the export, a full
                self._keep_on_failure(trainer, exception, validating)  # disk): keep the updates made so far
            return
        if getattr(exception, "handled", False):
            return
        # Lightning's own SIGTERMException, or ours raised while evaluation networks trained: the last update is
        # complete (Lightning raises it between updates), so its state is what the checkpoint must hold
        signum = getattr(exception, "signum", None) or self.received or stop_signals.received() or signal.SIGTERM
        path = self.last_path if self._saved_step == trainer.global_step else None
        if path is None and trainer.state.fn == TrainerFn.FITTING:
            try:
                path = self.save(trainer)
            except Exception as exc:  # noqa: BLE001 - reported, the signal's exit status still stands
                rank_zero_warn(f"PreemptionCheckpoint: could not write the checkpoint: {exc}")
        if exception.code in (None, 0):
            exception.code = 128 + int(signum)
        self._report(trainer, int(signum), path, requeued=False)
        exception.handled = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
        self._unlock()

    def _unlock(self) -> None:
        from lightning_sdc.runs import unlock_run_dir

        if self._lock is not None:
            unlock_run_dir(self._lock)
            self._lock = None

    def _keep_on_failure(self, trainer: pl.Trainer, exception: BaseException, validating: bool) -> None:
        """Write ``last.ckpt`` of the updates completed before ``exception`` (a method's update is one optimiser
        step, so the state is that of the last completed update) and say how to continue."""
        if trainer.global_step == 0 or not self.enabled(trainer):
            return
        path = self.last_path if self._saved_step == trainer.global_step else None
        if path is None:
            try:
                path = self.save(trainer)
            except Exception as exc:  # noqa: BLE001 - the original error is the one to raise
                rank_zero_warn(f"PreemptionCheckpoint: could not keep the updates made so far: {exc}")
                return
        if trainer.is_global_zero:
            what = "the evaluation after update" if validating else "the run, after update"
            print(f"lightning-sdc: {what} {trainer.global_step} failed ({type(exception).__name__}); checkpoint "
                  f"{path} written: fix the cause and rerun with --ckpt_path last to continue.",
                  file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ stopping
    def stop(self, trainer: pl.Trainer) -> None:
        """Checkpoint the last completed update, requeue under SLURM if asked, raise :class:`Preempted`."""
        signum = self.received or stop_signals.received() or signal.SIGTERM
        path = self.last_path if self._saved_step == trainer.global_step else self.save(trainer)
        requeued = self._requeue(trainer, signum)
        self._report(trainer, signum, path, requeued)
        raise Preempted(signum, trainer.global_step, path, requeued, handled=True)

    def _report(self, trainer: pl.Trainer, signum: int, path: Path | None, requeued: bool) -> None:
        if not trainer.is_global_zero:
            return
        name = signal.Signals(signum).name
        saved = f"checkpoint {path} written" if path else "no checkpoint (checkpointing is disabled)"
        then = "the job was requeued" if requeued else f"exit status {128 + signum}"
        print(f"lightning-sdc: {name} received; stopped after update {trainer.global_step}; {saved}; {then}. "
              f"{self.resume}", file=sys.stderr, flush=True)

    @staticmethod
    def _requeue(trainer: pl.Trainer, signum: int) -> bool:
        """``scontrol requeue <job>`` when SLURM auto-requeue is on and ``signum`` is its requeue signal."""
        from lightning_fabric.plugins.environments import SLURMEnvironment

        # where Lightning's signal connector reads it (a single-device strategy has no cluster_environment)
        env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
        if not (isinstance(env, SLURMEnvironment) and env.auto_requeue and signum == env.requeue_signal):
            return False
        if not trainer.is_global_zero:
            return True
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID", "")
        if not job.replace("_", "").isdigit():
            rank_zero_warn(f"PreemptionCheckpoint: no SLURM job id to requeue (got {job!r})")
            return False
        try:
            result = subprocess.call(["scontrol", "requeue", job])
        except FileNotFoundError:
            result = "scontrol not found"
        if result != 0:
            rank_zero_warn(f"PreemptionCheckpoint: scontrol requeue {job} failed ({result}); the job was not requeued")
        return result == 0

    # ------------------------------------------------------------------ signal handlers
    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum
        previous = self._previous.get(signum)
        if signum == signal.SIGTERM and callable(previous):
            previous(signum, frame)  # Lightning's: sets trainer.received_sigterm, stops launched workers
        if self._validating:  # evaluation networks change no state: stop them now, not minutes later
            trainer = self._trainer
            raise Preempted(signum, trainer.global_step if trainer is not None else -1, None)

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        # under `lightning-sdc`, every stop signal waits for the end of the update (lightning_sdc.signals)
        self._hold = stop_signals.hold_start({*self.signals, *stop_signals.STOP_SIGNALS})
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handler)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handler and previous is not None:
                signal.signal(signum, previous)
        self._previous = {}
        self._validating = False
        if self._hold is not None:
            stop_signals.hold_end(self._hold)
            self._hold = None


__all__ = ["Preempted", "PreemptionCheckpoint"]
