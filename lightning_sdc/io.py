"""Atomic writes and safe, self-naming loads for every file this package produces.

A full disk is reported as ``OSError(ENOSPC)`` naming the destination file (``[Errno 28] No space left on device:
'…/synset.pt'``), not as torch's ``unexpected pos 128 vs 0`` / ``basic_ios::clear``: :func:`atomic_torch_save`
hands ``torch.save`` a Python file object (whose failed ``write`` raises the real ``OSError``) and
:func:`atomic_write` renames any write error on a filesystem left with no free block to ENOSPC.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    """``0o666`` less the process umask: what ``open(path, "w")`` would give (``mkstemp`` makes 0600 files)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file lives in the destination directory (same filesystem, so ``os.replace`` is atomic);
    if ``write`` raises, the temporary file is removed and any previous file at ``path`` is untouched. The file
    gets the permissions a plain ``open`` would give (umask applied), not ``mkstemp``'s owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        full = _disk_full(exc, path.parent)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            code = exc.errno if isinstance(exc, OSError) and exc.errno in _FULL else errno.ENOSPC
            raise OSError(code, os.strerror(code), str(path)) from exc
        raise
    return path


#: errno values of a full filesystem (no space, quota exceeded)
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(exc: BaseException, directory: Path) -> bool:
    """``exc`` (raised while writing into ``directory``) came from a full filesystem: an ENOSPC/EDQUOT
    ``OSError``, or another write error (torch's C++ writer says ``unexpected pos``) with no block left free."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return False
    return st.f_bavail == 0


def _torch_save(obj: Any, tmp: str) -> None:
    """``torch.save`` into a Python file object: a failed write raises ``OSError`` (not a torch ``RuntimeError``)."""
    import torch

    with open(tmp, "wb") as fh:
        torch.save(obj, fh)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: _torch_save(obj, tmp))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically."""

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, _write)


#: the suffixes an ``--out`` stem may already carry (``--out table.md`` writes ``table.md`` and ``table.csv``)
OUTPUT_SUFFIXES = (".md", ".csv", ".png", ".npz", ".json", ".pt")


def beside(stem: str | os.PathLike, suffix: str) -> Path:
    """``<stem><suffix>``: the stem's own output suffix is replaced, any other dot is part of the name
    (``--out runs/lambda0.01`` writes ``lambda0.01.md``, not ``lambda0.md``)."""
    stem = Path(stem)
    return stem.with_suffix(suffix) if stem.suffix in OUTPUT_SUFFIXES else stem.with_name(stem.name + suffix)


def safe_torch_load(path: str | os.PathLike, *, mmap: bool = False, what: str = "file", map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` whose errors name the file (a truncated zip otherwise does not)."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"cannot read {what} {path}: corrupt or truncated ({type(exc).__name__}: {exc})") from exc


def prepare_output_dir(path: str | os.PathLike, what: str = "out") -> Path:
    """Create the output directory ``path`` now (before any compute) and check it can be written.

    One-line errors: ``path`` is an existing file, lies under a file, or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what}={str(path)!r} is an existing file; allowed: a directory (new or existing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what}={str(path)!r} cannot be created as a directory: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{what}={str(path)!r} is not writable")
    return path


def prepare_output_file(path: str | os.PathLike, what: str = "out") -> Path:
    """Check, before any compute, that the file ``path`` can be written: not a directory, not under a file, its
    directory created now and writable (a read-only filesystem included). One-line errors naming ``what``."""
    path = Path(path)
    under = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    problem = "is a directory" if path.is_dir() else (f"lies under the file {str(under)!r}" if under else None)
    try:
        if problem is None:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = f"cannot be created: {exc.strerror or exc}"
    if problem is None and not os.access(path if path.exists() else path.parent, os.W_OK):
        problem = "is not writable"
    if problem:
        raise ValueError(f"{what}={str(path)!r} {problem}; allowed: a file path in a writable directory")
    return path
