"""Sweeps of the saddle-point solutions over alpha, and the hard-vs-easy crossover.

Used by the figures, the CLI, the notebook and the tests, so that each draws the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize

from lightning_sdc.checks import check_number

from .imperfect import ImperfectSolution, solve_imperfect
from .perfect import solve_perfect
from .validation import check_mode


def _sweep(alphas: Sequence[float], solve: Any) -> list:
    """``solve(alpha, previous)`` along ``alphas`` (any order), solved in increasing alpha, each solve warm-started
    from the previous solution; the solutions in the order of ``alphas``."""
    alphas = np.asarray(alphas, dtype=float)
    out: list = [None] * len(alphas)
    prev = None
    for i in np.argsort(alphas):
        out[i] = prev = solve(float(alphas[i]), prev)
    return out


def perfect_curve(alphas: Sequence[float], f: float, mode: str) -> np.ndarray:
    """Test errors ``eps(alpha)`` of the perfect-probe theory along ``alphas`` (see ``solve_perfect``)."""
    return np.array([p.eps for p in _sweep(alphas, lambda a, prev: solve_perfect(a, f, mode, initial=prev))])


def imperfect_curve(
    alphas: Sequence[float], f: float, mode: str, angle_deg: float
) -> list[ImperfectSolution]:
    """Imperfect-probe solutions along ``alphas`` (:func:`solve_imperfect` falls back to angle continuation when
    a warm start fails)."""
    return _sweep(alphas, lambda a, prev: solve_imperfect(a, f, mode, angle_deg, initial=prev))


def _solve_near(alpha: float, f: float, mode: str, angle_deg: float, near: Any) -> Any:
    if angle_deg == 0.0:
        return solve_perfect(alpha, f, mode, initial=near)
    return solve_imperfect(alpha, f, mode, angle_deg, initial=near)


def crossover_alpha(
    f: float,
    mode_a: str = "easy",
    mode_b: str = "hard",
    angle_deg: float = 0.0,
    alpha_range: tuple[float, float] = (0.05, 1000.0),
) -> float:
    """The alpha (kept examples per dimension, the paper's alpha_syn) where ``eps_b - eps_a`` changes sign.

    With the defaults this is the paper's crossover (Sec. 3.2, Fig. 4(b,c)): below it keeping the easy
    examples gives the lower test error, above it keeping the hard ones. The equivalent total data per
    dimension is ``alpha / f`` (Sorscher's alpha_tot). The first sign change on a 25-point log grid over
    ``alpha_range`` is refined by Brent's method in ``log alpha`` (solves warm-started from the grid).

    Raises:
        ValueError: bad arguments, or no sign change in ``alpha_range`` (the message gives both ends).
    """
    f, angle_deg = check_number("f", f, at_most=1), check_number("angle_deg", angle_deg, strict=False, below=90)
    mode_a, mode_b = check_mode(mode_a), check_mode(mode_b)
    lo, hi = (check_number("alpha_range end", a) for a in alpha_range)
    if f == 1.0 or mode_a == mode_b:
        raise ValueError(f"no crossover: with f={f}, modes {mode_a!r} and {mode_b!r} give the same error")
    grid = np.geomspace(lo, hi, 25)
    sols_a, sols_b = (_sweep(grid, lambda a, prev, m=m: _solve_near(a, f, m, angle_deg, prev)) for m in (mode_a, mode_b))
    diff = np.array([b.eps - a.eps for a, b in zip(sols_a, sols_b)])
    change = np.nonzero(np.sign(diff[:-1]) != np.sign(diff[1:]))[0]
    if change.size == 0:
        raise ValueError(
            f"eps_{mode_b} - eps_{mode_a} does not change sign for alpha in [{lo}, {hi}] "
            f"(f={f}, angle={angle_deg} deg): {diff[0]:.3g} at {lo}, {diff[-1]:.3g} at {hi}"
        )
    i = int(change[0])

    def gap(log_alpha: float) -> float:
        a = math.exp(log_alpha)
        return (
            _solve_near(a, f, mode_b, angle_deg, sols_b[i]).eps
            - _solve_near(a, f, mode_a, angle_deg, sols_a[i]).eps
        )

    return math.exp(optimize.brentq(gap, math.log(grid[i]), math.log(grid[i + 1]), xtol=1e-12, rtol=1e-12))
