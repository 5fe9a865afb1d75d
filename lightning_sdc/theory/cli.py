"""``lightning-sdc theory``: draw the perceptron scaling-law figures (seed Fig. 4(a-c) and Fig. 15)."""

from __future__ import annotations

import sys
from dataclasses import replace

from lightning_sdc.progress import progress, quiet_mode

from .figures import FIGURES, CurveSettings, default_settings, make_figure, work_units


def _in_notebook() -> bool:
    """True inside a Jupyter/IPython kernel (whose inline backend must be left alone)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and type(shell).__name__ != "TerminalInteractiveShell"


def use_file_backend() -> None:
    """The command only writes PNG files: draw with Agg (no display needed), except inside a notebook, which keeps
    its own (inline) backend; matplotlib's font-fallback warnings are silenced. Called by :func:`theory_command`,
    never at import."""
    import logging

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)  # mathtext: "DejaVu Sans Display not found"
    if not _in_notebook():
        import matplotlib

        matplotlib.use("Agg")


def theory_command(
    figure: str,
    out: str = "runs/theory",
    alphas: int | None = None,
    repeats: int | None = None,
    d: int | None = None,
    quick: bool = False,
    seed: int = 0,
    quiet: bool = False,
) -> list[str]:
    """Compute (or load from the ``.npz`` cache next to it) and draw one theory figure as a PNG.

    Theory lines come from the saddle-point solvers (``solve_perfect`` / ``solve_imperfect``), dots from
    ``simulate`` (teacher-probe-student experiment with an exact max-margin student). A cache whose settings
    match is reused, so re-running is instant; changed settings recompute and overwrite it atomically.

    Args:
        figure: which figure: ``4a`` (error vs alpha per f), ``4b`` (hard minus easy error over (alpha, f)),
            ``4c`` (better strategy), ``15`` (probe angles 0, 10, 20 degrees).
        out: output directory for ``fig<figure>.png`` and its ``.npz`` cache (``make figures`` passes
            ``docs/figures``).
        alphas: number of log-spaced alpha values of the theory lines (or of the 4b/4c plane); default per
            figure (60 for 4a, 40 for 15, 61 for the 4b/4c plane).
        repeats: simulation repeats per dot (curves only; default 50 for 4a, 100 for 15).
        d: input dimension of the simulations (curves only; default 200 for 4a, 50 for 15, as in the seed).
        quick: tiny grids for a smoke test (seconds instead of minutes).
        seed: root seed of the simulations.
        quiet: no progress bar (there is none either when stderr is not a terminal).

    Returns:
        The paths written or reused: the PNG and the ``.npz`` cache.

    Raises:
        ValueError: an unknown figure or a non-positive count.
    """
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; allowed: {' | '.join(FIGURES)}")
    for name, value, low in (("alphas", alphas, 2), ("repeats", repeats, 2), ("d", d, 2)):
        if value is not None and (int(value) != value or value < low):
            raise ValueError(f"{name}={value!r} must be an integer >= {low}")
    settings = default_settings(figure, quick)
    if alphas is not None:
        settings = replace(settings, n_alpha=int(alphas))
    if isinstance(settings, CurveSettings):
        changes = {"seed": int(seed)}
        if repeats is not None:
            changes["repeats"] = int(repeats)
        if d is not None:
            changes["d"] = int(d)
        settings = replace(settings, **changes)
    from lightning_sdc.io import prepare_output_dir

    prepare_output_dir(out, "--out")  # before the computation
    use_file_backend()
    with quiet_mode(quiet), progress(total=work_units(settings), desc=f"fig{figure}", unit="pt") as bar:
        paths = make_figure(figure, out, settings, progress=bar.update)
    return [str(p) for p in paths]
