"""Paired statistics of a comparison: the mean difference, its t and bootstrap confidence intervals, the p-value.

The unit of pairing is the seed: ``a[i]`` and ``b[i]`` are the accuracies (mean over the evaluation networks)
of the sets distilled with seed ``i`` under the two values, evaluated on the same networks. With the paired
differences ``d_i = b_i − a_i`` (``n`` seeds, mean ``d̄``, sample std ``s`` with ``n − 1`` degrees of freedom):

* t interval: ``d̄ ± t_{(1+c)/2, n−1} · s / √n`` (Student; ``scipy.stats.ttest_1samp(d).confidence_interval``);
* paired t-test: ``t = d̄ / (s / √n)``, two-sided ``p = 2 · (1 − F_{t, n−1}(|t|))`` (``scipy.stats.ttest_rel``);
* bootstrap interval: the percentile interval of the mean of ``n`` differences resampled with replacement
  (Efron & Tibshirani 1993, ch. 13; ``scipy.stats.bootstrap(method="percentile")``), drawn from a seeded
  generator so a report is reproducible.

With 5 seeds the t interval assumes roughly normal differences and the percentile bootstrap is known to be too
narrow for tiny ``n``: both are reported, neither is exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from lightning_sdc.checks import check_int, check_number


def paired_differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``b − a`` elementwise; both finite, of one length >= 2."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired samples must be two 1-D sequences of one length, got {a.shape} and {b.shape}")
    if a.size < 2:
        raise ValueError(f"a paired comparison needs >= 2 pairs, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired samples must be finite numbers")
    return b - a


def t_interval(d: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of ``d`` (``scipy.stats.ttest_1samp``'s interval; a point when
    every difference is equal)."""
    d = np.asarray(d, dtype=np.float64)
    if float(d.std(ddof=1)) == 0.0:
        return float(d.mean()), float(d.mean())
    ci = _st.ttest_1samp(d, 0.0).confidence_interval(check_number("confidence", confidence, 0, below=1))
    return float(ci.low), float(ci.high)


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(t, two-sided p)`` of the paired t-test of ``b − a`` (``scipy.stats.ttest_rel``); identical differences
    give ``(0, 1)`` when they are all 0 and ``(±inf, 0)`` otherwise (``scipy`` returns NaN for both)."""
    d = paired_differences(a, b)
    m = float(d.mean())
    if float(d.std(ddof=1)) == 0.0:
        return (0.0, 1.0) if m == 0.0 else (math.copysign(math.inf, m), 0.0)
    res = _st.ttest_rel(np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)


def bootstrap_interval(d: Sequence[float], confidence: float = 0.95, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``d`` (``scipy.stats.bootstrap``, ``resamples`` resamples
    drawn from ``default_rng(seed)``; a point when every difference is equal)."""
    d = np.asarray(d, dtype=np.float64)
    check_int("resamples", resamples, 1)
    confidence = check_number("confidence", confidence, 0, below=1)
    if float(d.std()) == 0.0:
        return float(d.mean()), float(d.mean())
    ci = _st.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                       random_state=np.random.default_rng(seed)).confidence_interval
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class PairedSummary:
    """``b`` against ``a`` over ``n`` seeds (accuracies as given, e.g. in %)."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    sd_diff: float
    t_ci: tuple[float, float]
    bootstrap_ci: tuple[float, float]
    t: float
    p: float
    wins: int
    confidence: float

    @property
    def significant(self) -> bool:
        """The t interval excludes 0 (equivalently ``p < 1 − confidence``)."""
        return self.t_ci[0] > 0 or self.t_ci[1] < 0


def summarise_pairs(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, resamples: int = 10000,
                    seed: int = 0) -> PairedSummary:
    """All statistics of ``b − a`` in one record."""
    d = paired_differences(a, b)
    t, p = paired_t_test(a, b)
    return PairedSummary(
        n=int(d.size), mean_a=float(np.mean(a)), mean_b=float(np.mean(b)), mean_diff=float(d.mean()),
        sd_diff=float(d.std(ddof=1)), t_ci=t_interval(d, confidence),
        bootstrap_ci=bootstrap_interval(d, confidence, resamples, seed), t=t, p=p, wins=int((d > 0).sum()),
        confidence=float(confidence),  # checked by bootstrap_interval
    )
