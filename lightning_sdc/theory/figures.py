"""Data and drawings of the paper's Figure 4(a-c) and Figure 15 (theory lines over simulation dots).

Each figure is computed into arrays (cached as an ``.npz`` keyed by its settings, written atomically), then
drawn from the arrays alone, so the CLI (``lightning-sdc theory``), the notebook and the tests share one
code path. Shapes followed (theory reference A.8): 4(a) test error vs alpha_syn per kept fraction f on
log-log axes (keep-hard solid, keep-easy dashed); 4(b) ``eps_hard - eps_easy`` over (alpha_syn, f) with the
zero contour; 4(c) the better strategy over the same plane; 15 the 4(a) curves with the probe at 0, 10 and
20 degrees from the teacher (the paper's caption calls (b), (c) 'perfect'; they are the imperfect probe).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.lines import Line2D

from lightning_sdc.figures import save_figure

from .curves import crossover_alpha, imperfect_curve, perfect_curve
from .files import cached
from .simulation import simulate

# No backend is chosen here: a notebook keeps its inline backend (the figures show), a script gets matplotlib's
# own choice (Agg where there is no display). The ``lightning-sdc theory`` command, which only writes files,
# selects Agg itself (theory/cli.py).

FIGURES = ("4a", "4b", "4c", "15")
Progress = Callable[[int], Any] | None
_STYLE = {"hard": ("-", "o", "full"), "easy": ("--", "s", "none")}


@dataclass(frozen=True)
class CurveSettings:
    """Learning curves (Fig. 4(a), Fig. 15): theory on ``n_alpha`` log-spaced alphas, simulation dots."""

    alpha_min: float = 0.2
    alpha_max: float = 50.0
    n_alpha: int = 60
    fs: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2)
    modes: tuple[str, ...] = ("hard", "easy")
    angles: tuple[float, ...] = (0.0,)
    sim_alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
    d: int = 200
    repeats: int = 50
    seed: int = 0


@dataclass(frozen=True)
class PlaneSettings:
    """The (alpha_syn, f) plane of Fig. 4(b, c) and the exact crossovers marked on it."""

    alpha_min: float = 0.1
    alpha_max: float = 100.0
    n_alpha: int = 61
    f_min: float = 0.05
    f_max: float = 0.95
    n_f: int = 37
    crossover_fs: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)


def default_settings(figure: str, quick: bool = False) -> CurveSettings | PlaneSettings:
    """Settings used for the committed figures (or tiny ones with ``quick``, for tests and the notebook)."""
    if figure in ("4b", "4c"):
        quick_plane = dict(alpha_min=0.3, alpha_max=30.0, n_alpha=6, f_min=0.2, f_max=0.8, n_f=4, crossover_fs=())
        return PlaneSettings(**quick_plane) if quick else PlaneSettings()
    # paper App. 4: d = 200 for the perfect probe, d = 50 for the imperfect one, 100 repeats (4a: 50 here)
    base = CurveSettings() if figure == "4a" else CurveSettings(
        angles=(0.0, 10.0, 20.0), n_alpha=40, sim_alphas=(0.5, 1.0, 2.0, 4.0, 8.0), d=50, repeats=100)
    if quick:
        base = replace(base, alpha_min=0.5, alpha_max=10.0, n_alpha=5, fs=(1.0, 0.4), sim_alphas=(1.0, 4.0),
                       d=min(base.d, 50), repeats=4)
        if figure == "15":
            base = replace(base, angles=(0.0, 20.0), modes=("hard",))
    return base


def alpha_grid(s: CurveSettings | PlaneSettings) -> np.ndarray:
    """The log-spaced theory alphas of a settings object."""
    return np.geomspace(s.alpha_min, s.alpha_max, s.n_alpha)


def _curve_count(s: CurveSettings) -> int:
    pruned = sum(1 for f in s.fs if f < 1.0)
    per_angle = (pruned * len(s.modes) + (len(s.fs) - pruned)) * (s.n_alpha + len(s.sim_alphas))
    return per_angle * len(s.angles)


def compute_curves(s: CurveSettings, progress: Progress = None) -> dict[str, np.ndarray]:
    """Theory ``eps`` (and ``rho``) on the alpha grid and simulated ``eps`` +- s.e.m. at ``sim_alphas`` for
    every (angle, mode, f); arrays are indexed ``[angle, mode, f, alpha]``. f = 1 is solved once per angle
    and shared by the modes (no selection)."""
    alphas, sims = alpha_grid(s), np.asarray(s.sim_alphas, dtype=float)
    shape = (len(s.angles), len(s.modes), len(s.fs))
    eps, rho = np.empty(shape + (len(alphas),)), np.empty(shape + (len(alphas),))
    sim_eps, sim_sem = np.empty(shape + (len(sims),)), np.empty(shape + (len(sims),))
    for ia, angle in enumerate(s.angles):
        for jf, f in enumerate(s.fs):
            for im, mode in enumerate(s.modes):
                if f == 1.0 and im > 0:
                    for arr in (eps, rho, sim_eps, sim_sem):
                        arr[ia, im, jf] = arr[ia, 0, jf]
                    continue
                if angle == 0.0:
                    eps[ia, im, jf] = perfect_curve(alphas, f, mode)
                    rho[ia, im, jf] = np.cos(np.pi * eps[ia, im, jf])
                else:
                    sols = imperfect_curve(alphas, f, mode, angle)
                    eps[ia, im, jf] = [p.eps for p in sols]
                    rho[ia, im, jf] = [p.rho for p in sols]
                if progress is not None:
                    progress(len(alphas))
                for k, a in enumerate(sims):
                    point_seed = s.seed * 1_000_003 + ((ia * 7 + im) * 101 + jf) * 1009 + k
                    r = simulate(float(a), f, mode, angle, d=s.d, repeats=s.repeats, seed=point_seed)
                    sim_eps[ia, im, jf, k], sim_sem[ia, im, jf, k] = r.eps, r.eps_sem
                    if progress is not None:
                        progress(1)
    return {"alpha": alphas, "f": np.asarray(s.fs), "angle": np.asarray(s.angles), "modes": np.asarray(s.modes),
            "eps": eps, "rho": rho, "sim_alpha": sims, "sim_eps": sim_eps, "sim_sem": sim_sem, "d": np.asarray(s.d),
            "repeats": np.asarray(s.repeats)}


def compute_plane(s: PlaneSettings, progress: Progress = None) -> dict[str, np.ndarray]:
    """``eps_hard`` and ``eps_easy`` over (f, alpha_syn); exact crossover alphas at ``crossover_fs``."""
    alphas, fs = alpha_grid(s), np.linspace(s.f_min, s.f_max, s.n_f)
    out = {m: np.empty((len(fs), len(alphas))) for m in ("hard", "easy")}
    for i, f in enumerate(fs):
        for mode in ("hard", "easy"):
            out[mode][i] = perfect_curve(alphas, float(f), mode)
            if progress is not None:
                progress(len(alphas))
    cross = []
    for f in s.crossover_fs:
        cross.append(crossover_alpha(f))
        if progress is not None:
            progress(1)
    return {"alpha": alphas, "f": fs, "eps_hard": out["hard"], "eps_easy": out["easy"],
            "crossover_f": np.asarray(s.crossover_fs, dtype=float), "crossover_alpha": np.asarray(cross)}


def figure_data(
    figure: str, out: str | os.PathLike, settings: CurveSettings | PlaneSettings, progress: Progress = None
) -> tuple[dict[str, np.ndarray], Path, bool]:
    """Arrays of a figure from the cache next to its PNG (recomputed if the settings differ).

    Returns ``(arrays, cache_path, computed)``. Fig. 4(b) and 4(c) share ``fig4bc.npz``.
    """
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; allowed: {' | '.join(FIGURES)}")
    name = "fig4bc" if figure in ("4b", "4c") else f"fig{figure}"
    path = Path(out) / f"{name}.npz"
    params = {"figure": name, **asdict(settings)}
    if isinstance(settings, PlaneSettings):
        arrays, computed = cached(path, params, lambda: compute_plane(settings, progress))
    else:
        arrays, computed = cached(path, params, lambda: compute_curves(settings, progress))
    return arrays, path, computed


def work_units(settings: CurveSettings | PlaneSettings) -> int:
    """Progress-bar total of a computation (theory points + simulation points + crossovers)."""
    if isinstance(settings, PlaneSettings):
        return 2 * settings.n_f * settings.n_alpha + len(settings.crossover_fs)
    return _curve_count(settings)


def _f_color(f: float, fs: np.ndarray) -> Any:
    """The viridis colour of kept fraction ``f`` among ``fs`` (f = 1 darkest)."""
    return plt.get_cmap("viridis")(0.85 * (1 - f) / max(1e-9, 1 - fs.min()) if fs.min() < 1 else 0.0)


def _draw_curves(ax: Any, data: dict[str, np.ndarray], ia: int) -> None:
    fs, modes = data["f"], [str(m) for m in data["modes"]]
    for jf, f in enumerate(fs):
        color = _f_color(f, fs)
        for im, mode in enumerate(modes):
            if f == 1.0 and im > 0:
                continue
            line, marker, fill = _STYLE.get(mode, ("-", "o", "full")) if f < 1.0 else ("-", "o", "full")
            ax.plot(data["alpha"], data["eps"][ia, im, jf], line, color=color, lw=1.6)
            ax.errorbar(data["sim_alpha"], data["sim_eps"][ia, im, jf], yerr=data["sim_sem"][ia, im, jf], fmt=marker,
                        color=color, mfc=color if fill == "full" else "white", ms=4.5, capsize=0, lw=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\alpha_{\mathrm{syn}}$ (kept examples per dimension)")
    ax.grid(True, which="both", alpha=0.25)


def _curve_legend(ax: Any, data: dict[str, np.ndarray]) -> None:
    handles = [Line2D([], [], color=_f_color(f, data["f"]), lw=2, label=f"f = {f:g}") for f in data["f"]]
    handles += [
        Line2D([], [], color="k", ls="-", marker="o", label="keep hard"),
        Line2D([], [], color="k", ls="--", marker="s", mfc="white", label="keep easy"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower left", framealpha=0.85)


def plot_fig4a(data: dict[str, np.ndarray]) -> Any:
    """Fig. 4(a): eps vs alpha_syn per f, perfect probe; lines = theory, dots = simulation (+- s.e.m.)."""
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    _draw_curves(ax, data, 0)
    _curve_legend(ax, data)
    ax.set_ylabel(r"test error $\varepsilon$")
    ax.set_title(f"(a) perfect probe: theory (lines), simulation d={int(data['d'])} (dots)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_fig15(data: dict[str, np.ndarray]) -> Any:
    """Fig. 15: the 4(a) curves with the probe at each angle from the teacher (one panel per angle)."""
    angles = data["angle"]
    fig, axes = plt.subplots(1, len(angles), figsize=(4.2 * len(angles), 4.0), sharey=True, squeeze=False)
    for ia, (ax, angle) in enumerate(zip(axes[0], angles)):
        _draw_curves(ax, data, ia)
        label = "perfect probe" if angle == 0 else "imperfect probe"
        ax.set_title(f"({'abc'[ia] if ia < 3 else ia}) {label}, angle = {angle:g}°", fontsize=9)
    axes[0, 0].set_ylabel(r"test error $\varepsilon$")
    _curve_legend(axes[0, 0], data)
    fig.suptitle(
        f"theory (lines) and simulation d={int(data['d'])}, {int(data['repeats'])} repeats (dots)", fontsize=9
    )
    fig.tight_layout()
    return fig


def _plane_axes(ax: Any, data: dict[str, np.ndarray]) -> None:
    diff = data["eps_hard"] - data["eps_easy"]
    ax.contour(data["alpha"], data["f"], diff, levels=[0.0], colors="k", linewidths=1.5)
    ax.plot(data["crossover_alpha"], data["crossover_f"], "k*", ms=8, label="crossover (exact root)")
    ax.set_xscale("log")
    ax.set_xlabel(r"$\alpha_{\mathrm{syn}}$ (synthetic examples per dimension)")
    ax.set_ylabel("fraction of data kept / synthesized f")


def plot_fig4b(data: dict[str, np.ndarray]) -> Any:
    """Fig. 4(b): ``eps_hard - eps_easy`` over (alpha_syn, f); positive = keeping easy is better."""
    diff = data["eps_hard"] - data["eps_easy"]
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    # each sign gets the full half of the colour map (the easy advantage at small alpha is ~10x larger)
    lo, hi = min(float(diff.min()), -1e-6), max(float(diff.max()), 1e-6)
    mesh = ax.pcolormesh(data["alpha"], data["f"], diff, shading="gouraud", cmap="RdBu",
                         norm=TwoSlopeNorm(vcenter=0.0, vmin=lo, vmax=hi))
    fig.colorbar(mesh, ax=ax, label=r"$\varepsilon_{\mathrm{hard}} - \varepsilon_{\mathrm{easy}}$ (> 0: easy better)")
    _plane_axes(ax, data)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("(b) hard minus easy test error (blue: keep easy better); black: zero", fontsize=9)
    fig.tight_layout()
    return fig


def plot_fig4c(data: dict[str, np.ndarray]) -> Any:
    """Fig. 4(c): the better strategy (lower theory test error) over (alpha_syn, f)."""
    diff = data["eps_hard"] - data["eps_easy"]
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    big = 2 * float(np.max(np.abs(diff))) + 1.0
    ax.contourf(data["alpha"], data["f"], diff, levels=[-big, 0.0, big], colors=["#d6604d", "#4393c3"])
    _plane_axes(ax, data)
    for x, text, ha in ((0.05, "keep EASY\nbetter", "left"), (0.95, "keep HARD\nbetter", "right")):
        ax.text(x, 0.5, text, transform=ax.transAxes, color="white", fontsize=11, weight="bold", va="center", ha=ha)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("(c) better distillation strategy (perfect probe)", fontsize=9)
    fig.tight_layout()
    return fig


PLOTTERS = {"4a": plot_fig4a, "4b": plot_fig4b, "4c": plot_fig4c, "15": plot_fig15}


def make_figure(
    figure: str,
    out: str | os.PathLike,
    settings: CurveSettings | PlaneSettings | None = None,
    progress: Progress = None,
) -> list[Path]:
    """Compute (or load) a figure's arrays and write ``fig<figure>.png``; returns the PNG and cache paths."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; allowed: {' | '.join(FIGURES)}")
    settings = settings if settings is not None else default_settings(figure)
    data, cache_path, _ = figure_data(figure, out, settings, progress)
    fig = PLOTTERS[figure](data)
    return [save_figure(fig, Path(out) / f"fig{figure}.png", dpi=150), cache_path]
