"""Perceptron theory of dataset distillation / pruning by sample difficulty (paper Sec. 3.2, App. 4).

Teacher-probe-student model of Sorscher et al. (NeurIPS 2022) as adapted by the paper: a teacher
perceptron labels Gaussian inputs, a probe ranks examples by their margin |z|, a fraction f is kept (hard =
smallest |z|, easy = largest, none = random), and a max-margin student trained on the kept set has test error
``eps = arccos(R)/pi``. The equations follow our re-derivation of Sorscher et al. (2022, App. A),
which also corrects the paper's typesetting errors. numpy/scipy/matplotlib
only (no torch).

Public API::

    solve_perfect(alpha, f, mode)               -> PerfectSolution(R, kappa, eps, ...)
    solve_imperfect(alpha, f, mode, angle_deg)  -> ImperfectSolution(R, rho, kappa, eps, ...)
    simulate(alpha, f, mode, angle_deg=0, d=200, repeats=100, seed=0) -> SimulationResult(eps, eps_sem, ...)
    crossover_alpha(f, mode_a='easy', mode_b='hard', angle_deg=0)
    make_figure('4a' | '4b' | '4c' | '15', out)  (the CLI: ``lightning-sdc theory --figure 4a --out DIR``)
"""

from __future__ import annotations

from .curves import crossover_alpha, imperfect_curve, perfect_curve
from .figures import (
    FIGURES,
    CurveSettings,
    PlaneSettings,
    default_settings,
    figure_data,
    make_figure,
    plot_fig4a,
    plot_fig4b,
    plot_fig4c,
    plot_fig15,
)
from .imperfect import ImperfectSolution, imperfect_energy_G, imperfect_residuals, solve_imperfect
from .perfect import PerfectSolution, perfect_energy, perfect_residuals, solve_perfect
from .quadrature import gaussian_H, z_threshold
from .simulation import SimulationResult, make_probe, max_margin, simulate
from .validation import MODES, SaddlePointError

__all__ = ["FIGURES", "MODES", "CurveSettings", "ImperfectSolution", "PerfectSolution", "PlaneSettings",
           "SaddlePointError", "SimulationResult", "crossover_alpha", "default_settings", "figure_data",
           "gaussian_H", "imperfect_curve", "imperfect_energy_G", "imperfect_residuals", "make_figure",
           "make_probe", "max_margin", "perfect_curve", "perfect_energy", "perfect_residuals", "plot_fig15",
           "plot_fig4a", "plot_fig4b", "plot_fig4c", "simulate", "solve_imperfect", "solve_perfect",
           "z_threshold"]
