"""Perfect probe (angle 0): saddle-point equations for the max-margin student and their solution.

Derivation followed: a re-derivation of Sorscher et
al. (NeurIPS 2022, App. A) and the paper's App. 4.1 from the replica-symmetric Gardner volume in the
max-margin limit (q -> 1). The free energy is governed by the *energy*

    E(R, kappa) = alpha <int Dx (kappa - R|z| - sqrt(1-R^2) x)_+^2>_z - (1 - R^2),

and the saddle point is ``E = 0`` (largest margin with a non-empty version space) together with
``dE/dR = 0``. Integrating the teacher field out analytically gives the closed forms printed in both papers:

    R       = 2 alpha / (f sqrt(2 pi) sqrt(1-R^2)) int_{-inf}^{kappa} Dt W(t) (kappa - t)
    1 - R^2 = 2 alpha / f                          int_{-inf}^{kappa} Dt V(t) (kappa - t)^2

with ``W, V`` per pruning mode (reference table A.3). Notation: ``alpha`` is the number of *kept*
(synthetic) examples per dimension (the paper's alpha_syn, Sorscher's alpha_prune); ``f`` the kept fraction.
Seed typesetting issue handled here: App. 4.1 writes gamma for the keep-hard *threshold on |z|* (elsewhere
gamma is the probe angle); read literally with gamma = 0 the equations give R = 0. We use
``z_th = Phi^-1((1+f)/2)`` and add the keep-easy and unpruned rows that App. 4.1 omits. Mode ``none``
keeps a random subset; its kept distribution is the full Gaussian, so the theory does not depend on f.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import integrate, optimize

from lightning_sdc.checks import check_number

from .quadrature import GAUSS_CUT, gaussian_H, gaussian_phi, panel_rule, z_threshold
from .validation import SaddlePointError, check_mode

#: residual tolerance every returned solution satisfies (absolute, both equations)
RESIDUAL_TOL = 1e-10
_EPS_MIN, _EPS_MAX = 1e-9, 0.5 - 1e-6


@dataclass(frozen=True)
class PerfectSolution:
    """Order parameters of the max-margin student trained on a set pruned with a perfect probe.

    Attributes:
        alpha, f, mode: the point solved (alpha = kept examples per dimension).
        R: student-teacher cosine. kappa: typical max margin. eps: test error ``arccos(R)/pi`` (seed eq. 8).
        residuals: the two saddle-point residuals (closed form) at the solution.
    """

    alpha: float
    f: float
    mode: str
    R: float
    kappa: float
    eps: float
    residuals: tuple[float, float] = field(default=(0.0, 0.0))


def _normalizer(f: float, mode: str) -> float:
    return 1.0 if mode == "none" else f


def closed_form_integrals(R: float, s: float, kappa: float, f: float, mode: str) -> tuple[float, float]:
    """Right-hand sides of the closed-form equations per unit alpha: ``(A, B)`` with ``R = alpha A``,
    ``1 - R^2 = alpha B`` (reference A.3 table; paper App. 4.1 with gamma read as ``z_th``).

    ``s = sqrt(1 - R^2)`` is passed separately so that it stays accurate when R is within 1e-12 of 1.
    """
    z_th = z_threshold(f, mode)
    hi = min(kappa, GAUSS_CUT)
    feats = [(0.0, s), (0.0, s / R)]
    if mode != "none" and math.isfinite(z_th):
        feats += [(R * z_th, s), (z_th / R, s / R)]
    t, w = panel_rule(-GAUSS_CUT, max(hi, -GAUSS_CUT), feats, n_uniform=12, order=12)
    dt = gaussian_phi(t) * w
    gap = kappa - t
    if mode == "easy":
        W = np.exp(-((z_th - R * t) ** 2) / (2 * s * s))
        V = gaussian_H((z_th - R * t) / s)
    else:
        W = np.exp(-((R * t) ** 2) / (2 * s * s))
        V = gaussian_H(-R * t / s)
        if mode == "hard" and math.isfinite(z_th):
            W = W - np.exp(-((R * t - z_th) ** 2) / (2 * s * s))
            V = V - gaussian_H((z_th - R * t) / s)
    norm = _normalizer(f, mode)
    A = 2.0 / (norm * math.sqrt(2 * math.pi) * s) * float(np.sum(dt * W * gap))
    B = 2.0 / norm * float(np.sum(dt * V * gap * gap))
    return A, B


def general_integrals(R: float, s: float, kappa: float, f: float, mode: str) -> tuple[float, float]:
    """The same ``(A, B)`` from the general form for any symmetric kept density p(z) (reference A.3):
    ``A = <|z| [c Phi(c/s) + s phi(c/s)] + R Phi(c/s)>_z``, ``B = <(c^2+s^2) Phi(c/s) + c s phi(c/s)>_z``,
    ``c = kappa - R|z|``; one quadrature over |z| in the kept region. Used as a cross-check.
    """
    z_th = z_threshold(f, mode)
    lo, hi = (z_th, GAUSS_CUT) if mode == "easy" else (0.0, min(z_th, GAUSS_CUT))
    u, w = panel_rule(lo, hi, [(kappa / R, s / R)], n_uniform=12, order=12)
    pz = 2.0 * gaussian_phi(u) * w / _normalizer(f, mode)
    c = kappa - R * u
    Phi = gaussian_H(-c / s)
    phi = gaussian_phi(c / s)
    A = float(np.sum(pz * (u * (c * Phi + s * phi) + R * Phi)))
    B = float(np.sum(pz * ((c * c + s * s) * Phi + c * s * phi)))
    return A, B


def perfect_residuals(
    R: float, kappa: float, alpha: float, f: float, mode: str, form: str = "closed", s: float | None = None
) -> np.ndarray:
    """Residuals ``[R - alpha A, (1 - R^2) - alpha B]`` of the two saddle-point equations.

    Args:
        form: ``"closed"`` (the papers' t-integrals) or ``"general"`` (the |z| form of reference A.3).
        s: ``sqrt(1 - R^2)`` if known more accurately than from R.
    """
    s = math.sqrt(max(1.0 - R * R, 0.0)) if s is None else s
    A, B = (closed_form_integrals if form == "closed" else general_integrals)(R, s, kappa, f, mode)
    return np.array([R - alpha * A, s * s - alpha * B])


def perfect_energy(R: float, kappa: float, alpha: float, f: float, mode: str) -> float:
    """The energy ``E(R, kappa)`` of reference A.2 by adaptive ``scipy.integrate.quad`` (an oracle that
    shares no code with the solver): the saddle point has ``E = 0`` and ``dE/dR = 0``.
    """
    s = math.sqrt(1.0 - R * R)
    z_th = z_threshold(f, mode)
    lo, hi = (z_th, GAUSS_CUT) if mode == "easy" else (0.0, min(z_th, GAUSS_CUT))

    def inner(u: float) -> float:
        c = kappa - R * u
        x = c / s
        return (
            2.0
            * math.exp(-0.5 * u * u)
            / math.sqrt(2 * math.pi)
            * (
                (c * c + s * s) * float(gaussian_H(-x))
                + c * s * math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
            )
        )

    brk = [kappa / R] if lo < kappa / R < hi else None
    val = integrate.quad(inner, lo, hi, points=brk, epsabs=1e-14, epsrel=1e-13, limit=400)[0]
    return alpha * val / _normalizer(f, mode) - s * s


def _kappa_given_R(R: float, s: float, f: float, mode: str) -> float:
    """Eliminate alpha (both equations are linear in it): the kappa with ``B/A = (1-R^2)/R``."""
    target = s * s / R

    def g(kappa: float) -> float:
        A, B = closed_form_integrals(R, s, kappa, f, mode)
        return B / A - target if A > 0 else -target

    lo, hi = 0.0, max(1.0, 1.0 / R)
    for _ in range(60):
        if g(hi) > 0:
            break
        lo, hi = hi, 2 * hi
    step = max(s, 1e-3)
    while g(lo) > 0:
        hi, lo = lo, lo - step
        step *= 2
        if lo < -GAUSS_CUT:
            raise SaddlePointError(f"no margin root for R={R!r} ({mode}, f={f})")
    return optimize.brentq(g, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)


def alpha_of_eps(eps: float, f: float, mode: str) -> tuple[float, float]:
    """Parametric solution: for test error ``eps`` (i.e. ``R = cos(pi eps)``) the alpha and kappa at which it
    is the saddle point (reference A.6, 'eliminate alpha'). ``alpha(eps)`` is monotone decreasing.
    """
    R, s = math.cos(math.pi * eps), math.sin(math.pi * eps)
    kappa = _kappa_given_R(R, s, f, mode)
    A, _ = closed_form_integrals(R, s, kappa, f, mode)
    return R / A, kappa


def _newton_from(alpha: float, f: float, mode: str, start: PerfectSolution) -> PerfectSolution | None:
    """Polish a neighbouring solution into this alpha's with Powell's hybrid method on the two closed-form
    equations in ``(logit(2 eps), log kappa)``; ``None`` if it does not converge. The solution is unique
    (alpha(R) is monotone and E increases in kappa), so any converged root is *the* saddle point."""

    def natural(u: np.ndarray) -> tuple[float, float, float, float]:
        eps = 0.5 / (1.0 + math.exp(-u[0]))
        return math.cos(math.pi * eps), math.sin(math.pi * eps), math.exp(u[1]), eps

    def fun(u: np.ndarray) -> np.ndarray:
        if not np.all(np.abs(u) < 700):
            return np.full(2, 1e3)
        R, s, kappa, _ = natural(u)
        if not (s > 1e-150 and R > 1e-150):
            return np.full(2, 1e3)
        res = perfect_residuals(R, kappa, alpha, f, mode, s=s) / np.array([R, s * s])
        return res if np.all(np.isfinite(res)) else np.full(2, 1e3)

    u0 = np.array([math.log(start.eps / (0.5 - start.eps)), math.log(start.kappa)])
    u = optimize.root(fun, u0, method="hybr", options={"xtol": 1e-13, "maxfev": 60}).x
    R, s, kappa, eps = natural(u)
    res = perfect_residuals(R, kappa, alpha, f, mode, s=s)
    if not (np.all(np.abs(res) < RESIDUAL_TOL) and np.all(np.abs(fun(u)) < RESIDUAL_TOL)):
        return None
    return PerfectSolution(alpha, f, mode, R, kappa, eps, (float(res[0]), float(res[1])))


def _rough_guess(alpha: float, f: float, mode: str) -> PerfectSolution:
    """A starting point for the Newton polish from the unpruned asymptotics ``eps ~ 0.5/alpha``,
    ``kappa ~ 1/alpha``: keep-hard behaves like the unpruned set at ``alpha/f`` (reference A.3), keep-easy
    keeps a margin of about ``z_th``. Where it is too rough the bracketed method takes over."""
    a_eff = alpha / f if mode == "hard" else alpha
    kappa = 1.0 / (a_eff + 0.27) + (z_threshold(f, mode) if mode == "easy" else 0.0)
    return PerfectSolution(alpha, f, mode, 0.0, kappa, 0.5 / (1.0 + a_eff))


def solve_perfect(
    alpha: float,
    f: float = 1.0,
    mode: str = "none",
    bracket: tuple[float, float] | None = None,
    initial: PerfectSolution | None = None,
) -> PerfectSolution:
    """Solve the perfect-probe saddle point for ``(R, kappa)``; ``eps = arccos(R)/pi`` (seed eq. 8).

    Method (reference A.6): for fixed R eliminate alpha and root-find kappa; ``alpha(R)`` is monotone, so
    the target alpha is a Brent root in ``eps`` (the error itself, which keeps ``1-R^2`` accurate near
    R = 1). A Newton-type polish from ``initial`` (or from a rough asymptotic guess) is tried first and
    kept only if it converges; the solution is unique, so both routes give the same point. The final
    residuals of both closed-form equations are checked.

    Args:
        alpha: kept (synthetic) examples per dimension, > 0.
        f: kept fraction in (0, 1]. mode: ``none | hard | easy``.
        bracket: optional ``(eps_lo, eps_hi)`` known to contain the solution.
        initial: a solution at a nearby alpha (same f, mode): polished by Newton-type iterations first,
            falling back to the bracketed method if that does not converge (used when sweeping alpha).

    Raises:
        ValueError: bad alpha, f or mode. SaddlePointError: no solution to 1e-10 (names the point).
    """
    alpha, f, mode = check_number("alpha", alpha), check_number("f", f, at_most=1), check_mode(mode)
    where = f"alpha={alpha}, f={f}, mode={mode!r}"
    if initial is None and bracket is None:
        initial = _rough_guess(alpha, f, mode)
    if initial is not None:
        polished = _newton_from(alpha, f, mode, initial)
        if polished is not None:
            return polished
    log_target = math.log(alpha)

    def h(eps: float) -> float:
        return math.log(alpha_of_eps(eps, f, mode)[0]) - log_target

    lo, hi = bracket if bracket is not None else (_EPS_MIN, _EPS_MAX)
    try:
        h_lo, h_hi = h(lo), h(hi)
        if bracket is not None and not (h_lo > 0 > h_hi):
            lo, hi = _EPS_MIN, _EPS_MAX
            h_lo, h_hi = h(lo), h(hi)
        in_range = h_lo > 0 > h_hi
        eps = (
            optimize.brentq(h, lo, hi, xtol=1e-16, rtol=4 * np.finfo(float).eps, maxiter=500)
            if in_range
            else 0
        )
    except (ValueError, ZeroDivisionError, FloatingPointError, SaddlePointError) as exc:
        raise SaddlePointError(f"saddle-point solve failed at {where}: {exc}") from exc
    if not in_range:
        raise SaddlePointError(
            f"alpha outside the solvable range [{math.exp(h_hi + log_target):.3g}, "
            f"{math.exp(h_lo + log_target):.3g}] at {where}"
        )
    R, s = math.cos(math.pi * eps), math.sin(math.pi * eps)
    kappa = _kappa_given_R(R, s, f, mode)
    res = perfect_residuals(R, kappa, alpha, f, mode, s=s)
    if not np.all(np.abs(res) < RESIDUAL_TOL):
        raise SaddlePointError(f"saddle-point residuals {res} above {RESIDUAL_TOL} at {where}")
    return PerfectSolution(alpha, f, mode, R, kappa, eps, (float(res[0]), float(res[1])))
