"""Tables and figure of a paired comparison (``lightning-sdc compare``), and the summary of several.

Per study ``<name>``: ``<name>.md`` (settings, per-seed accuracies and GraDN, each value against the baseline with
the paired statistics of :mod:`lightning_sdc.compare.stats`), ``<name>.csv`` (one row per value),
``<name>_runs.csv`` (one row per run), ``<name>.json`` (the same numbers, read by :func:`write_summary`) and
``<name>.png`` (left: each seed's accuracy across the values, one line per seed; right: each seed's paired
difference against the baseline, the mean and its t and bootstrap intervals) and ``<name>_sets.png`` (for each
seed the final sets of every value side by side, labelled with the value: :func:`sets_figure`).

Accuracies are in % and the per-set accuracy is the mean over its evaluation networks; the statistics take the
seed as the unit (the networks of one set are not independent samples of the set's quality).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_sdc.compare.runner import RunResult
from lightning_sdc.compare.stats import PairedSummary, summarise_pairs
from lightning_sdc.io import atomic_write_text


@dataclass
class Study:
    """A finished comparison: ``results`` hold one run per (seed, value) of ``values`` (the first = baseline)."""

    name: str
    cell: str
    key: str
    values: list[str]
    results: list[RunResult]
    overrides: list[str] = field(default_factory=list)
    bootstrap: int = 10000
    confidence: float = 0.95
    #: seed -> DD-Ranking references (``runner.execute_baseline``): random-subset accuracies and the full-data one
    baselines: dict[int, dict[str, Any]] = field(default_factory=dict)
    ddranking_weight: float = 0.5

    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.results})

    def run(self, seed: int, value: str) -> RunResult:
        for r in self.results:
            if r.seed == seed and r.value == value:
                return r
        raise KeyError(f"study {self.name}: no run for seed {seed}, {self.key}={value}")

    def accuracy(self, value: str) -> list[float]:
        """Per-seed set accuracy (mean over its networks, %), in seed order."""
        return [100 * float(np.mean(self.run(s, value).accuracies)) for s in self.seeds()]

    def gradn(self, value: str) -> list[float] | None:
        g = [self.run(s, value).gradn for s in self.seeds()]
        return None if any(x is None for x in g) else [float(x) for x in g]

    def label_robust(self, value: str) -> list[Any]:
        """Per seed, DD-Ranking's hard-label metrics of the set (round ``i`` = evaluation network ``i``, the same
        network on the random subset); empty without baselines."""
        from lightning_sdc.evaluation.ddranking import LabelRobustResult

        if not self.baselines:
            return []
        out = []
        for s in self.seeds():
            r, b = self.run(s, value), self.baselines[s]
            out.append(LabelRobustResult(r.eval.get("arch", ""), r.accuracies, b["accuracies"], b["full"],
                                         self.ddranking_weight))
        return out

    def summaries(self) -> dict[str, PairedSummary]:
        """Each non-baseline value against the baseline."""
        base = self.accuracy(self.values[0])
        return {v: summarise_pairs(base, self.accuracy(v), self.confidence, self.bootstrap) for v in self.values[1:]}


def _fmt_ci(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def settings_lines(study: Study) -> list[str]:
    r0 = study.results[0]
    ev = r0.eval
    nets = sorted({len(r.accuracies) for r in study.results})
    steps = sorted({r.steps for r in study.results})
    return [
        f"- cell: `{study.cell}` (configs {', '.join(f'`{c}`' for c in r0.configs)})",
        f"- varied: `{study.key}` ∈ {{{', '.join(study.values)}}} (baseline {study.values[0]}); fixed overrides: "
        + (", ".join(f"`{o}`" for o in study.overrides) or "none"),
        f"- seeds: {', '.join(map(str, study.seeds()))}; image updates per run: {', '.join(map(str, steps))}",
        f"- evaluation: {', '.join(map(str, nets))} fresh {ev.get('arch')} {ev.get('arch_kwargs') or '(default options)'} per set, "
        f"{ev.get('epochs')} epochs, augment={ev.get('augment')}, lr {ev.get('lr'):g} (first run), tested on "
        f"{ev.get('test_images', 'all')} test images; the same networks (init, batch order, "
        "augmentation) for every value of a seed",
        f"- distillation + evaluation time: {sum(r.distill_seconds for r in study.results) / 60:.1f} + "
        f"{sum(r.eval_seconds for r in study.results) / 60:.1f} min in all",
    ]


def markdown(study: Study) -> str:
    seeds, leaf = study.seeds(), _leaf(study.key)
    sums = study.summaries()
    conf = f"{100 * study.confidence:g} %"
    md = [f"### {study.name}", "", *settings_lines(study), "",
          f"| {leaf} | accuracy (%), mean ± std over seeds | GraDN | Δ vs {study.values[0]} (pp) | {conf} t CI | "
          f"{conf} bootstrap CI | p (paired t) | seeds better |",
          "|---|---|---|---|---|---|---|---|"]
    for v in study.values:
        acc = study.accuracy(v)
        g = study.gradn(v)
        gtxt = "—" if g is None else f"{np.mean(g):.4g}"
        head = f"| {v} | {np.mean(acc):.2f} ± {np.std(acc, ddof=1):.2f} | {gtxt} |"
        if v in sums:
            s = sums[v]
            md.append(f"{head} {s.mean_diff:+.2f} | {_fmt_ci(s.t_ci)} | {_fmt_ci(s.bootstrap_ci)} | {_fmt_p(s.p)} | "
                      f"{s.wins}/{s.n} |")
        else:
            md.append(f"{head} — | — | — | — | — |")
    if study.baselines:
        md += ddranking_lines(study)
    md += ["", "Per seed (accuracy % = mean over the set's networks" + ("; GraDN)" if study.gradn(study.values[0]) else ")"),
           "", "| seed | " + " | ".join(f"{leaf}={v}" for v in study.values) + " |",
           "|---|" + "---|" * len(study.values)]
    for s in seeds:
        cells = []
        for v in study.values:
            r = study.run(s, v)
            cells.append(f"{100 * np.mean(r.accuracies):.2f}" + ("" if r.gradn is None else f" ({r.gradn:.4g})"))
        md.append(f"| {s} | " + " | ".join(cells) + " |")
    if any(r.points or r.segments for r in study.results):
        md += ["", *run_lines(study)]
    return "\n".join(md) + "\n"


def run_lines(study: Study) -> list[str]:
    """Per run: the set's accuracy (mean ± std over its networks) at each evaluation point and at the end, the
    distillation wall time and the commits that computed it (``RunResult.points`` / ``segments``)."""
    steps = sorted({int(k) for r in study.results for k in r.points})
    head = [f"update {k}" for k in steps] + [f"final ({max(r.steps for r in study.results)})"]
    lines = ["Per run (accuracy %, mean ± std over the set's networks; the same networks at every point)", "",
             f"| seed | {_leaf(study.key)} | " + " | ".join(head) + " | distil (h) | eval (min) | commits |",
             "|---|---|" + "---|" * (len(head) + 3)]

    def cell(accs: Sequence[float] | None) -> str:
        if not accs:
            return "—"
        a = 100 * np.asarray(accs)
        return f"{a.mean():.2f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.2f} ({a.size})"

    for s in study.seeds():
        for v in study.values:
            r = study.run(s, v)
            commits = ", ".join(dict.fromkeys(seg.get("commit", "?") for seg in r.segments)) or "—"
            lines.append(f"| {s} | {v} | " + " | ".join([*(cell(r.points.get(str(k))) for k in steps),
                                                         cell(r.accuracies)])
                         + f" | {r.distill_seconds / 3600:.2f} | {r.eval_seconds / 60:.1f} | {commits} |")
    return lines


def ddranking_lines(study: Study) -> list[str]:
    """DD-Ranking's hard-label metrics per value (mean ± std over seeds of the per-seed means) and the paired LRS
    difference against the baseline."""
    b0 = study.baselines[study.seeds()[0]]
    rdm = np.mean([100 * np.mean(b["accuracies"]) for b in study.baselines.values()])
    lines = ["", f"DD-Ranking hard-label metrics (w = {study.ddranking_weight:g}): random real subset "
             f"{rdm:.2f} % (same networks, seed-drawn images), full data {100 * b0['full']:.2f} % "
             f"({b0['full_epochs']} epochs, one network, cached)", "",
             f"| {_leaf(study.key)} | IOR (pp) ↑ | HLR (pp) ↓ | LRS (%) ↑ | Δ LRS vs {study.values[0]} | "
             f"{100 * study.confidence:g} % t CI | p |", "|---|---|---|---|---|---|---|"]
    per = {v: {m: [r.metric(m)[0] for r in study.label_robust(v)] for m in ("ior", "hlr", "lrs")}
           for v in study.values}
    for v in study.values:
        cells = [f"{np.mean(per[v][m]):.2f} ± {np.std(per[v][m], ddof=1):.2f}" for m in ("ior", "hlr", "lrs")]
        if v == study.values[0]:
            tail = "— | — | — |"
        else:
            s = summarise_pairs(per[study.values[0]]["lrs"], per[v]["lrs"], study.confidence, study.bootstrap)
            tail = f"{s.mean_diff:+.2f} | {_fmt_ci(s.t_ci)} | {_fmt_p(s.p)} |"
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {tail}")
    return lines


def summary_csv(study: Study) -> str:
    sums = study.summaries()
    rows = ["study,key,value,seeds,networks,mean,std,gradn,diff,t_lo,t_hi,boot_lo,boot_hi,t,p,wins"]
    for v in study.values:
        acc, g = study.accuracy(v), study.gradn(v)
        nets = min(len(study.run(s, v).accuracies) for s in study.seeds())
        base = f"{study.name},{study.key},{v},{len(acc)},{nets},{np.mean(acc):.4f},{np.std(acc, ddof=1):.4f}," \
               f"{'' if g is None else f'{np.mean(g):.6g}'}"
        s = sums.get(v)
        rows.append(base + ("," * 8 if s is None else
                            f",{s.mean_diff:.4f},{s.t_ci[0]:.4f},{s.t_ci[1]:.4f},{s.bootstrap_ci[0]:.4f},"
                            f"{s.bootstrap_ci[1]:.4f},{s.t:.4f},{s.p:.6g},{s.wins}"))
    return "\n".join(rows) + "\n"


def runs_csv(study: Study) -> str:
    rows = ["study,key,value,seed,accuracy,networks,accuracies,gradn,steps,distill_seconds,eval_seconds,points"]
    for s in study.seeds():
        for v in study.values:
            r = study.run(s, v)
            accs = " ".join(f"{100 * a:.2f}" for a in r.accuracies)
            rows.append(f"{study.name},{study.key},{v},{s},{100 * np.mean(r.accuracies):.4f},{len(r.accuracies)},"
                        f"{accs},{'' if r.gradn is None else f'{r.gradn:.6g}'},{r.steps},{r.distill_seconds:.1f},"
                        f"{r.eval_seconds:.1f},"
                        + " ".join(f"{k}={100 * np.mean(a):.2f}" for k, a in sorted(r.points.items(), key=lambda x: int(x[0]))))
    return "\n".join(rows) + "\n"


def plot(study: Study, path: str | Path) -> Path:
    """Per-seed lines across the values (left), paired differences with the mean and both intervals (right)."""
    import matplotlib.pyplot as plt

    from lightning_sdc.figures import save_figure

    seeds, leaf = study.seeds(), _leaf(study.key)
    xs = np.arange(len(study.values))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    accs = np.array([study.accuracy(v) for v in study.values])  # [values, seeds]
    for j, s in enumerate(seeds):
        ax1.plot(xs, accs[:, j], marker="o", alpha=0.7, label=f"seed {s}")
    ax1.plot(xs, accs.mean(axis=1), color="k", linewidth=2.5, marker="s", label="mean")
    ax1.set_xticks(xs, study.values)
    ax1.set_xlabel(leaf)
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title(study.name)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    sums = study.summaries()
    rng = np.random.default_rng(0)
    for i, v in enumerate(study.values[1:], 1):
        s = sums[v]
        d = accs[i] - accs[0]
        ax2.scatter(np.full(d.size, i) + rng.uniform(-0.08, 0.08, d.size), d, color="grey", s=14, zorder=2)
        ax2.errorbar(i - 0.15, s.mean_diff, yerr=[[s.mean_diff - s.t_ci[0]], [s.t_ci[1] - s.mean_diff]], fmt="o",
                     color="C0", capsize=4, label="mean, t CI" if i == 1 else None)
        ax2.errorbar(i + 0.15, s.mean_diff, yerr=[[s.mean_diff - s.bootstrap_ci[0]], [s.bootstrap_ci[1] - s.mean_diff]],
                     fmt="s", color="C1", capsize=4, label="mean, bootstrap CI" if i == 1 else None)
    ax2.axhline(0, color="k", linewidth=0.8)
    ax2.set_xticks(xs[1:], [f"{v}\nvs {study.values[0]}" for v in study.values[1:]])
    ax2.set_xlim(0.4, len(study.values) - 0.4)
    ax2.set_ylabel(f"paired difference (pp), {100 * study.confidence:g} % CI")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def sets_figure(study: Study, runs_dir: str | Path, path: str | Path) -> Path:
    """The final sets of every run side by side (:func:`lightning_sdc.figures.save_grid`): seed by seed, the
    values of the varied key in order, each panel titled with its seed and value; one row per class."""
    from lightning_sdc.figures import save_grid
    from lightning_sdc.synthetic import SyntheticSet

    sets = {(s, v): SyntheticSet.load(Path(runs_dir) / study.run(s, v).synset)
            for s in study.seeds() for v in study.values}
    panels = [(f"seed {s}\n{_leaf(study.key)} = {v}", synset.pixels()) for (s, v), synset in sets.items()]
    return save_grid(path, panels, next(iter(sets.values())).class_names)


def record(study: Study) -> dict[str, Any]:
    """The numbers of :func:`markdown` as JSON (what :func:`write_summary` reads)."""
    return {
        "name": study.name, "cell": study.cell, "key": study.key, "values": study.values, "seeds": study.seeds(),
        "networks": min(len(r.accuracies) for r in study.results), "steps": max(r.steps for r in study.results),
        "eval_epochs": study.results[0].eval.get("epochs"), "overrides": study.overrides,
        "accuracy": {v: study.accuracy(v) for v in study.values},
        "gradn": {v: study.gradn(v) for v in study.values},
        "paired": {v: asdict(s) for v, s in study.summaries().items()},
        "ddranking": {v: {m: [r.metric(m)[0] for r in study.label_robust(v)] for m in ("ior", "hlr", "lrs")}
                      for v in study.values} if study.baselines else None,
        "markdown": markdown(study),
    }


def write_report(study: Study, out_dir: str | Path) -> str:
    """Write ``<out_dir>/<name>.{md,csv,json,png}`` and ``<name>_runs.csv``; return the Markdown."""
    out_dir = Path(out_dir)
    md = markdown(study)
    atomic_write_text(f"# Paired comparison: {study.name}\n\n" + md, out_dir / f"{study.name}.md")
    atomic_write_text(summary_csv(study), out_dir / f"{study.name}.csv")
    atomic_write_text(runs_csv(study), out_dir / f"{study.name}_runs.csv")
    atomic_write_text(json.dumps(record(study), indent=1), out_dir / f"{study.name}.json")
    plot(study, out_dir / f"{study.name}.png")
    return md


def summary_rows(records: Sequence[dict[str, Any]]) -> list[str]:
    """One Markdown row per (study, non-baseline value): seeds, networks, mean paired difference, CIs, p."""
    rows = ["| study | varied | seeds | networks/set | updates | baseline (%) | value (%) | Δ (pp) | 95 % t CI | "
            "95 % bootstrap CI | p | seeds better |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in records:
        base = rec["values"][0]
        for v, s in rec["paired"].items():
            rows.append(
                f"| {rec['name']} | {_leaf(rec['key'])} {base} → {v} | {s['n']} | {rec['networks']} | {rec['steps']} | "
                f"{s['mean_a']:.2f} | {s['mean_b']:.2f} | {s['mean_diff']:+.2f} | {_fmt_ci(tuple(s['t_ci']))} | "
                f"{_fmt_ci(tuple(s['bootstrap_ci']))} | {_fmt_p(s['p'])} | {s['wins']}/{s['n']} |")
    return rows


def write_summary(records: Sequence[str | Path], out: str | Path, preamble: str = "") -> Path:
    """``out`` (.md): ``preamble``, the summary table of every study record (``<name>.json``), then each study's
    tables; the same summary as ``out`` with suffix ``.csv``."""
    recs = [json.loads(Path(p).read_text()) for p in records]
    if not recs:
        raise ValueError("write_summary needs at least one study record (<name>.json)")
    md = [preamble.rstrip(), "", *summary_rows(recs), ""] + [r["markdown"] for r in recs]
    csv = ["study,key,baseline,value,seeds,networks,updates,mean_baseline,mean_value,diff,t_lo,t_hi,boot_lo,boot_hi,p,wins"]
    for r in recs:
        for v, s in r["paired"].items():
            csv.append(f"{r['name']},{r['key']},{r['values'][0]},{v},{s['n']},{r['networks']},{r['steps']},"
                       f"{s['mean_a']:.4f},{s['mean_b']:.4f},{s['mean_diff']:.4f},{s['t_ci'][0]:.4f},{s['t_ci'][1]:.4f},"
                       f"{s['bootstrap_ci'][0]:.4f},{s['bootstrap_ci'][1]:.4f},{s['p']:.6g},{s['wins']}")
    out = Path(out)
    atomic_write_text("\n".join(md).lstrip() + "\n", out)
    atomic_write_text("\n".join(csv) + "\n", out.with_suffix(".csv"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Combine study records (<name>.json of lightning-sdc compare) into one "
                                "Markdown + CSV summary.")
    p.add_argument("records", nargs="+")
    p.add_argument("--out", required=True, help="the Markdown path (the CSV gets the same stem)")
    p.add_argument("--preamble", default="", help="a Markdown file put above the tables")
    a = p.parse_args(argv)
    pre = Path(a.preamble).read_text() if a.preamble else ""
    print(write_summary(a.records, a.out, pre))


if __name__ == "__main__":
    main()
