"""Atomic files for the figures: ``.npz`` caches keyed by their parameters, and PNGs.

``lightning_sdc.io.atomic_write`` is not used here because importing ``lightning_sdc.io`` imports torch and
``lightning_sdc.theory`` must run with numpy/scipy/matplotlib alone (design note); the helper below follows
the same protocol (temporary file in the destination directory, fsync, ``os.replace``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_PARAMS_KEY = "__params__"


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> Path:
    """Write ``arrays`` and the JSON of ``params`` (the cache key) to an ``.npz`` file atomically."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[_PARAMS_KEY] = np.array(json.dumps(params, sort_keys=True))
    return atomic_write(path, lambda fh: np.savez(fh, **payload))


def load_arrays(
    path: str | os.PathLike, params: dict[str, Any] | None = None
) -> dict[str, np.ndarray] | None:
    """The arrays cached at ``path`` if it exists and was computed with ``params`` (any, if None).

    Raises:
        ValueError: the file exists but is not a readable cache (names the file).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data[_PARAMS_KEY]))
            arrays = {k: data[k] for k in data.files if k != _PARAMS_KEY}
    except Exception as exc:  # noqa: BLE001 - re-raised with the path
        raise ValueError(f"cannot read figure cache {path}: {type(exc).__name__}: {exc}") from exc
    if params is not None and stored != json.loads(json.dumps(params, sort_keys=True)):
        return None
    return arrays


def cached(
    path: str | os.PathLike, params: dict[str, Any], compute: Callable[[], dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], bool]:
    """Load the cache at ``path`` if its parameters match, else ``compute()`` and save. Returns
    ``(arrays, computed)``."""
    arrays = load_arrays(path, params)
    if arrays is not None:
        return arrays, False
    arrays = compute()
    save_arrays(path, arrays, params)
    return arrays, True


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))
