"""Atomic files for the figures: ``.npz`` caches keyed by their parameters, and PNGs
(:func:`lightning_sdc.io.atomic_write`, which imports no torch)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lightning_sdc.io import atomic_write

_PARAMS_KEY = "__params__"


def _to_file(write: Callable[[Any], None]) -> Callable[[str], None]:
    """``write(binary_file)`` as the ``write(tmp_path)`` of :func:`atomic_write`."""
    def call(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    return call


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> Path:
    """Write ``arrays`` and the JSON of ``params`` (the cache key) to an ``.npz`` file atomically."""
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[_PARAMS_KEY] = np.array(json.dumps(params, sort_keys=True))
    return atomic_write(path, _to_file(lambda fh: np.savez(fh, **payload)))


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
