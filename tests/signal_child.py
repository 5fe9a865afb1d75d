"""A ``lightning-sdc`` command in a child process that parks inside its long phase until a signal arrives.

``python -m tests.signal_child MARKER TARGET N ARGS...`` runs ``lightning-sdc ARGS...`` with the callable
``TARGET`` (``module:Class.method`` or ``module:function``) wrapped: its ``N``-th call (1-based) writes ``MARKER``
and then sleeps in short naps (up to 300 s, or until a signal that :func:`lightning_sdc.signals.hold` holds, as the
``fit`` loop does, has arrived), so a test can signal the command in the middle of a unit of work knowing the units
before it are finished. A run that finds ``MARKER`` already written (the
resumed run) does not park. ``N = 0``: never park (a resumed run checked for its result).
"""

from __future__ import annotations

import functools
import importlib
import sys
import time
from pathlib import Path
from typing import Any


def _wrap(target: str, nth: int, marker: Path) -> None:
    module_name, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = qualname.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    func = original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
    calls = [0]

    @functools.wraps(func)
    def parked(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth and not marker.exists():
            marker.write_text(str(nth))
            from lightning_sdc import signals

            deadline = time.monotonic() + 300.0
            while time.monotonic() < deadline and signals.received() is None:  # held (a fit update): go on
                time.sleep(0.02)
        return func(*args, **kwargs)

    wrapped: Any = parked
    if isinstance(original, staticmethod):
        wrapped = staticmethod(parked)
    elif isinstance(original, classmethod):
        wrapped = classmethod(parked)
    setattr(owner, name, wrapped)


def main(argv: list[str]) -> None:
    marker, target, nth, *args = argv
    if int(nth) > 0:
        _wrap(target, int(nth), Path(marker))
    from lightning_sdc.cli import main as cli_main

    cli_main(args)


if __name__ == "__main__":
    main(sys.argv[1:])
