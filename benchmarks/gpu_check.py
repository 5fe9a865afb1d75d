"""``python -m benchmarks.gpu_check [--device cuda|cpu] [--quick] [--out FILE] [--skip SECTION ...]``: the one
GPU check (``make test-gpu``), ≤ 10 minutes on a CUDA machine, writing one Markdown report.

Sections, each in a fresh subprocess with a time limit taken from one overall budget (``--budget``, default 540 s),
so a hung or slow section is reported (with the results it finished) and the others still run:

* ``dc``: DC (+ SDC λ = 0.01) on ``mnist5k`` at IPC 10 with the reference ConvNet (width 128, depth 3), a few
  hundred image updates in ``32-true``, ``bf16-mixed`` and ``16-mixed`` in turn, then the test
  accuracy of fresh ConvNets trained on each set (:func:`~lightning_sdc.evaluation.evaluate_synset`, DC's
  augmentation) — the three should agree within noise.
* ``mtt``: MTT on ``digits`` (experts trained first, on the device) in ``memory="unrolled"`` and
  ``memory="constant"`` in turn, with the peak ``torch.cuda.max_memory_allocated`` of the updates, the
  accuracy of the sets and how far the two modes' sets are apart (they follow the same gradient).
* ``tests``: ``pytest -m cuda`` (the CUDA tests: fp16/bf16 against fp32, peak memory of the two TM modes, …).
* ``bench``: ``python -m benchmarks --device cuda --quick``; its table is copied into the report.

Without a GPU, ``--device cpu --quick`` runs the same code at tiny sizes (``digits``, IPC 1, a few updates;
Lightning runs ``16-mixed`` as ``bf16-mixed`` on CPU and the report says so; memory is not measured), which a
test of the default suite executes so this script cannot rot unnoticed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("dc", "mtt", "tests", "bench")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
MEMORY_MODES = ("unrolled", "constant")
#: the longest each section may take (seconds) on a CUDA machine, before the overall budget cuts it
SECTION_LIMIT = {"dc": 240, "mtt": 100, "tests": 150, "bench": 210}


def sizes(device: str, quick: bool) -> dict[str, Any]:
    """Problem sizes: the GPU check proper, or tiny CPU ones (the fallback)."""
    if device == "cuda":
        return {
            "dc": {"dataset": "mnist5k", "ipc": 10, "net": {"width": 128, "depth": 3}, "batch_real": 256,
                   "outer_loop": 10, "inner_loop": 10, "steps": 100 if quick else 300,
                   "eval_num_models": 3, "eval_epochs": 300},
            "mtt": {"net": {"width": 32, "depth": 2}, "ipc": 10, "syn_steps": 40, "steps": 20 if quick else 50,
                    "experts": 4, "eval_num_models": 3, "eval_epochs": 300},
        }
    return {
        "dc": {"dataset": "digits", "ipc": 1, "net": {"width": 16, "depth": 2}, "batch_real": 16,
               "outer_loop": 1, "inner_loop": 1, "steps": 3 if quick else 20, "eval_num_models": 1,
               "eval_epochs": 10 if quick else 100},
        "mtt": {"net": {"width": 8, "depth": 1}, "ipc": 1, "syn_steps": 4, "steps": 2 if quick else 10,
                "experts": 2, "eval_num_models": 1, "eval_epochs": 10 if quick else 100},
    }


# ------------------------------------------------------------------------------------------ child sections
def _trainer(steps: int, device: str, precision: str = "32-true") -> Any:
    from benchmarks.setups import make_trainer

    return make_trainer(steps, accelerator=device, devices=1, precision=precision)


def _accuracy(synset: Any, dataset: str, net: dict[str, int], size: dict[str, Any], device: str,
              augment: str) -> dict[str, float]:
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation.protocol import evaluate_synset

    res = evaluate_synset(synset, load_dataset(dataset), arch="ConvNet", arch_kwargs=net,
                          num_models=size["eval_num_models"], epochs=size["eval_epochs"], augment=augment, device=device)
    return {"acc_mean": res.mean, "acc_std": res.std, "eval_num_models": res.num_models, "eval_seconds": res.seconds}


def _peak_start(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device: str, base: int) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_dc(device: str, quick: bool, precision: str) -> dict[str, Any]:
    """One DC run in ``precision`` (see the module docstring)."""
    from lightning_sdc.data import RealDataModule
    from lightning_sdc.methods.gm.gradient import DC

    s = sizes(device, quick)["dc"]
    model = DC(s["dataset"], s["ipc"], arch_kwargs=s["net"], batch_real=s["batch_real"], outer_loop=s["outer_loop"],
               inner_loop=s["inner_loop"], sdc_lambda=0.01, seed=0, eval_num_models=1, eval_epochs=1)
    trainer = _trainer(s["steps"], device, precision)
    start = model.synset.images.detach().clone()
    _peak_start(device)
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    t0 = time.perf_counter()
    trainer.fit(model, RealDataModule(s["dataset"]))
    seconds = time.perf_counter() - t0
    images = model.synset.images.detach()
    out = {"section": "dc", "precision": precision, "precision_used": str(trainer.precision), "steps": s["steps"],
           "seconds": seconds, "peak_mib": _peak_mib(device, base), "dtype": str(images.dtype),
           "finite": bool(torch.isfinite(images).all()), "moved": float((images.cpu() - start.cpu()).abs().max())}
    out.update(_accuracy(model.synset, s["dataset"], s["net"], s, device, "dc"))
    return out


def run_mtt(device: str, quick: bool, memory: str, workdir: Path) -> dict[str, Any]:
    """One MTT run in ``memory`` mode on digits (experts trained on the device first, once per check)."""
    from benchmarks.setups import tm_datamodule, tm_model
    from lightning_sdc.experts import train_experts
    from lightning_sdc.io import atomic_torch_save
    from lightning_sdc.methods.tm import MTT

    s = sizes(device, quick)["mtt"]
    experts = workdir / "experts"
    train_experts("digits", arch_kwargs=s["net"], num_experts=s["experts"], epochs=3, out=str(experts),
                  device=device, progress=False)  # the second mode finds them and trains nothing
    model = tm_model(MTT, net=s["net"], ipc=s["ipc"], syn_steps=s["syn_steps"], memory=memory, seed=0)
    trainer = _trainer(s["steps"], device)
    _peak_start(device)
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    t0 = time.perf_counter()
    trainer.fit(model, tm_datamodule(experts, net=s["net"]))
    seconds = time.perf_counter() - t0
    images = model.synset.images.detach().cpu()
    atomic_torch_save(images, workdir / f"mtt_{memory}.pt")
    out = {"section": "mtt", "memory": memory, "steps": s["steps"], "syn_steps": s["syn_steps"], "ipc": s["ipc"],
           "seconds": seconds, "peak_mib": _peak_mib(device, base), "finite": bool(torch.isfinite(images).all())}
    out.update(_accuracy(model.synset, "digits", s["net"], s, device, "dsa"))
    return out


def _child(args: argparse.Namespace) -> None:
    """One section's variants in turn, in this (fresh) process; each result is written as soon as it exists."""
    from lightning_sdc.io import atomic_write_text

    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    workdir = Path(args.workdir)
    for variant in PRECISIONS if args.section == "dc" else MEMORY_MODES:
        if args.section == "dc":
            result = run_dc(args.device, args.quick, variant)
        else:
            result = run_mtt(args.device, args.quick, variant, workdir)
        atomic_write_text(json.dumps(result), workdir / f"{args.section}_{variant}.json")


# ------------------------------------------------------------------------------------------ parent
def _run(cmd: list[str], timeout: float, log: Path) -> tuple[str, float]:
    """Run ``cmd`` with ``timeout``; its output goes to ``log``. Returns (status, seconds)."""
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=max(1.0, timeout),
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    return status, time.perf_counter() - t0


def _tail(log: Path, n: int = 6) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-n:])


class Budget:
    """One overall time budget shared by the sections (``SECTION_LIMIT`` each at most, scaled for ``--quick``)."""

    def __init__(self, seconds: float, device: str, quick: bool) -> None:
        self.end = time.perf_counter() + seconds
        self.scale = 1.0 if device == "cuda" and not quick else 0.6

    def timeout(self, section: str) -> float:
        return max(1.0, min(SECTION_LIMIT[section] * self.scale, self.end - time.perf_counter()))


def run_check(device: str, quick: bool, out: Path, skip: tuple[str, ...] = (), budget: float = 540.0) -> str:
    """Run every section not in ``skip`` and write the report to ``out``; returns the report text."""
    t0 = time.perf_counter()
    clock = Budget(budget, device, quick)
    load = os.getloadavg()
    me = [sys.executable, "-m", "benchmarks.gpu_check", "--device", device] + (["--quick"] if quick else [])
    sections: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        for section, variants, key in (("dc", PRECISIONS, "precision"), ("mtt", MEMORY_MODES, "memory")):
            if section in skip:
                continue
            log = work / f"{section}.log"
            status, _ = _run(me + ["--section", section, "--workdir", tmp], clock.timeout(section), log)
            runs = []
            for variant in variants:
                res = work / f"{section}_{variant}.json"
                runs.append({**json.loads(res.read_text()), "status": "ok"} if res.exists() else
                            {key: variant, "status": status if status != "ok" else "no result", "tail": _tail(log)})
            sections[section] = runs
        if "mtt" in sections:
            sets = [work / f"mtt_{m}.pt" for m in MEMORY_MODES]
            if all(p.exists() for p in sets):
                a, b = (torch.load(p, weights_only=True) for p in sets)
                sections["mtt"][0]["modes_max_abs_diff"] = float((a - b).abs().max())
        if "tests" not in skip:
            log = work / "tests.log"
            targets = ["tests/"] if device == "cuda" else ["tests/test_gpu.py"]
            status, secs = _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                                 *targets], clock.timeout("tests"), log)
            sections["tests"] = {"status": status, "seconds": secs, "summary": _tail(log, 1), "tail": _tail(log, 12)}
        if "bench" not in skip:
            log, table = work / "bench.log", work / "bench.md"
            status, secs = _run([sys.executable, "-m", "benchmarks", "--device", device, "--quick", "--out",
                                 str(table)], clock.timeout("bench"), log)
            sections["bench"] = {"status": status, "seconds": secs,
                                 "table": table.read_text() if table.exists() else "", "tail": _tail(log)}
    text = render(device, quick, sections, load, time.perf_counter() - t0, budget)
    from lightning_sdc.io import atomic_write_text

    atomic_write_text(text, out)
    return text


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def render(device: str, quick: bool, sections: dict[str, Any], load: tuple[float, ...], elapsed: float,
           budget: float) -> str:
    """The Markdown report."""
    gpu = f" ({torch.cuda.get_device_name()})" if device == "cuda" and torch.cuda.is_available() else ""
    machine = (f"{platform.node()} · {os.cpu_count()} CPUs · torch {torch.__version__} · device {device}{gpu}")
    s = sizes(device, quick)
    lines = [f"# GPU check ({device}{', quick' if quick else ''})", "",
             f"`python -m benchmarks.gpu_check --device {device}{' --quick' if quick else ''}` — machine: {machine}; "
             f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; total {elapsed:.0f} s of a "
             f"{budget:.0f} s budget.", ""]
    if device != "cuda":
        lines += ["CPU fallback at tiny sizes: exercises the code paths, measures nothing about GPUs "
                  "(no CUDA memory; Lightning runs `16-mixed` as `bf16-mixed` on CPU).", ""]
    if "dc" in sections:
        d = s["dc"]
        lines += [f"## DC + SDC on {d['dataset']}, IPC {d['ipc']}, ConvNet {d['net']}, {d['steps']} updates", "",
                  f"Accuracy: {d['eval_num_models']} fresh ConvNets × {d['eval_epochs']} epochs (DC augmentation) on "
                  "each final set.", "",
                  "| precision | ran as | status | s / update | peak MiB | images finite | accuracy |",
                  "|---|---|---|---|---|---|---|"]
        for r in sections["dc"]:
            per = r["seconds"] / r["steps"] if "seconds" in r else None
            acc = (f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} %" if "acc_mean" in r else "—")
            lines.append(f"| {r['precision']} | {r.get('precision_used', '—')} | {r['status']} | {_fmt(per)} | "
                         f"{_fmt(r.get('peak_mib'), '.1f')} | {r.get('finite', '—')} | {acc} |")
        lines += _failures(sections["dc"])
    if "mtt" in sections:
        m = s["mtt"]
        lines += ["", f"## MTT on digits, IPC {m['ipc']}, syn_steps {m['syn_steps']}, ConvNet {m['net']}, "
                  f"{m['steps']} updates", "",
                  "Peak: `torch.cuda.max_memory_allocated` above the memory held before the updates.", "",
                  "| memory | status | s / update | peak MiB | images finite | accuracy |", "|---|---|---|---|---|---|"]
        for r in sections["mtt"]:
            per = r["seconds"] / r["steps"] if "seconds" in r else None
            acc = (f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} %" if "acc_mean" in r else "—")
            lines.append(f"| {r['memory']} | {r['status']} | {_fmt(per)} | {_fmt(r.get('peak_mib'), '.1f')} | "
                         f"{r.get('finite', '—')} | {acc} |")
        diff = sections["mtt"][0].get("modes_max_abs_diff")
        if diff is not None:
            lines += ["", f"Largest difference between the two modes' final images: {diff:.3g} (same gradient, "
                      "different order of floating-point operations)."]
        lines += _failures(sections["mtt"])
    if "tests" in sections:
        t = sections["tests"]
        lines += ["", "## CUDA tests (`pytest -m cuda`)", "", f"Status: {t['status']} in {t['seconds']:.0f} s — "
                  f"`{t['summary']}`"]
        if t["status"] != "ok":
            lines += ["", "```", t["tail"], "```"]
    if "bench" in sections:
        b = sections["bench"]
        lines += ["", f"## `python -m benchmarks --device {device} --quick`", "",
                  f"Status: {b['status']} in {b['seconds']:.0f} s.", ""]
        body = [ln for ln in b["table"].splitlines() if not ln.startswith("# ")]
        lines += body if body else ["```", b["tail"], "```"]
    return "\n".join(lines).rstrip() + "\n"


def _failures(runs: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in runs:
        if "tail" in r:
            out += ["", f"{r.get('precision') or r.get('memory')}: {r['status']}", "```", r["tail"], "```"]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer updates (CPU: tiny sizes)")
    ap.add_argument("--out", default=None, help="report path (default benchmarks/GPU_CHECK.md, "
                    "benchmarks/GPU_CHECK_cpu.md for the CPU fallback)")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS, help="sections to leave out")
    ap.add_argument("--budget", type=float, default=540.0, help="overall time limit of the sections, seconds")
    ap.add_argument("--section", choices=("dc", "mtt"), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but torch.cuda.is_available() is False; use --device cpu --quick")
    if not args.budget > 0:
        raise ValueError(f"--budget must be > 0 seconds, got {args.budget}")
    if args.section:
        _child(args)
        return
    name = "GPU_CHECK.md" if args.device == "cuda" else "GPU_CHECK_cpu.md"
    out = Path(args.out) if args.out else Path(__file__).with_name(name)
    text = run_check(args.device, args.quick, out, tuple(args.skip), args.budget)
    print(text)
    print(f"report written to {out}")


if __name__ == "__main__":
    main()
