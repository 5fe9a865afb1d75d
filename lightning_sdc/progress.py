"""Progress bars with an ETA for every long phase (evaluation networks, ``evaluate``, ``experts``, ``coreset``,
``difficulty``, ``theory``), in one place.

A bar is drawn on ``stderr`` with :mod:`tqdm` (elapsed, remaining time and rate), and is silent — the wrapped
iterable is passed through untouched, ``update`` is a no-op — when any of these holds:

* the command runs with ``--quiet`` (``quiet=True`` here, or :func:`quiet_mode` around the call);
* the environment sets ``LIGHTNING_SDC_QUIET`` to a non-empty value other than ``0``;
* ``stderr`` is not a terminal (a batch job's log file, a pipe, pytest's capture), so logs are not filled with
  carriage-return frames.

Usage::

    from lightning_sdc.progress import progress, quiet_mode

    with quiet_mode(quiet):                      # a command's --quiet flag
        for x in progress(items, desc="herding"):
            ...
        with progress(total=n_models * (epochs + 1), desc="ConvNet", unit="epoch") as bar:
            ...; bar.update()

Inside a Lightning run, :func:`trainer_progress_enabled` also honours ``Trainer(enable_progress_bar=False)``.

Deep loops that several commands share (``train_classifier``: Herding's feature network, Forgetting's counting
runs, the difficulty ensemble) call :func:`advance` after each epoch; it moves the innermost bar opened with
:func:`phase` (and does nothing when none is open), so a command sizes one bar for its whole phase without
threading a callback through every signature::

    with phase(total=runs * epochs, desc="forgetting"):
        forgetting_coreset(...)          # train_classifier calls advance() once per epoch
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

ENV_QUIET = "LIGHTNING_SDC_QUIET"

_quiet = False


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Within the block, silence Lightning's banner lines, tips and warnings (the demo prints its own table);
    the loggers' levels and the warning filters are restored afterwards."""
    import lightning_fabric  # noqa: F401  (their import sets the loggers' levels: override after it)
    import pytorch_lightning  # noqa: F401

    names = ("lightning.pytorch", "pytorch_lightning", "lightning.fabric", "lightning_fabric")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        for name in names:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="pytorch_lightning")
        warnings.filterwarnings("ignore", module="lightning_fabric")
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def quiet_mode(quiet: bool = True) -> Iterator[None]:
    """Within the block, bars are silent if ``quiet`` (the previous setting is restored afterwards)."""
    global _quiet
    before = _quiet
    _quiet = before or bool(quiet)
    try:
        yield
    finally:
        _quiet = before


def _stream_is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        return False


def progress_enabled(quiet: bool | None = None) -> bool:
    """Whether a bar would be drawn now (see the module docstring for the rules)."""
    if quiet or _quiet:
        return False
    if os.environ.get(ENV_QUIET, "").strip() not in ("", "0"):
        return False
    return _stream_is_tty(sys.stderr)


def trainer_progress_enabled(trainer: Any) -> bool:
    """:func:`progress_enabled`, the Trainer draws a progress bar (``enable_progress_bar`` is on) and this is
    global rank 0 (one bar per run under DDP, as Lightning's own)."""
    if trainer is None or getattr(trainer, "progress_bar_callback", None) is None:
        return False
    if not getattr(trainer, "is_global_zero", True):
        return False
    return progress_enabled()


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str | None = None,
             unit: str = "it", quiet: bool | None = None, enabled: bool | None = None, leave: bool = False,
             **kwargs: Any) -> tqdm:
    """A :class:`tqdm` bar over ``iterable`` (or with ``total`` for manual ``update``), silent unless
    :func:`progress_enabled` (or ``enabled``, when given, decides instead).

    ``leave=False`` by default: a finished bar is erased, so the command's result is what stays on screen.
    """
    on = progress_enabled(quiet) if enabled is None else bool(enabled) and progress_enabled(quiet)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not on, file=sys.stderr,
                dynamic_ncols=True, **kwargs)


def update_callback(bar: tqdm) -> Any:
    """A Lightning callback that moves ``bar`` by one after every training batch (one synthetic-set update)."""
    import pytorch_lightning as pl

    class _Updates(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            bar.update()

    return _Updates()


_phases: list[tqdm] = []


@contextlib.contextmanager
def phase(total: float | None, desc: str, *, unit: str = "epoch", quiet: bool | None = None) -> Iterator[tqdm]:
    """A :func:`progress` bar that :func:`advance` moves while the block runs (innermost phase wins)."""
    with progress(total=total, desc=desc, unit=unit, quiet=quiet) as bar:
        _phases.append(bar)
        try:
            yield bar
        finally:
            _phases.remove(bar)


def advance(n: int = 1) -> None:
    """Move the innermost open :func:`phase` bar by ``n`` (a no-op outside any phase: cheap in inner loops)."""
    if _phases:
        _phases[-1].update(n)


__all__ = ["ENV_QUIET", "advance", "phase", "progress", "progress_enabled", "quiet_lightning", "quiet_mode",
           "trainer_progress_enabled", "update_callback"]
