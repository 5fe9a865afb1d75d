"""``python -m benchmarks.tm_modes [--device cpu|cuda]``: MTT's two memory modes at the digits demo size.

For ``memory="unrolled"`` (MTT: the graph of all ``syn_steps`` student updates is kept for the outer backward)
and ``memory="constant"`` (TESLA's two passes: the student's trajectory is recomputed one step at a time, see
:mod:`lightning_sdc.methods.tm.meta`) at ``syn_steps`` 10 and 40, measures

* the step time: median over the updates after a warm-up one (:func:`benchmarks.measure.step_time`) of the MTT
  demo ``configs/demo/digits_mtt_ipc1.yaml`` exactly as configured (its experts, sampling window, λ, lrs and DSA
  at every inner step), only ``memory`` and ``syn_steps`` changed;
* the peak memory of one update in a fresh subprocess (:func:`benchmarks.measure.tm_memory`, i.e.
  ``benchmarks/memory_worker.py``, on the demo's experts, network and IPC: CPU peak RSS during the measured
  update above the RSS before it, after a warm-up update; CUDA ``max_memory_allocated`` growth; no inner DSA).

The demo's experts are trained on first use into ``buffers/`` of the repository, as the demo does.
Writes ``results/tm_modes.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks import measure
from lightning_sdc.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo" / "digits_mtt_ipc1.yaml"
MODES = ("unrolled", "constant")
SYN_STEPS = (10, 40)


def demo_args() -> tuple[dict[str, Any], dict[str, Any]]:
    """The MTT demo's model and DataModule ``init_args`` (its relative ``buffer_dir`` resolved under ROOT)."""
    cfg = yaml.safe_load(DEMO_CONFIG.read_text())
    model_kw, data_kw = dict(cfg["model"]["init_args"]), dict(cfg["data"]["init_args"])
    data_kw["buffer_dir"] = str(ROOT / data_kw["buffer_dir"])
    return model_kw, data_kw


def demo_datamodule(data_kw: dict[str, Any]) -> Any:
    from lightning_sdc.experts import ExpertTrajectoryDataModule

    return ExpertTrajectoryDataModule(**data_kw)


def step_times(steps: int, device: str, model_kw: dict[str, Any], data_kw: dict[str, Any]) -> dict[tuple[str, int], float]:
    """Median seconds per MTT update for every (memory mode, syn_steps), first update excluded."""
    from lightning_sdc.methods.tm import MTT

    out = {}
    for memory in MODES:
        for syn_steps in SYN_STEPS:
            model = MTT(**{**model_kw, "memory": memory, "syn_steps": syn_steps, "eval_num_models": 1, "eval_epochs": 1})
            out[memory, syn_steps] = measure.step_time(model, demo_datamodule(data_kw), steps, device)
    return out


def render(times: dict[tuple[str, int], float], mem: dict[str, Any], steps: int, device: str,
           load: tuple[float, float, float], elapsed: float) -> str:
    """The Markdown table: one row per (mode, syn_steps), then the 40 / 10 growth of each mode."""
    machine = (f"{platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
               f"{torch.get_num_threads()} torch thread(s) · torch {torch.__version__} · device {device}"
               + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))
    unit = ("CUDA max_memory_allocated growth" if device == "cuda"
            else "peak RSS above the RSS before it, in a fresh subprocess after a warm-up update")
    lo, hi = SYN_STEPS
    lines = ["# TM memory modes: MTT unrolled vs constant (digits demo size)", "",
             f"Machine: {machine}. Load average at start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared; "
             f"timings are noisy). Total time: {elapsed:.0f} s.", "",
             "Size: `configs/demo/digits_mtt_ipc1.yaml` (digits 1×8×8, IPC 1, ConvNet width 32 depth 2, its 4 "
             f"experts), only `memory` and `syn_steps` changed. Step time: median of {steps - 1} updates after a "
             "warm-up one, as the demo runs them (λ 0.01, DSA at every inner step). Peak memory: one update, "
             f"{unit} (`benchmarks/memory_worker.py`: no inner DSA).", "",
             "| memory | syn_steps | step time (ms) | peak memory (MiB) |", "|---|---|---|---|"]
    for memory in MODES:
        for i, syn_steps in enumerate(SYN_STEPS):
            lines.append(f"| {memory} | {syn_steps} | {times[memory, syn_steps] * 1e3:.1f} | "
                         f"{mem[f'{memory}_mib'][i]:.1f} |")
    lines += ["", f"| memory | step time {hi} / {lo} | peak memory {hi} / {lo} |", "|---|---|---|"]
    for memory in MODES:
        lines.append(f"| {memory} | {times[memory, hi] / times[memory, lo]:.2f} | {mem[memory]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tm_modes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=7, help="updates per timing run, the first is the warm-up")
    ap.add_argument("--out", default=str(ROOT / "results" / "tm_modes.md"))
    args = ap.parse_args(argv)
    if args.steps < 6:
        raise ValueError(f"--steps={args.steps} is not allowed: at least 6 (a warm-up plus a median of >= 5)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but torch.cuda.is_available() is False")
    if args.device == "cpu":
        torch.set_num_threads(1)
    load = os.getloadavg()
    t0 = time.perf_counter()
    model_kw, data_kw = demo_args()
    demo_datamodule(data_kw).prepare_data()  # the demo's experts, trained once if missing
    times = step_times(args.steps, args.device, model_kw, data_kw)
    size = {"net": model_kw["arch_kwargs"], "ipc": model_kw["ipc"]}
    mem = measure.tm_memory(SYN_STEPS, args.device, Path(data_kw["buffer_dir"]), **size)
    text = render(times, mem, args.steps, args.device, load, time.perf_counter() - t0)
    atomic_write_text(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
