"""``python -m benchmarks [--device cpu|cuda] [--quick]``: one table of ratios, each measured in this run,
printed and written to ``benchmarks/RESULTS.md`` (with the machine and its load)."""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks import measure
from lightning_sdc.io import atomic_write_text

TARGETS = {"sdc_overhead_DC": "<= 1.05", "sdc_overhead_MTT": "<= 1.05", "gm_floor": "<= 1.25",
           "tm_floor": "<= 1.25", "tm_memory_constant": "<= 1.15", "ddp_scaling": ">= 1.6", "ddp_scaling_mnist5k": ">= 1.6", "bf16_cosine_DC": ">= 0.99",
           "bf16_cosine_MTT": ">= 0.99", "gm_vs_reference_ipc1": ">= 2", "gm_vs_reference_ipc10": ">= 2",
           "gm_vs_reference_ipc1_cpu": ">= 2", "gm_vs_reference_ipc10_cpu": ">= 2", "gm_bf16_speedup": ">= 2", "gm_bf16_cosine": ">= 0.99",
           "tm_vs_reference_unrolled": ">= 1.2", "tm_vs_reference_constant": ">= 1.2", "eval_vs_reference_ipc1": ">= 2",
           "eval_vs_reference_ipc10": ">= 2", "eval_cpu_ratio_ipc1": ">= 2",
           "eval_cpu_ratio_ipc10": ">= 2", "eval_paired_max_diff": "<= 0.5", "eval_accuracy_gap": "<= 1", "tm_memory_constant_cifar": "<= 1.15"}
GROUPS = ("sdc", "vectorized", "floor", "memory", "memory_cifar", "ddp", "bf16", "gm_speed", "gm_bf16", "tm_speed", "eval_speed")


def _holds(name: str, value: float) -> str:
    target = TARGETS.get(name)
    if target is None or value != value:
        return "—"
    op, bound = target.split()
    return "yes" if (value <= float(bound) if op == "<=" else value >= float(bound)) else "no"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer steps and smaller sizes")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--only", default=",".join(GROUPS),
                    help=f"comma-separated row groups to run (default all): {', '.join(GROUPS)}")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was given but torch.cuda.is_available() is False")
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    steps = 4 if args.quick else 8
    gm_size = {"net": {"width": 32, "depth": 2}, "batch_real": 64}
    tm_size = {"net": {"width": 32, "depth": 2}, "syn_steps": 10, "ipc": 2}
    experts = measure.experts_dir(args.device, gm_size["net"])
    load = os.getloadavg()
    t0 = time.perf_counter()
    rows: list[tuple[str, float, str]] = []
    unit = "CUDA max_memory_allocated" if args.device == "cuda" else "peak RSS above the pre-update RSS, fresh subprocess"

    def sdc_rows():
        yield "sdc_overhead_DC", measure.sdc_overhead("DC", steps, args.device, **gm_size), "DC step λ=0.1 / λ=0 (median, 3 alternating runs each)"
        yield ("sdc_overhead_MTT", measure.sdc_overhead("MTT", steps, args.device, experts, **tm_size),
               "MTT step λ=0.1 / λ=0 (median, 3 alternating runs each)")

    def vectorized_rows():
        ratio, loop, vec = measure.gm_vectorized(max(3, steps // 2), args.device)
        yield ("gm_vectorized", ratio, f"DC mnist5k IPC 10, batch_real 256, ConvNet w32 d3: per-class loop "
               f"{loop:.2f}s / vmap {vec:.2f}s per step")

    def floor_rows():
        yield ("gm_floor", measure.gm_floor(steps, args.device, **gm_size),
               "DC step / bare per-class fwd-bwd + double-backward passes")
        yield ("tm_floor", measure.tm_floor(steps, args.device, experts, **tm_size),
               "MTT step (no DSA) / bare unrolled student passes + outer backward")

    def memory_rows():
        mem = measure.tm_memory((10, 40), args.device, experts, net=tm_size["net"], ipc=10)
        for mode in ("unrolled", "constant"):
            a, b = mem[f"{mode}_mib"]
            yield f"tm_memory_{mode}", mem[mode], f"MTT IPC 10: peak syn_steps 40 / 10, median of 3 ({a:.1f} → {b:.1f} MiB; {unit})"

    def memory_cifar_rows():
        if args.device == "cpu":
            ipc = {"unrolled": 2, "constant": 2 if args.quick else 10}
            mem = measure.tm_memory_cifar(ipc)
            for mode, k in ipc.items():
                a, b = mem[f"{mode}_mib"]
                yield (f"tm_memory_{mode}_cifar", mem[mode], f"MTT meta-update, 3×32×32 random, ConvNet-128, "
                       f"IPC {k}: peak syn_steps 40 / 10 ({a:.1f} → {b:.1f} MiB; {unit}); load {_load()}")

    def ddp_rows():
        if args.device == "cpu":
            ratio, t1, t2 = measure.ddp_scaling(2 * steps, **{**gm_size, "batch_real": 128})
            yield ("ddp_scaling", ratio, f"DC digits batch_real 128, {2 * steps - 2} steady steps: 1 proc {t1:.2f}s / "
                   f"2 procs (gloo) {t2:.2f}s; needs 2 idle cores (see the load)")
            # the GM speed benchmark's size (gm_vs_reference): a step long enough that the per-step
            # synchronisation is not the whole story
            n = 4 if args.quick else steps
            ratio, t1, t2 = measure.ddp_scaling(n, dataset="mnist5k", net={}, batch_real=256)
            yield ("ddp_scaling_mnist5k", ratio, f"DC mnist5k 1×28×28, ConvNet-128, batch_real 256, IPC 1, {n - 2} "
                   f"steady steps: 1 proc {t1:.2f}s / 2 procs (gloo) {t2:.2f}s; load {_load()}")

    def bf16_rows():
        for name, c in measure.bf16_cosine(args.device, experts, gm_size["net"]).items():
            yield f"bf16_cosine_{name}", c, "cos(bf16-mixed, fp32) image gradient, first update"

    rounds = 1 if args.quick else 2

    def gm_speed_rows():
        from benchmarks import speed

        peak = speed.cpu_peak()
        yield ("cpu_peak_gflops", max(peak.values()), "roofline: single-thread fp32 GFLOP/s of this CPU, best of " +
               ", ".join(f"{k} {v:.0f}" for k, v in peak.items()))
        for ipc in (1, 10):
            m = speed.gm_vs_reference(ipc, rounds + 1)
            flops = speed.gm_step_flops(ipc)
            what = (f"DC update, Fashion-MNIST 1×28×28, ConvNet-128, batch_real 256, IPC {ipc}"
                    f"{' + its 50 inner epochs' if ipc == 10 else ''}, fp32, one thread: re-written reference main.py "
                    f"loop / this library's default path (engine auto → {m['engine']}, {m['graphs']} compiled graphs)")
            yield (f"gm_vs_reference_ipc{ipc}", m["ratio"], f"{what}: wall {m['reference_s']:.2f}s / "
                   f"{m['library_s']:.2f}s; compile {m['compile_s']:.1f}s (first update, not in the ratio); "
                   f"{m['note']}; load {_load()}")
            yield (f"gm_vs_reference_ipc{ipc}_cpu", m["cpu_ratio"], f"the same runs in process CPU seconds (user + "
                   f"system): {m['reference_cpu_s']:.2f}s / {m['library_cpu_s']:.2f}s")
            yield (f"gm_gflops_ipc{ipc}", flops / m["library_cpu_s"] / 1e9, f"roofline: achieved GFLOP/s of the "
                   f"default path's update ({flops / 1e9:.0f} GFLOP per update / CPU seconds; reference loop "
                   f"{flops / m['reference_cpu_s'] / 1e9:.0f}), against cpu_peak_gflops")
        eq = speed.gm_equality(1)
        yield ("gm_compiled_rel_diff", eq["compiled_vs_eager"], "‖∇S compiled − ∇S eager‖/‖∇S eager‖, first λ=0 image "
               f"gradient at the gm_vs_reference IPC 1 size, fp32, fresh process ({eq['graphs']} compiled graphs)")
        yield ("gm_compiled_vs_fp64", eq["compiled_vs_fp64"], "the compiled engine's fp32 image gradient against an "
               f"fp64 eager run of the same update; eager fp32 is {eq['eager_vs_fp64']:.3g} from it")
        yield ("gm_eager_vs_fp64", eq["eager_vs_fp64"], "the eager fp32 image gradient against the fp64 run")
        cold, warm = speed.gm_compile_cache(1)
        yield ("gm_compile_cold_s", cold, "compile seconds of the default path at IPC 1 (first update − second), "
               "empty Inductor cache")
        yield ("gm_compile_warm_s", warm, "the same, second run with the cache the first left (no recompilation)")

    def gm_bf16_rows():
        from benchmarks import speed

        r, a, b, cos = speed.gm_bf16(1, rounds)
        yield ("gm_bf16_speedup", r, f"DC update mnist5k IPC 1, batch_real 256, ConvNet-128: 32-true {a:.1f}s / "
               f"bf16-mixed {b:.1f}s, alternating; CPU flags: {_bf16_flags()}; load {_load()}")
        yield "gm_bf16_cosine", cos, "cos(bf16-mixed, fp32) first image update at that size"
        for name, ratio in speed.bf16_kernels().items():
            yield (f"bf16_kernel_{name}", ratio, "fp32 / bf16 time of the bare kernel, one thread (matmul 1024²; conv "
                   "256×128×28×28 3×3 forward): the ceiling of gm_bf16_speedup on this CPU")

    def tm_speed_rows():
        from benchmarks import speed

        for memory, (r, a, b, note) in speed.tm_vs_reference(rounds).items():
            yield (f"tm_vs_reference_{memory}", r, f"MTT update, IPC 10, 20 inner steps, ConvNet-128, 3×32×32 random, "
                   f"fp32: ReparamModule-style loop {a:.1f}s / trajectory_objective({memory}"
                   f"{', compiled pass 1' if memory == 'constant' else ''}) {b:.1f}s; {note}; load {_load()}")

    def eval_speed_rows():
        from benchmarks import speed

        epochs, pairs = (100, {1: 1, 10: 1}) if args.quick else (300, {1: 3, 10: 2})
        diffs = []
        for ipc, models in pairs.items():  # the default evaluate_synset (compiled when it pays) against DC's loop
            r = speed.eval_vs_reference(ipc, models, epochs)
            diffs += [abs(a - b) * 100 for a, b in zip(r["acc_ref"], r["acc_ours"])]
            yield (f"eval_vs_reference_ipc{ipc}", r["ratio"], f"one evaluation network, Fashion-MNIST IPC {ipc}, "
                   f"ConvNet-128, {epochs} epochs + 10,000 test images, one thread: DC utils.py:evaluate_synset loop "
                   f"{r['reference_s']:.1f}s / evaluate_synset() default {r['ours_s']:.1f}s (median of {models} "
                   f"alternating pairs; compile warm-up {r['warmup_s']:.1f}s apart); acc reference "
                   f"{' '.join(f'{100 * a:.2f}' for a in r['acc_ref'])} / ours "
                   f"{' '.join(f'{100 * a:.2f}' for a in r['acc_ours'])} %; load {_load()}")
        yield ("eval_paired_max_diff", max(diffs), "max |acc reference − acc ours| (points) of the eval_vs_reference "
               "pairs: network i starts from the same weights on both sides")
        t = speed.eval_test_pass()
        for name in ("reference", "eager", "compiled"):
            yield (f"eval_test_pass_gflops_{name}", t[f"{name}_gflops"], f"achieved GFLOP/s of one 10,000-image "
                   f"Fashion-MNIST test pass of ConvNet-128 ({t[f'{name}_s']:.1f} CPU s; forward FLOPs of "
                   "torch.utils.flop_counter), to read against cpu_peak_gflops; load " + _load())
        for ipc in pairs:  # CPU seconds of one network by parts: `epochs + 1` steps and the test pass
            step = speed.eval_step_seconds(ipc)
            ref = (epochs + 1) * step["reference"] + t["reference_s"]
            ours = (epochs + 1) * step["ours"] + t["compiled_s"]
            yield (f"eval_cpu_ratio_ipc{ipc}", ref / ours, f"one network in process CPU seconds by parts, Fashion-MNIST "
                   f"IPC {ipc}: {epochs + 1} steps × {1e3 * step['reference']:.1f} / {1e3 * step['ours']:.1f} ms + "
                   f"test pass {t['reference_s']:.1f} / {t['compiled_s']:.1f} s = {ref:.1f} / {ours:.1f} s; load "
                   + _load())
        gap, note = speed.eval_accuracy_gap(10, 300)
        yield "eval_accuracy_gap", gap, f"|mean ours − mean reference| / std reference: {note}"

    chosen = set(args.only.split(","))
    args.kept = _earlier_rows(Path(args.out)) if chosen != set(GROUPS) else ([], [])
    unknown = chosen - set(GROUPS)
    if unknown:
        raise ValueError(f"--only {args.only!r}: unknown group(s) {sorted(unknown)}; allowed: {', '.join(GROUPS)}")
    groups = (sdc_rows, vectorized_rows, floor_rows, memory_rows, memory_cifar_rows, ddp_rows, bf16_rows, gm_speed_rows, gm_bf16_rows,
              tm_speed_rows, eval_speed_rows)
    for group in (g for g in groups if g.__name__.removesuffix("_rows") in chosen):
        try:
            for row in group():
                rows.append(row)
                print(f"{row[0]:<22} {row[1]:8.3f}  {row[2]}", flush=True)
                _write(args, rows, load, time.perf_counter() - t0, steps, partial=True)
        except Exception as exc:  # a failing measurement is reported in the table, the others still run
            rows.append((group.__name__.removesuffix("_rows"), float("nan"), f"FAILED: {type(exc).__name__}: {exc}"))
            print(f"{group.__name__}: FAILED {exc!r}", flush=True)
    text = _write(args, rows, load, time.perf_counter() - t0, steps, partial=False)
    print(text)


def _earlier_rows(path: Path) -> tuple[list[str], list[str]]:
    """Table rows and the notes after the table of an earlier ``RESULTS.md`` (kept by an ``--only`` run)."""
    if not path.exists():
        return [], []
    text = path.read_text().splitlines()
    rows = [line for line in text if line.startswith("| ") and not line.startswith("| ratio")]
    start = next((i for i, line in enumerate(text) if line.startswith("## ")), len(text))
    return rows, text[start:]


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _bf16_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return ", ".join(f for f in ("amx_bf16", "avx512_bf16") if f in flags) or "none"


def _write(args: argparse.Namespace, rows: list[tuple[str, float, str]], load: tuple[float, float, float],
           elapsed: float, steps: int, partial: bool) -> str:
    """Render the table and write it atomically (after every row, so an interrupted run keeps its rows)."""
    machine = (f"{platform.node()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
               f"torch {torch.__version__} · device {args.device}"
               + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""))
    lines = [f"# Benchmarks ({'quick' if args.quick else 'default'}, {args.device})", "",
             f"Machine: {machine}. Load average at start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
             f"(shared with other jobs; timings are noisy). Total time: {elapsed:.0f} s. "
             f"Sizes (except gm_vectorized): digits 1×8×8, ConvNet width 32 depth 2, median of {steps} steps "
             "(first excluded).", "",
             "| ratio | value | target | holds | what |", "|---|---|---|---|---|"]
    for name, value, what in rows:
        shown = f"{value:.3g}" if value == value and 0 < abs(value) < 1e-3 else f"{value:.3f}"
        lines.append(f"| {name} | {shown} | {TARGETS.get(name, '—')} | {_holds(name, value)} | {what} |")
    kept_rows, notes = getattr(args, "kept", ([], []))
    names = {name for name, _, _ in rows}
    lines += [line.rstrip(" |") + " *(earlier run)* |" for line in kept_rows
              if line.split("|")[1].strip() not in names and "*(earlier run)*" not in line] + \
             [line for line in kept_rows if line.split("|")[1].strip() not in names and "*(earlier run)*" in line]
    if partial:
        lines += ["", "*(partial: the run is still going or was interrupted)*"]
    if notes:
        lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    atomic_write_text(text, args.out)
    return text


if __name__ == "__main__":
    main()
