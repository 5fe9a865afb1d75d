"""Argument checks shared by the solvers, the simulator and the figure code (raised before any compute)."""

from __future__ import annotations

import math

MODES = ("none", "hard", "easy")


def check_fraction(f: float) -> float:
    """Return ``f`` as a float if it lies in (0, 1], else raise ``ValueError`` naming it."""
    f = float(f)
    if not (0.0 < f <= 1.0) or math.isnan(f):
        raise ValueError(f"fraction kept f={f!r} must lie in (0, 1]")
    return f


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return ``alpha`` (examples per dimension) if it is finite and > 0."""
    alpha = float(alpha)
    if not (alpha > 0.0) or not math.isfinite(alpha):
        raise ValueError(f"{name}={alpha!r} must be a finite number > 0")
    return alpha


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of ``none | hard | easy``."""
    if mode not in MODES:
        raise ValueError(f"unknown pruning mode {mode!r}; allowed: {' | '.join(MODES)}")
    return mode


def check_angle(angle_deg: float) -> float:
    """Return the probe-teacher angle in degrees if it lies in [0, 90)."""
    angle_deg = float(angle_deg)
    if not (0.0 <= angle_deg < 90.0):
        raise ValueError(f"probe angle {angle_deg!r} deg must lie in [0, 90) degrees")
    return angle_deg


class SaddlePointError(RuntimeError):
    """The saddle-point equations could not be solved to the required accuracy at a named point."""
