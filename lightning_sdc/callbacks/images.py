"""Showing and exporting the synthetic set: ``SyntheticImageLogger`` and ``SyntheticSetExporter``.

Both draw the set with :func:`lightning_sdc.figures.grid_image` (pixels: inverse ZCA, then un-normalised; one row
per class, class names at the row starts, upscaled) and send it to every logger that takes images
(TensorBoard's ``add_image``, tag ``synthetic/images``).

* ``SyntheticImageLogger``: every ``every_n_steps`` updates the grid goes to the image loggers; when there is
  none, it is written as a PNG under ``<log dir>/images/``. At the end of ``fit`` a final PNG is written.
* ``SyntheticSetExporter`` (which ``lightning-sdc fit`` always adds): at the end of ``fit`` the set is written in
  this package's format (:meth:`SyntheticSet.save`, which ``lightning-sdc evaluate`` reads) with its PNG grid,
  and in the ``images_<suffix>.pt`` / ``labels_<suffix>.pt`` / ``lr_<suffix>.pt`` layout of MTT/DATM and
  DD-Ranking (:meth:`SyntheticSet.export_tm`); the final grid goes to the image loggers.

Both take the method's evaluated set (``eval_synset()``: FTD's EMA, the set itself otherwise) and never write
a set holding NaN/inf: they warn and write nothing instead (the last good files stay). The exporter writes every
file into a staging folder first and moves them into place only when all are written
(:func:`write_all_or_nothing`): a full disk leaves the previous export whole and says which file did not fit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from lightning_sdc.callbacks.common import evaluated_set, image_writers, output_dir
from lightning_sdc.checks import check_int
from lightning_sdc.figures import grid_image, save_grid

FORMATS = ("lightning_sdc", "tm")
TAG = "synthetic/images"


def finite_set(trainer: pl.Trainer, pl_module: pl.LightningModule, who: str) -> Any:
    """The evaluated set, or ``None`` (with a warning naming ``who`` and the step) when it holds NaN/inf."""
    synset = evaluated_set(pl_module)
    if synset.is_finite():
        return synset
    rank_zero_warn(f"{who}: the synthetic set is not finite at step {trainer.global_step}; nothing written")
    return None


def log_grid(trainer: pl.Trainer, synset: Any, tag: str = TAG) -> bool:
    """Send the set's grid (HWC uint8) to every image logger of ``trainer``; whether there was one."""
    writers = image_writers(trainer)
    if writers:
        grid = np.asarray(grid_image([("", synset.pixels())], synset.class_names))
        for w in writers:
            w.add_image(tag, grid, global_step=int(trainer.global_step), dataformats="HWC")
    return bool(writers)


class SyntheticImageLogger(pl.Callback):
    """Log the synthetic image grid every ``every_n_steps`` updates and write a final PNG.

    Args:
        every_n_steps: logging period in synthetic-set updates.
        dirpath: where PNG files go (default: the log directory; step grids under ``images/``).
        tag: the image tag for TensorBoard.
        final: write ``synthetic_final.png`` at the end of ``fit``.
    """

    def __init__(self, every_n_steps: int = 100, dirpath: str | None = None, tag: str = TAG,
                 final: bool = True) -> None:
        self.every_n_steps = check_int("every_n_steps", every_n_steps, 1)
        self.dirpath, self.tag, self.final = dirpath, tag, bool(final)
        self.written: list[Path] = []

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str | None) -> None:
        out = output_dir(trainer, self.dirpath)  # collective under DDP: every rank calls it
        if not trainer.is_global_zero or (synset := finite_set(trainer, pl_module, type(self).__name__)) is None:
            return
        if name is None:  # a periodic grid: to the image loggers, else a PNG
            if log_grid(trainer, synset, self.tag):
                return
            name = f"images/synthetic_step{int(trainer.global_step):06d}.png"
        self.written.append(save_grid(out / name, [("", synset.pixels())], synset.class_names))

    def log_images(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Send the current grid to the image loggers, or write it as a PNG when there are none."""
        self._write(trainer, pl_module, None)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.log_images(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.final:
            self._write(trainer, pl_module, "synthetic_final.png")


def write_all_or_nothing(out: Path, write: Callable[[Path], list[Path]]) -> list[Path]:
    """``write(staging)`` into a fresh directory inside ``out``, then move every file into ``out``, in order.

    Every byte is written (and fsynced) before any file in ``out`` changes, so a full disk or a crash while
    writing leaves the previous export whole (never a ``synset.pt`` without its ``images_best.pt``); only the
    renames, which need no space, remain. A write error names the destination file, not the staging copy.
    """
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        try:
            written = write(staging)
        except OSError as exc:
            if exc.filename and Path(exc.filename).parent == staging:
                raise OSError(exc.errno, exc.strerror, str(out / Path(exc.filename).name)) from exc
            raise
        final = []
        for path in written:
            target = out / path.name
            os.replace(path, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class SyntheticSetExporter(pl.Callback):
    """Write the final synthetic set at the end of ``fit`` (see the module docstring).

    Args:
        dirpath: output directory (default: ``<log dir>/synthetic``).
        filename: stem of this package's file (``<filename>.pt``, plus ``<filename>.png`` with ``png``).
        formats: any of ``"lightning_sdc"`` (:meth:`SyntheticSet.save`) and ``"tm"``
            (:meth:`SyntheticSet.export_tm`).
        tm_suffix: the suffix of the ``images_<suffix>.pt`` files (MTT/DATM use ``best``).
        png: also write the image grid next to the ``.pt`` file.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "synset",
        formats: tuple[str, ...] | list[str] = FORMATS,
        tm_suffix: str = "best",
        png: bool = True,
    ) -> None:
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise ValueError(
                f"formats {list(formats)} are not allowed; allowed: a non-empty subset of "
                f"{', '.join(FORMATS)}"
            )
        if not filename or "/" in filename:
            raise ValueError(f"filename must be a plain file stem, got {filename!r}")
        self.dirpath, self.filename, self.formats = dirpath, filename, tuple(formats)
        self.tm_suffix, self.png = tm_suffix, bool(png)
        self.paths: list[Path] = []

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[Path]:
        """Write the evaluated set in every requested format (nothing, with a warning, if it is not
        finite)."""
        out = (
            output_dir(trainer, self.dirpath)
            if self.dirpath is not None
            else output_dir(trainer) / "synthetic"
        )
        if not trainer.is_global_zero or (synset := finite_set(trainer, pl_module, type(self).__name__)) is None:
            return []
        self.paths = write_all_or_nothing(out, lambda d: self._write(synset, d))
        log_grid(trainer, synset)
        return self.paths

    def _write(self, synset: Any, directory: Path) -> list[Path]:
        paths = []
        if "tm" in self.formats:
            paths.extend(synset.export_tm(directory, self.tm_suffix))
        if "lightning_sdc" in self.formats:
            pt = directory / f"{self.filename}.pt"
            paths.append(synset.save(pt))
            if self.png:
                paths.append(save_grid(pt.with_suffix(".png"), [("", synset.pixels())], synset.class_names))
        return paths

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._exported = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.export(trainer, pl_module)
        self._exported = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A run resumed at its last update (its export had failed, e.g. on a full disk) trains nothing, and
        Lightning then skips ``on_train_end``: export here."""
        max_steps = trainer.max_steps
        if not getattr(self, "_exported", True) and max_steps not in (None, -1) and trainer.global_step >= max_steps:
            self.export(trainer, pl_module)
            self._exported = True
