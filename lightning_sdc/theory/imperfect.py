"""Imperfect probe (angle theta > 0): three saddle-point equations for ``(R, rho, kappa)`` and their solution.

Derivation followed: a re-derivation of (Sorscher et al. 2022, App. A;
paper App. 4.2), with the paper's two typesetting errors corrected as the reference derives and verifies by
finite differences: ``rho`` is the *student-probe* cosine (the paper writes theta^real . theta^syn), and the
last term of the third equation sits *inside* ``2 alpha <int dt [...]>_z`` (coefficient alpha/(pi Lambda)).
With ``c = cos(theta)``, ``s_t = sin(theta)``::

    Lambda^2 = s_t^2 - R^2 - rho^2 + 2 rho R c            (Gram determinant of teacher, probe, student)
    Gamma    = z (rho R - c) - t (R - rho c)
    Delta    = z^2 (rho^2 + c^2 - 2 rho R c) + 2 t z (R c - rho) + t^2 s_t^2
    N(t)     = exp(-(t - rho z)^2 / (2 (1 - rho^2))) / sqrt(2 pi (1 - rho^2))
    P+(t, z) = H(Gamma / (sqrt(1 - rho^2) Lambda)),      Q = (R^2 + rho^2 - 2 rho R c) / s_t^2

    (i)   (R - rho c)/s_t^2 = alpha/(pi Lambda) <int^kappa dt exp(-Delta/(2 Lambda^2)) (kappa - t)>_z
    (ii)  1 - Q             = 2 alpha <int^kappa dt N P+ (kappa - t)^2>_z
    (iii) (rho - R c)/s_t^2 = 2 alpha <int^kappa dt [N P+ (z - rho t)/(1 - rho^2)
                              + exp(-Delta/(2 Lambda^2))/(2 pi Lambda) (rho R - c)/(1 - rho^2)] (kappa - t)>_z

(ii) is ``E = alpha G - (1 - Q) = 0`` and (i), (iii) are ``dE/dR = 0`` and ``dE/drho = 0``; ``<.>_z`` is
over the normalized kept density of the probe margin z (both signs), alpha the kept examples per dimension.

Unknowns are solved in coordinates that make the constraints automatic: ``R = cos(pi eps)`` and
``rho = R c + s_t sqrt(1 - R^2) tanh(omega)``, which keeps ``Lambda^2 = s_t^2 (1-R^2) sech^2(omega) > 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from lightning_sdc.checks import check_number

from .perfect import RESIDUAL_TOL, solve_perfect
from .quadrature import GAUSS_CUT, gaussian_H, gaussian_phi, panel_rule, z_threshold
from .validation import SaddlePointError, check_mode

_START_DEG = 0.5
_STEP_DEG = 10.0


@dataclass(frozen=True)
class ImperfectSolution:
    """Order parameters with a probe at ``angle_deg`` from the teacher.

    Attributes:
        alpha, f, mode, angle_deg: the point solved. R: student-teacher cosine. rho: student-probe cosine.
        kappa: typical max margin. eps: ``arccos(R)/pi``. residuals: equations (i)-(iii) at the solution.
    """

    alpha: float
    f: float
    mode: str
    angle_deg: float
    R: float
    rho: float
    kappa: float
    eps: float
    residuals: tuple[float, float, float]


@dataclass(frozen=True)
class _Geometry:
    """Order parameters and the derived quantities of the equations, computed once per evaluation."""

    R: float
    sR: float
    rho: float
    lam: float
    c: float
    st: float

    @classmethod
    def from_coords(cls, eps: float, omega: float, theta: float) -> _Geometry:
        R, sR = math.cos(math.pi * eps), math.sin(math.pi * eps)
        c, st = math.cos(theta), math.sin(theta)
        return cls(R, sR, R * c + st * sR * math.tanh(omega), st * sR / math.cosh(omega), c, st)

    @classmethod
    def from_overlaps(cls, R: float, rho: float, theta: float) -> _Geometry:
        c, st = math.cos(theta), math.sin(theta)
        lam2 = st * st - R * R - rho * rho + 2 * rho * R * c
        if lam2 <= 0 or abs(rho) >= 1 or not (0 < R < 1):
            raise ValueError(f"(R={R}, rho={rho}) is not a valid student at angle {math.degrees(theta)} deg")
        return cls(R, math.sqrt(1 - R * R), rho, math.sqrt(lam2), c, st)


def _kept_intervals(f: float, mode: str) -> list[tuple[float, float]]:
    z_th = z_threshold(f, mode)
    if mode == "hard":
        cut = min(z_th, GAUSS_CUT)
        return [(-cut, cut)]
    if mode == "easy":
        return [(-GAUSS_CUT, -z_th), (z_th, GAUSS_CUT)]
    return [(-GAUSS_CUT, GAUSS_CUT)]


def _z_rule(
    intervals: list[tuple[float, float]], feats: list[tuple[float, float]], norm: float
) -> tuple[np.ndarray, np.ndarray]:
    xs, ws = zip(*(panel_rule(lo, hi, feats) for lo, hi in intervals))
    z, w = np.concatenate(xs), np.concatenate(ws)
    return z, w * gaussian_phi(z) / norm


def _safe_ratio(num: float, den: float) -> float:
    return num / den if abs(den) > 1e-300 else math.inf


def paper_integrals(g: _Geometry, kappa: float, f: float, mode: str) -> tuple[float, float, float]:
    """Right-hand sides of (i), (ii), (iii) per unit alpha, by a (z, t) panel quadrature."""
    R, rho, lam, c, st = g.R, g.rho, g.lam, g.c, g.st
    one_m_rho2 = (1 - rho) * (1 + rho)
    sd_n = math.sqrt(one_m_rho2)
    k0 = _safe_ratio(rho * R - c, R - rho * c)  # P+ step: t0(z) = k0 z
    kc = (rho - R * c) / (st * st)  # centre of exp(-Delta/2Lambda^2) in t: kc z
    sig = lam / st
    w_step = sd_n * lam / abs(R - rho * c) if R != rho * c else 1.0
    z_feats = [
        (0.0, st),
        (_safe_ratio(kappa, k0), _safe_ratio(w_step, abs(k0))),
        (_safe_ratio(kappa, kc), _safe_ratio(sig, abs(kc))),
        (_safe_ratio(kappa, rho), sd_n / max(abs(rho), 1e-300)),
    ]
    norm = 1.0 if mode == "none" else f
    z, wz = _z_rule(_kept_intervals(f, mode), z_feats, norm)
    t_lo = np.minimum(rho * z - GAUSS_CUT * sd_n, kc * z - GAUSS_CUT * sig)
    t, wt = panel_rule(t_lo, np.full_like(z, kappa), [(rho * z, sd_n), (k0 * z, w_step), (kc * z, sig)])
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        return _paper_sums(g, kappa, (z, wz), (t, wt))


def _paper_sums(
    g: _Geometry, kappa: float, z_rule: tuple[np.ndarray, np.ndarray], t_rule: tuple[np.ndarray, np.ndarray]
) -> tuple[float, float, float]:
    (z, wz), (t, wt) = z_rule, t_rule
    R, rho, lam, c, st = g.R, g.rho, g.lam, g.c, g.st
    one_m_rho2 = (1 - rho) * (1 + rho)
    sd_n = math.sqrt(one_m_rho2)
    zz = z[:, None]
    gap = kappa - t
    n_dens = np.exp(-((t - rho * zz) ** 2) / (2 * one_m_rho2)) / (math.sqrt(2 * math.pi) * sd_n)
    p_plus = gaussian_H((zz * (rho * R - c) - t * (R - rho * c)) / (sd_n * lam))
    delta = zz * zz * (rho * rho + c * c - 2 * rho * R * c) + 2 * t * zz * (R * c - rho) + t * t * st * st
    joint = np.exp(-delta / (2 * lam * lam)) / (2 * math.pi * lam)
    np_plus = n_dens * p_plus
    wzt = wz[:, None] * wt
    I1 = 2.0 * float(np.sum(wzt * joint * gap))
    I2 = 2.0 * float(np.sum(wzt * np_plus * gap * gap))
    I3 = 2.0 * float(np.sum(wzt * (np_plus * (zz - rho * t) + joint * (rho * R - c)) * gap)) / one_m_rho2
    return I1, I2, I3


def _lhs(g: _Geometry) -> tuple[float, float, float]:
    s2 = g.st * g.st
    Q = (g.R * g.R + g.rho * g.rho - 2 * g.rho * g.R * g.c) / s2
    return (g.R - g.rho * g.c) / s2, 1.0 - Q, (g.rho - g.R * g.c) / s2


def _residuals(g: _Geometry, kappa: float, alpha: float, f: float, mode: str) -> np.ndarray:
    rhs = paper_integrals(g, kappa, f, mode)
    return np.array(_lhs(g)) - alpha * np.array(rhs)


def imperfect_residuals(
    R: float, rho: float, kappa: float, alpha: float, f: float, mode: str, angle_deg: float
) -> np.ndarray:
    """Residuals (LHS - RHS) of equations (i), (ii), (iii) at ``(R, rho, kappa)``."""
    return _residuals(_Geometry.from_overlaps(R, rho, math.radians(angle_deg)), kappa, alpha, f, mode)


def imperfect_energy_G(R: float, rho: float, kappa: float, f: float, mode: str, angle_deg: float) -> float:
    """``G = <(kappa - y J.x)_+^2>`` over the kept set, written independently of the paper's (t, z) form.

    Decompose the student field ``J.x = rho z + beta v + sigma xi`` with ``z`` the probe field, ``v`` the
    teacher direction orthogonal to the probe (teacher field ``c z + s_t v``), ``beta = (R - rho c)/s_t``,
    ``sigma = Lambda/s_t``, and integrate ``xi`` analytically. By the z -> -z symmetry only the y = +1
    half-plane ``v > -c z/s_t`` is integrated (times 2). The saddle point has ``alpha G = 1 - Q`` and
    ``-alpha/2 dG/dR``, ``-alpha/2 dG/drho`` equal to the right-hand sides of (i) and (iii) (tested by finite
    differences; this is how the reference located the paper's misplaced term).
    """
    g = _Geometry.from_overlaps(R, rho, math.radians(angle_deg))
    c, st = g.c, g.st
    beta, sig = (g.R - g.rho * c) / st, g.lam / st
    slope = g.rho - beta * c / st  # m = kappa - slope z on the boundary line v = -c z / s_t
    z, wz = _z_rule(
        _kept_intervals(f, mode),
        [(0.0, st), (_safe_ratio(kappa, slope), _safe_ratio(sig, abs(slope)))],
        1.0 if mode == "none" else f,
    )
    v0 = np.maximum(-c * z / st, -GAUSS_CUT)
    v_star = _safe_ratio(1.0, beta) * (kappa - g.rho * z) if beta != 0 else np.full_like(z, np.inf)
    v, wv = panel_rule(np.minimum(v0, GAUSS_CUT), GAUSS_CUT, [(v_star, _safe_ratio(sig, abs(beta)))])
    m = kappa - g.rho * z[:, None] - beta * v
    x = m / sig
    F2 = (m * m + sig * sig) * gaussian_H(-x) + m * sig * gaussian_phi(x)
    return 2.0 * float(np.sum(wz[:, None] * wv * gaussian_phi(v) * F2))


def _solve_at(
    alpha: float, f: float, mode: str, theta: float, x0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Root of (i)-(iii) from ``x0 = (eps, omega, kappa)``; the root finder works in the unconstrained
    ``(logit(2 eps), omega, log kappa)`` (relative steps in eps and kappa, which both scale like 1/alpha)."""

    def natural(u: np.ndarray) -> tuple[float, float, float]:
        return 0.5 / (1.0 + math.exp(-u[0])), float(u[1]), math.exp(u[2])

    def fun(u: np.ndarray) -> np.ndarray:
        if not (np.all(np.abs(u) < 700) and abs(u[1]) < 30):
            return np.full(3, 1e3)
        eps, omega, kappa = natural(u)
        g = _Geometry.from_coords(eps, omega, theta)
        if not (g.lam > 1e-150 and g.sR > 1e-150):
            return np.full(3, 1e3)
        # (ii) is O(1 - Q) = O(eps^2) near the teacher: divide it by 1 - Q so all three are O(1) for hybr
        res = _residuals(g, kappa, alpha, f, mode) / np.array([1.0, _lhs(g)[1], 1.0])
        return res if np.all(np.isfinite(res)) else np.full(3, 1e3)

    eps0, omega0, kappa0 = (float(v) for v in x0)
    u = np.array([math.log(eps0 / (0.5 - eps0)), omega0, math.log(max(kappa0, 1e-12))])
    for xtol in (1e-10, 1e-14):  # a cheap solve, then a polish only if the residuals are not yet < 1e-10
        u = optimize.root(fun, u, method="hybr", options={"xtol": xtol, "maxfev": 400}).x
        eps, omega, kappa = natural(u)
        res = _residuals(_Geometry.from_coords(eps, omega, theta), kappa, alpha, f, mode)
        if _converged(res) and _converged(fun(u)):
            break
    return np.array(natural(u)), res


def _converged(res: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(res)) and np.all(np.abs(res) < RESIDUAL_TOL))


def solve_imperfect(
    alpha: float, f: float, mode: str, angle_deg: float, initial: ImperfectSolution | None = None
) -> ImperfectSolution:
    """Solve (i)-(iii) for ``(R, rho, kappa)`` with the probe at ``angle_deg`` to the teacher.

    Method (reference A.6): Powell hybrid root finder (``scipy.optimize.root(method='hybr')``) with
    continuation in the angle, from the perfect-probe solution at 0.5 deg in steps of at most 10 deg (halved
    on failure; the reference used 2 deg steps, 10 deg converge as well at a quarter of the cost).
    ``initial`` (e.g. the solution at a neighbouring alpha) is tried first as a warm start.
    ``angle_deg = 0`` returns the perfect-probe solution with ``rho = R``.

    Raises:
        ValueError: bad alpha, f, mode or angle.
        SaddlePointError: residuals not below 1e-10 (the message names the point).
    """
    alpha, f, mode, angle_deg = (
        check_number("alpha", alpha), check_number("f", f, at_most=1), check_mode(mode),
        check_number("angle_deg", angle_deg, strict=False, below=90))
    where = f"alpha={alpha}, f={f}, mode={mode!r}, angle={angle_deg} deg"
    if angle_deg == 0.0:
        p = solve_perfect(alpha, f, mode)
        return ImperfectSolution(alpha, f, mode, 0.0, p.R, p.R, p.kappa, p.eps, (*p.residuals, 0.0))
    theta = math.radians(angle_deg)
    x, res = None, None
    if initial is not None:
        g0 = _Geometry.from_overlaps(initial.R, initial.rho, theta)
        w0 = (g0.rho - g0.R * g0.c) / (g0.st * g0.sR)
        x, res = _solve_at(alpha, f, mode, theta, np.array([initial.eps, math.atanh(w0), initial.kappa]))
    if (res is None or not _converged(res)) and (f == 1.0 or mode == "none"):
        # the probe is irrelevant without selection: the unpruned (R, kappa) with rho = R cos(theta) solve
        # (i)-(iii) exactly, so start there at the target angle (the root finder only polishes quadrature)
        p = solve_perfect(alpha, f, mode)
        x, res = _solve_at(alpha, f, mode, theta, np.array([p.eps, 0.0, p.kappa]))
    if res is None or not _converged(res):
        x, res = _continue_in_angle(alpha, f, mode, angle_deg, where)
    eps, omega, kappa = (float(v) for v in x)
    g = _Geometry.from_coords(eps, omega, theta)
    if not _converged(res) or kappa <= 0:
        raise SaddlePointError(
            f"imperfect-probe equations not solved (residuals {res}, kappa={kappa}) at {where}"
        )
    return ImperfectSolution(alpha, f, mode, angle_deg, g.R, g.rho, kappa, eps, tuple(float(r) for r in res))


def _continue_in_angle(
    alpha: float, f: float, mode: str, angle_deg: float, where: str
) -> tuple[np.ndarray, np.ndarray]:
    p = solve_perfect(alpha, f, mode)
    x, res = np.array([p.eps, 0.0, p.kappa]), np.zeros(3)
    done, step = 0.0, _START_DEG
    while done < angle_deg:
        trial = min(done + step, angle_deg)
        x_new, res_new = _solve_at(alpha, f, mode, math.radians(trial), x)
        if _converged(res_new):
            x, res, done, step = x_new, res_new, trial, _STEP_DEG
        else:
            step /= 2
            if step < 0.01:
                raise SaddlePointError(
                    f"angle continuation stalled after {done} deg (residuals {res_new}) at {where}"
                )
    return x, res
