"""Finite-d simulation of the teacher-probe-student experiment (the dots of Fig. 4(a) and Fig. 15).

Recipe (paper Sec. 3.2 steps 1-4 with a planted probe):
a unit teacher ``T`` labels ``x ~ N(0, I_d)`` by ``y = sign(T.x)``; a probe at angle theta to the teacher
(``cos theta T + sin theta u``, u a random unit vector orthogonal to T; perfect probe: theta = 0) ranks the
examples by ``|z|``, ``z = probe.x``; the ``k = round(alpha d)`` kept examples are the smallest |z| (hard),
the largest |z| (easy) or a random subset (none) of ``round(k / f)`` drawn ones; the student is the
bias-free maximum-margin separator of the kept set and ``eps = arccos(R)/pi``. Pruning uses |z| (as the
paper's appendix and Sorscher et al.), not the signed margin of the paper's Sec. 3.2 step 2; with a perfect
probe the two coincide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from lightning_sdc.checks import check_number

from .validation import check_mode


@dataclass(frozen=True)
class SimulationResult:
    """Mean and standard error over repeats of the simulated student.

    Attributes:
        eps, eps_sem: test error ``arccos(R)/pi`` and its standard error of the mean.
        R, kappa, rho: mean student-teacher cosine, max margin (unit student), student-probe cosine.
        alpha, f, mode, angle_deg, d, repeats: the experiment.
    """

    eps: float
    eps_sem: float
    R: float
    kappa: float
    rho: float
    alpha: float
    f: float
    mode: str
    angle_deg: float
    d: int
    repeats: int


def make_probe(teacher: np.ndarray, angle_rad: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at ``angle_rad`` from the unit ``teacher``: ``cos a T + sin a u``, u uniform on the
    unit sphere orthogonal to T (paper App. 4: 'a random Gaussian vector conditioned to have angle gamma')."""
    if angle_rad == 0.0:
        return teacher.copy()
    u = rng.standard_normal(teacher.shape[0])
    u -= (u @ teacher) * teacher
    u /= np.linalg.norm(u)
    return math.cos(angle_rad) * teacher + math.sin(angle_rad) * u


def max_margin(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact bias-free maximum-margin separator ``w/|w|`` and its margin ``min_i y_i x_i.w/|w|``.

    The hard-margin SVM without intercept is the least-distance program ``min |w| s.t. G w >= 1`` with
    ``G = y x^T``; Lawson & Hanson (1974, ch. 23) reduce it to the NNLS problem
    ``u = argmin_{u >= 0} |E u - e|``, ``E = [G^T; 1^T]``, ``e = (0, ..., 0, 1)``: with ``r = E u - e``,
    ``w = -r[:d] / r[d]``, and ``r = 0`` exactly when the constraints are infeasible (not separable).

    Raises:
        ValueError: the labelled set is not linearly separable through the origin (names n, d).
    """
    n, d = X.shape
    G = y[:, None] * X
    E = np.vstack([G.T, np.ones((1, n))])
    e = np.zeros(d + 1)
    e[-1] = 1.0
    u, rnorm = nnls(E, e, maxiter=50 * max(n, d + 1))
    r = E @ u - e
    margins = None
    if rnorm > 1e-9 and r[-1] < 0:
        w = -r[:d] / r[-1]
        margins = G @ w
    if margins is None or margins.min() < 1 - 1e-6:
        raise ValueError(
            f"the set of n={n} examples in d={d} is not linearly separable through the origin "
            f"(least-distance residual {rnorm:.3g}); a max-margin student does not exist"
        )
    norm = float(np.linalg.norm(w))
    return w / norm, float(margins.min()) / norm


def _keep(z: np.ndarray, k: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    if mode == "none":
        return rng.permutation(z.shape[0])[:k]
    order = np.argsort(np.abs(z), kind="stable")
    return order[:k] if mode == "hard" else order[z.shape[0] - k :]


def simulate(
    alpha: float, f: float, mode: str, angle_deg: float = 0.0, d: int = 200, repeats: int = 100, seed: int = 0
) -> SimulationResult:
    """Run the teacher-probe-student experiment ``repeats`` times; return mean eps and its standard error.

    Args:
        alpha: kept (synthetic) examples per dimension; ``k = round(alpha d)`` are kept out of
            ``round(k / f)`` drawn. f: kept fraction in (0, 1]. mode: ``none | hard | easy``.
        angle_deg: probe-teacher angle in [0, 90). d: input dimension. repeats: independent runs (>= 2).
        seed: root of a ``numpy.random.SeedSequence``; repeat i uses its i-th child (reproducible).

    Raises:
        ValueError: bad arguments, or a non-separable kept set (names the point).
    """
    alpha, f, mode, angle_deg = (
        check_number("alpha", alpha), check_number("f", f, at_most=1), check_mode(mode),
        check_number("angle_deg", angle_deg, strict=False, below=90))
    if int(d) != d or d < 2:
        raise ValueError(f"dimension d={d!r} must be an integer >= 2")
    if int(repeats) != repeats or repeats < 2:
        raise ValueError(f"repeats={repeats!r} must be an integer >= 2 (a standard error needs two runs)")
    d, repeats = int(d), int(repeats)
    k = int(round(alpha * d))
    if k < 1:
        raise ValueError(f"alpha={alpha} with d={d} keeps no example; need alpha * d >= 0.5")
    n_total = max(k, int(round(k / f)))
    theta = math.radians(angle_deg)
    eps, R, kappa, rho = (np.empty(repeats) for _ in range(4))
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(repeats)):
        rng = np.random.default_rng(child)
        teacher = rng.standard_normal(d)
        teacher /= np.linalg.norm(teacher)
        probe = make_probe(teacher, theta, rng)
        X = rng.standard_normal((n_total, d))
        y = np.where(X @ teacher >= 0, 1.0, -1.0)
        kept = _keep(X @ probe, k, mode, rng)
        try:
            w, kappa[i] = max_margin(X[kept], y[kept])
        except ValueError as exc:
            raise ValueError(
                f"simulation alpha={alpha}, f={f}, mode={mode!r}, angle={angle_deg}, d={d}, repeat {i}: {exc}"
            ) from exc
        R[i], rho[i] = w @ teacher, w @ probe
        eps[i] = math.acos(min(1.0, R[i])) / math.pi
    return SimulationResult(float(eps.mean()), float(eps.std(ddof=1) / math.sqrt(repeats)), float(R.mean()),
                            float(kappa.mean()), float(rho.mean()), alpha, f, mode, angle_deg, d, repeats)
