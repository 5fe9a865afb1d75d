"""Perceptron scaling-law theory (seed Sec. 3.2 / App. 4; theory_reference.md A-E)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_sdc.theory import (
    SaddlePointError,
    crossover_alpha,
    default_settings,
    figure_data,
    imperfect_energy_G,
    imperfect_residuals,
    make_figure,
    make_probe,
    max_margin,
    perfect_curve,
    perfect_energy,
    perfect_residuals,
    simulate,
    solve_imperfect,
    solve_perfect,
    z_threshold,
)
from lightning_sdc.theory.cli import theory_command
from lightning_sdc.theory.files import load_arrays, save_arrays
from lightning_sdc.theory.imperfect import _Geometry, paper_integrals

ROOT = Path(__file__).resolve().parents[1]
FIG_DIR = ROOT / "docs" / "figures"

# ----------------------------------------------------------------------------------- perfect probe


@pytest.mark.parametrize(("alpha", "eps"), [(1, 0.265711), (2, 0.188479), (5, 0.093827), (10, 0.049183)])
def test_unpruned_is_the_maximal_stability_perceptron(alpha, eps):
    sol = solve_perfect(alpha, 1.0, "none")
    assert sol.eps == pytest.approx(eps, abs=1e-5)
    assert sol.eps == pytest.approx(math.acos(sol.R) / math.pi, abs=1e-15)


def test_unpruned_large_alpha_asymptote():
    # Opper et al. 1990: eps ~ 0.5005 / alpha, kappa ~ 1.0045 / alpha
    sol = solve_perfect(1000.0, 1.0, "none")
    assert 0.5004 <= 1000 * sol.eps <= 0.5006
    assert 1000 * sol.kappa == pytest.approx(1.0045, abs=2e-3)


def test_hard_and_easy_with_f1_are_unpruned():
    ref = solve_perfect(3.0, 1.0, "none")
    for mode in ("hard", "easy"):
        assert solve_perfect(3.0, 1.0, mode).eps == pytest.approx(ref.eps, abs=1e-12)


POINTS = [
    (a, f, m)
    for m, f in (("none", 1.0), ("hard", 0.2), ("hard", 0.7), ("easy", 0.2), ("easy", 0.7))
    for a in (0.1, 2.0, 300.0)
]


@pytest.mark.parametrize(("alpha", "f", "mode"), POINTS)
def test_perfect_residuals_both_forms(alpha, f, mode):
    sol = solve_perfect(alpha, f, mode)
    s = math.sin(math.pi * sol.eps)
    closed = perfect_residuals(sol.R, sol.kappa, alpha, f, mode, form="closed", s=s)
    general = perfect_residuals(sol.R, sol.kappa, alpha, f, mode, form="general", s=s)
    assert np.all(np.abs(closed) < 1e-10), closed
    assert np.all(np.abs(general) < 1e-10), general  # the papers' t-form and the |z| form agree
    assert np.all(np.abs(sol.residuals) < 1e-10)


@pytest.mark.parametrize(
    ("alpha", "f", "mode"),
    [(0.5, 1.0, "none"), (2.0, 0.3, "hard"), (2.0, 0.3, "easy"), (8.0, 0.6, "hard"), (20.0, 0.6, "easy")],
)
def test_energy_oracle_finite_differences(alpha, f, mode):
    """Independent check (scipy.quad energy, no shared quadrature): E = 0 and dE/dR = 0 at the solution,
    while a 1% perturbation of R gives a clearly non-zero slope (so the check can fail)."""
    sol = solve_perfect(alpha, f, mode)

    def energy_at(eps: float) -> float:
        return perfect_energy(math.cos(math.pi * eps), sol.kappa, alpha, f, mode)

    h = 1e-4 * sol.eps
    slope = (energy_at(sol.eps + h) - energy_at(sol.eps - h)) / (2 * h)
    off = 1.01 * sol.eps
    slope_off = (energy_at(off + h) - energy_at(off - h)) / (2 * h)
    assert abs(energy_at(sol.eps)) < 1e-10
    assert abs(slope) < 1e-3 * abs(slope_off)


def test_keep_hard_matches_unpruned_at_alpha_total():
    # support vectors lie inside the kept slab: eps_hard(alpha, f) ~ eps_none(alpha / f) (reference A.3)
    assert solve_perfect(5.0, 0.5, "hard").eps == pytest.approx(solve_perfect(10.0).eps, abs=1e-5)


def test_easy_beats_hard_at_small_alpha_and_loses_at_large_alpha():
    for f in (0.2, 0.5, 0.8):
        assert solve_perfect(1.0, f, "easy").eps < solve_perfect(1.0, f, "hard").eps
        assert solve_perfect(20.0, f, "easy").eps > solve_perfect(20.0, f, "hard").eps


def test_crossover_alpha_is_a_root():
    a = crossover_alpha(0.4)
    assert 1.0 < a < 10.0
    gap = solve_perfect(a, 0.4, "hard").eps - solve_perfect(a, 0.4, "easy").eps
    assert abs(gap) < 1e-9
    assert solve_perfect(0.9 * a, 0.4, "hard").eps > solve_perfect(0.9 * a, 0.4, "easy").eps
    assert solve_perfect(1.1 * a, 0.4, "hard").eps < solve_perfect(1.1 * a, 0.4, "easy").eps


def test_perfect_curve_matches_pointwise_solves():
    alphas = np.array([5.0, 0.3, 1.7, 40.0])
    eps = perfect_curve(alphas, 0.3, "hard")
    for a, e in zip(alphas, eps):
        assert e == pytest.approx(solve_perfect(a, 0.3, "hard").eps, abs=1e-12)


def test_thresholds():
    assert z_threshold(0.5, "hard") == pytest.approx(0.6744897501960817)
    assert z_threshold(0.5, "easy") == pytest.approx(0.6744897501960817)
    assert z_threshold(1.0, "easy") == 0.0 and math.isinf(z_threshold(1.0, "hard"))


# --------------------------------------------------------------------------------- imperfect probe


def test_reference_point_finite_differences_locate_the_corrected_term():
    """theta = 10 deg, hard f = 0.5, (R, rho, kappa) = (0.8, 0.7, 0.4): -1/2 dG/drho equals the (iii) RHS
    (= -0.31792734 in the reference) only with the seed's last term inside the integral."""
    R, rho, kappa, f, mode, ang = 0.8, 0.7, 0.4, 0.5, "hard", 10.0
    rhs_i, G, rhs_iii = paper_integrals(_Geometry.from_overlaps(R, rho, math.radians(ang)), kappa, f, mode)
    assert G == pytest.approx(imperfect_energy_G(R, rho, kappa, f, mode, ang), abs=1e-12)
    h = 1e-5
    dG_dR = imperfect_energy_G(R + h, rho, kappa, f, mode, ang) - imperfect_energy_G(
        R - h, rho, kappa, f, mode, ang
    )
    dG_drho = imperfect_energy_G(R, rho + h, kappa, f, mode, ang) - imperfect_energy_G(
        R, rho - h, kappa, f, mode, ang
    )
    assert -dG_dR / (4 * h) == pytest.approx(rhs_i, abs=1e-8)
    assert -dG_drho / (4 * h) == pytest.approx(rhs_iii, abs=1e-8)
    assert rhs_iii == pytest.approx(-0.31792734, abs=1e-8)


@pytest.mark.parametrize(
    ("alpha", "f", "mode", "angle"),
    [(2.0, 0.5, "hard", 20.0), (2.0, 0.5, "easy", 20.0), (10.0, 0.2, "hard", 10.0)],
)
def test_imperfect_residuals_and_energy(alpha, f, mode, angle):
    sol = solve_imperfect(alpha, f, mode, angle)
    res = imperfect_residuals(sol.R, sol.rho, sol.kappa, alpha, f, mode, angle)
    assert np.all(np.abs(res) < 1e-10), res
    c, s2 = math.cos(math.radians(angle)), math.sin(math.radians(angle)) ** 2
    q = (sol.R**2 + sol.rho**2 - 2 * sol.rho * sol.R * c) / s2
    # E = alpha G - (1 - Q) = 0 through the independent (z, v) form of the energy
    assert alpha * imperfect_energy_G(sol.R, sol.rho, sol.kappa, f, mode, angle) == pytest.approx(
        1 - q, abs=1e-10
    )


def test_imperfect_simulation_values_from_reference():
    # reference D.1 (theta = 20 deg, f = 0.5, alpha = 2, d = 100, 40 repeats): hard 0.1778 +- 0.004,
    # easy 0.1624 +- 0.0019
    assert solve_imperfect(2.0, 0.5, "hard", 20.0).eps == pytest.approx(0.1778, abs=4 * 0.0040)
    assert solve_imperfect(2.0, 0.5, "easy", 20.0).eps == pytest.approx(0.1624, abs=4 * 0.0019)


def test_imperfect_limits():
    unpruned = solve_perfect(3.0)
    sol = solve_imperfect(3.0, 1.0, "hard", 20.0)  # no selection: the probe is irrelevant
    assert sol.R == pytest.approx(unpruned.R, abs=1e-9)
    assert sol.rho == pytest.approx(unpruned.R * math.cos(math.radians(20.0)), abs=1e-9)
    small = solve_imperfect(2.0, 0.5, "hard", 1.0)
    assert small.R == pytest.approx(solve_perfect(2.0, 0.5, "hard").R, abs=1e-3)
    zero = solve_imperfect(2.0, 0.5, "hard", 0.0)
    assert zero.R == solve_perfect(2.0, 0.5, "hard").R and zero.rho == zero.R


def test_imperfect_warm_start_gives_the_same_solution():
    cold = solve_imperfect(3.0, 0.4, "hard", 10.0)
    warm = solve_imperfect(3.0, 0.4, "hard", 10.0, initial=solve_imperfect(2.5, 0.4, "hard", 10.0))
    assert warm.eps == pytest.approx(cold.eps, abs=1e-10) and warm.rho == pytest.approx(cold.rho, abs=1e-9)


# ---------------------------------------------------------------------------------------- simulation


def test_max_margin_matches_brute_force_in_2d():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 2))
    y = np.sign(X @ np.array([0.6, 0.8]))
    w, kappa = max_margin(X, y)
    angles = np.linspace(0, 2 * np.pi, 200001)
    dirs = np.stack([np.cos(angles), np.sin(angles)], 1)
    best = (y[:, None] * (X @ dirs.T)).min(0).max()
    # exact optimum >= every grid direction's margin, and within the grid's angular resolution of the best
    assert best - 1e-12 <= kappa <= best + 3 * np.abs(X).max() * (angles[1] - angles[0])
    assert np.linalg.norm(w) == pytest.approx(1.0)
    assert (y * (X @ w)).min() == pytest.approx(kappa, rel=1e-9)


def test_max_margin_rejects_non_separable():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 5))
    y = rng.choice([-1.0, 1.0], 200)
    with pytest.raises(ValueError, match="not linearly separable"):
        max_margin(X, y)


def test_probe_has_the_requested_angle():
    rng = np.random.default_rng(1)
    t = rng.standard_normal(50)
    t /= np.linalg.norm(t)
    p = make_probe(t, math.radians(20.0), rng)
    assert np.linalg.norm(p) == pytest.approx(1.0) and math.degrees(math.acos(p @ t)) == pytest.approx(20.0)


def test_simulation_is_seeded():
    a = simulate(1.0, 0.5, "hard", d=40, repeats=3, seed=7)
    b = simulate(1.0, 0.5, "hard", d=40, repeats=3, seed=7)
    c = simulate(1.0, 0.5, "hard", d=40, repeats=3, seed=8)
    assert a == b and a.eps != c.eps


SIM_POINTS = [
    (1.0, 1.0, "none", 0.0),
    (2.0, 0.5, "hard", 0.0),
    (2.0, 0.5, "easy", 0.0),
    (4.0, 0.3, "hard", 0.0),
]


@pytest.mark.parametrize(("alpha", "f", "mode", "angle"), SIM_POINTS)
def test_simulation_agrees_with_theory(alpha, f, mode, angle):
    sim = simulate(alpha, f, mode, angle, d=100, repeats=40, seed=11)
    theory = solve_perfect(alpha, f, mode)
    assert abs(sim.eps - theory.eps) < 4 * sim.eps_sem, (sim, theory.eps)
    assert sim.kappa == pytest.approx(theory.kappa, rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("alpha", "f", "mode", "angle"),
    [
        (0.5, 0.2, "hard", 0.0),
        (5.0, 0.2, "hard", 0.0),
        (1.0, 0.2, "easy", 0.0),
        (8.0, 0.6, "easy", 0.0),
        (10.0, 1.0, "none", 0.0),
        (2.0, 0.5, "hard", 20.0),
        (2.0, 0.5, "easy", 20.0),
        (5.0, 0.4, "hard", 10.0),
        (5.0, 0.4, "easy", 10.0),
    ],
)
def test_simulation_agrees_with_theory_slow(alpha, f, mode, angle):
    sim = simulate(alpha, f, mode, angle, d=100, repeats=100, seed=5)
    theory = solve_imperfect(alpha, f, mode, angle)
    assert abs(sim.eps - theory.eps) < 4 * sim.eps_sem, (sim, theory.eps)
    assert sim.rho == pytest.approx(theory.rho, abs=0.02)


# -------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"f": 0.0}, r"f must be a finite number > 0, got 0\.0"),
        ({"f": 1.5}, r"f must be a number in \(0, 1\], got 1\.5"),
        ({"alpha": 0.0}, r"alpha must be a finite number > 0, got 0\.0"),
        ({"alpha": -1.0}, r"alpha must be a finite number > 0, got -1\.0"),
        ({"mode": "medium"}, "'medium'"),
        ({"angle_deg": 90.0}, r"angle_deg must be a number in \[0, 90\), got 90\.0"),
        ({"angle_deg": -1.0}, r"angle_deg must be a finite number >= 0, got -1\.0"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    args = {"alpha": 1.0, "f": 0.5, "mode": "hard", "angle_deg": 10.0} | kwargs
    with pytest.raises(ValueError, match=match):
        solve_imperfect(**args)
    with pytest.raises(ValueError, match=match):
        simulate(**args, d=10, repeats=2)
    if "angle_deg" not in kwargs:
        with pytest.raises(ValueError, match=match):
            solve_perfect(args["alpha"], args["f"], args["mode"])


def test_bad_crossover_and_figure_arguments():
    with pytest.raises(ValueError, match="f=1.0"):
        crossover_alpha(1.0)
    with pytest.raises(ValueError, match="4a \\| 4b \\| 4c \\| 15"):
        theory_command("5", out="unused")
    with pytest.raises(ValueError, match="repeats=1"):
        theory_command("4a", out="unused", repeats=1)


def test_unsolvable_point_raises_saddle_point_error():
    with pytest.raises(SaddlePointError, match="alpha=1e-12"):
        solve_perfect(1e-12, 0.5, "hard")


# --------------------------------------------------------------------------------- figures and CLI


def test_cli_quick_writes_and_reuses_cache(tmp_path):
    paths = theory_command("4a", out=str(tmp_path), quick=True)
    png, npz = (Path(p) for p in paths)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and npz.suffix == ".npz"
    stamp = npz.stat().st_mtime_ns
    assert theory_command("4a", out=str(tmp_path), quick=True) == paths
    assert npz.stat().st_mtime_ns == stamp  # cache hit: nothing recomputed
    data = load_arrays(npz, None)
    assert data["eps"].shape == (1, 2, 2, 5) and np.all((data["eps"] > 0) & (data["eps"] < 0.5))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_plane_figures_share_their_cache(tmp_path):
    b = theory_command("4b", out=str(tmp_path), quick=True)
    c = theory_command("4c", out=str(tmp_path), quick=True)
    assert b[1] == c[1] and Path(c[0]).name == "fig4c.png"


def test_cache_with_other_settings_is_recomputed_and_corrupt_cache_is_named(tmp_path):
    settings = default_settings("4a", quick=True)
    save_arrays(tmp_path / "fig4a.npz", {"x": np.zeros(1)}, {"figure": "other"})
    data, _, computed = figure_data("4a", tmp_path, settings)
    assert computed and "eps" in data
    (tmp_path / "fig4a.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="fig4a.npz"):
        figure_data("4a", tmp_path, settings)


def test_theory_needs_no_torch():
    code = "import sys, lightning_sdc.theory.cli; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", ["fig4a", "fig4b", "fig4c", "fig15"])
def test_committed_figures_exist(name):
    png = FIG_DIR / f"{name}.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


def test_committed_plane_shows_the_crossover():
    data = load_arrays(FIG_DIR / "fig4bc.npz")
    diff = data["eps_hard"] - data["eps_easy"]
    assert np.all(diff[:, 0] > 0) and np.all(diff[:, -1] < 0)  # easy wins at small alpha, hard at large
    for f, a in zip(data["crossover_f"], data["crossover_alpha"]):
        row = int(np.argmin(np.abs(data["f"] - f)))
        i = int(np.searchsorted(data["alpha"], a))
        assert diff[row, i - 1] > 0 > diff[row, i + 1]


def test_committed_fig4a_matches_simulation():
    """The committed dots agree with the exact theory at their alphas (4 s.e.m. or O(1/d) = 0.005)."""
    data = load_arrays(FIG_DIR / "fig4a.npz")
    for im, mode in enumerate(data["modes"]):
        for jf, f in enumerate(data["f"]):
            theory = perfect_curve(data["sim_alpha"], float(f), str(mode))
            gap = np.abs(data["sim_eps"][0, im, jf] - theory)
            assert np.all((gap < 4 * data["sim_sem"][0, im, jf]) | (gap < 0.005)), (mode, f, gap)


def test_make_figure_rejects_unknown(tmp_path):
    with pytest.raises(ValueError, match="unknown figure '4d'"):
        make_figure("4d", tmp_path)


def test_figures_leave_the_backend_alone_and_the_command_draws_with_agg(tmp_path):
    """Issue 13 point 10: importing the figures module must not force Agg (a notebook's inline backend shows the
    figures); ``theory_command``, which only writes files, selects Agg itself."""
    code = (
        "import matplotlib; matplotlib.use('svg'); import lightning_sdc.theory, lightning_sdc.theory.figures, "
        "lightning_sdc.theory.cli; assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
        f"lightning_sdc.theory.cli.theory_command('4a', out={str(tmp_path)!r}, quick=True, quiet=True); "
        "assert matplotlib.get_backend().lower() == 'agg', matplotlib.get_backend()"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fig4a.png").exists()


def test_theory_progress_bar_on_a_terminal_and_quiet(tmp_path, monkeypatch):
    import io

    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = TTY()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.delenv("LIGHTNING_SDC_QUIET", raising=False)
    theory_command("4a", out=str(tmp_path), quick=True)
    assert "fig4a" in tty.getvalue() and "pt" in tty.getvalue()
    quiet = TTY()
    monkeypatch.setattr(sys, "stderr", quiet)
    theory_command("4a", out=str(tmp_path), quick=True, quiet=True)
    assert quiet.getvalue() == ""


def test_theory_cli_takes_bare_boolean_flags(tmp_path):
    from lightning_sdc.cli import run

    paths = run(["theory", "--figure", "4a", "--out", str(tmp_path), "--quick", "--quiet"])
    assert Path(paths[0]).name == "fig4a.png" and Path(paths[0]).exists()
