"""Argument checks shared by the solvers, the simulator and the figure code (raised before any compute)."""

from __future__ import annotations

MODES = ("none", "hard", "easy")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of ``none | hard | easy``."""
    if mode not in MODES:
        raise ValueError(f"unknown pruning mode {mode!r}; allowed: {' | '.join(MODES)}")
    return mode


class SaddlePointError(RuntimeError):
    """The saddle-point equations could not be solved to the required accuracy at a named point."""
