"""How every ``lightning-sdc`` command stops on SIGTERM, SIGUSR1 and SIGINT (Ctrl-C), in one place.

:func:`stop_on_signals` (around every subcommand, :func:`lightning_sdc.cli.run`) installs one handler that
abandons the unit in progress by raising :class:`Stopped` (exit status ``128 + signal``: files are written
atomically, so every finished unit is whole on disk and the same command resumes from it), terminates the worker
processes this process started (workers of :func:`lightning_sdc.fabric_jobs.launch` also die with their parent:
:func:`die_with_parent`) and prints one line naming the signal and what to do next. A unit that must not be cut
(a checkpoint, a finished row) runs under :func:`hold`: a signal arriving inside it is acted on when it ends;
``fit``'s :class:`~lightning_sdc.callbacks.PreemptionCheckpoint` holds the signals while updates run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

#: the signals every command stops on
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))
#: seconds a stopped command waits for its workers to end after SIGTERM before it sends SIGKILL
WORKER_GRACE_S = 5.0


class Stopped(SystemExit):
    """A command stopped by a signal; ``code`` is the exit status ``128 + signum``."""

    def __init__(self, signum: int, reported: bool = False) -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.reported = reported  # the one-line report is printed already


class _State:
    def __init__(self) -> None:
        self.received: int | None = None
        self.command: str | None = None
        self.held: list[set[int]] = []  # one entry per open hold(): the signals it holds

    def holding(self, signum: int) -> bool:
        return any(signum in held for held in self.held)


_state = _State()


def received() -> int | None:
    """The stop signal this process received (``None``: none yet)."""
    return _state.received


def check() -> None:
    """Raise :class:`Stopped` if a stop signal has arrived and no :func:`hold` holds it (for loops that poll)."""
    signum = _state.received
    if signum is not None and not _state.holding(signum):
        raise Stopped(signum)


def _handler(signum: int, frame: Any) -> None:
    first = _state.received is None
    _state.received = signum
    if _state.holding(signum):
        return  # acted on where the hold ends
    if first:
        terminate_workers(signal.SIGTERM)
    raise Stopped(signum)


@contextlib.contextmanager
def hold(signums: Iterable[int] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block a stop signal is only recorded; when the block ends (normally) :class:`Stopped` is raised
    for it. Works (records nothing) where :func:`stop_on_signals` is not installed."""
    held = {int(s) for s in signums}
    _state.held.append(held)
    try:
        yield
    finally:
        _state.held.remove(held)
    if _state.received is not None and _state.received in held and _state.command is not None:
        check()


def hold_start(signums: Iterable[int] = STOP_SIGNALS) -> set[int]:
    """Start holding ``signums`` across callbacks (a Lightning callback's ``on_train_start``); returns the token
    :func:`hold_end` takes. Unlike :func:`hold` it raises nothing at the end: the holder acts on the signal."""
    held = {int(s) for s in signums}
    _state.held.append(held)
    return held


def hold_end(token: set[int]) -> None:
    """End the hold :func:`hold_start` returned (no error if it ended already)."""
    with contextlib.suppress(ValueError):
        _state.held.remove(token)


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, parent pid, …); ``[]`` if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().decode(errors="replace").rsplit(")", 1)[-1].split()
    except OSError:
        return []


def _children() -> list[int]:
    """Process ids of this process's children (``/proc`` and multiprocessing's), less its resource tracker."""
    import multiprocessing
    from multiprocessing import resource_tracker

    me, tracker = os.getpid(), getattr(resource_tracker._resource_tracker, "_pid", None)
    kids = {p.pid for p in multiprocessing.active_children() if p.pid}
    kids |= {int(e) for e in (os.listdir("/proc") if os.path.isdir("/proc") else ())
             if e.isdigit() and _stat(e)[1:2] == [str(me)]}
    return sorted(kids - {tracker, me})


def terminate_workers(signum: int = signal.SIGTERM) -> list[int]:
    """Send ``signum`` to every child process of this one; returns their ids."""
    kids = _children()
    for pid in kids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    return kids


def _alive(pid: int) -> bool:
    """``pid`` still runs (a zombie, ended but not yet reaped by its owner, does not)."""
    if os.path.isdir("/proc"):
        return _stat(pid)[:1] not in ([], ["Z"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _stop_workers(pids: Iterable[int], grace_s: float) -> None:
    """Wait up to ``grace_s`` for ``pids`` (sent SIGTERM) to end, then SIGKILL those still running. They are not
    reaped here: ``multiprocessing``/``subprocess`` objects that own them still can."""
    pending = set(pids)
    deadline = time.monotonic() + grace_s
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if _alive(pid)}
        if pending:
            time.sleep(0.05)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def report(command: str, signum: int) -> str:
    """The one line a stopped command prints."""
    name = signal.Signals(signum).name
    return (f"lightning-sdc {command}: {name} received; stopped (exit status {128 + signum}). Files already "
            "written are kept; run the same command again to continue from them.")


@contextlib.contextmanager
def stop_on_signals(command: str) -> Iterator[None]:
    """Run a command so that SIGTERM, SIGUSR1 and SIGINT stop it as the module docstring says.

    Outside the main thread (where Python cannot install handlers) the block runs unchanged. Nested use (a
    command that runs another in-process) keeps the outer installation.
    """
    if threading.current_thread() is not threading.main_thread() or _state.command is not None:
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _state.received, _state.command = None, command
    for s in STOP_SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    except BaseException as exc:
        signum = getattr(exc, "signum", None) or _state.received
        if signum is None:
            raise
        # a signal ended the command: ours, Lightning's own SIGTERMException, or an error it caused (a worker it
        # terminated); what the command finished is on disk
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
        _stop_workers(terminate_workers(signal.SIGTERM), WORKER_GRACE_S)
        if not getattr(exc, "reported", False) and not getattr(exc, "handled", False):
            print(report(command, signum), file=sys.stderr, flush=True)
        if isinstance(exc, Stopped) and exc.code == 128 + signum:
            exc.reported = True
            raise
        raise Stopped(signum, reported=True) from None
    finally:
        _state.command = None
        for s, handler in previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent ends (Linux ``PR_SET_PDEATHSIG``), so a
    worker never outlives a parent killed without warning (SIGKILL). Returns whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(signum), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:  # the parent died before the request: act now
        os.kill(os.getpid(), signum)
    return True

