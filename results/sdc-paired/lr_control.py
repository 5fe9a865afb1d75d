"""Control for the mnist5k MTT comparison: re-evaluate both sets of every seed at ONE learning rate.

MTT learns the evaluation lr (syn_lr) with the images, and the SDC runs ended with a slightly larger one, so the
paired accuracy difference mixes the images and the lr. Here each seed's two final sets (λ = 0 and λ = 0.01, saved
by `lightning-sdc compare` in runs/) are trained on by the seed's same 5 networks (300 epochs, DSA) at the λ = 0
run's learned lr; the paired difference then comes from the images alone.

    cd <repo> && nice -n 15 .venv/bin/python results/sdc-paired/lr_control.py
"""

import json
from pathlib import Path

import torch

from lightning_sdc.compare.stats import summarise_pairs
from lightning_sdc.data import load_dataset
from lightning_sdc.evaluation import evaluate_synset
from lightning_sdc.io import atomic_write_text
from lightning_sdc.synthetic import SyntheticSet

HERE = Path(__file__).resolve().parent
torch.set_num_threads(1)
runs = [json.loads(p.read_text()) for p in sorted((HERE / "runs").glob("sdc_lambda=*.json"))]
mtt = {(r["seed"], r["value"]): r for r in runs if "mnist5k_mtt" in r["configs"][-1] and r["value"] in ("0", "0.01")}
spec = load_dataset("mnist5k")
rows, base, sdc = [], [], []
for seed in sorted({s for s, _ in mtt}):
    r0, r1 = mtt[(seed, "0")], mtt[(seed, "0.01")]
    kw = {k: v for k, v in r0["eval"].items() if k not in ("test_images",)} | {"seed": seed}
    accs = [100 * evaluate_synset(SyntheticSet.load(HERE / "runs" / r["synset"]), spec, **kw).mean for r in (r0, r1)]
    base.append(accs[0])
    sdc.append(accs[1])
    rows.append(f"| {seed} | {kw['lr']:.5f} | {accs[0]:.2f} | {accs[1]:.2f} | {accs[1] - accs[0]:+.2f} |")
    print(rows[-1], flush=True)
s = summarise_pairs(base, sdc)
md = ["| seed | common lr (λ = 0 run's) | λ = 0 (%) | λ = 0.01 (%) | Δ (pp) |", "|---|---|---|---|---|", *rows, "",
      f"Paired difference at a common lr: {s.mean_diff:+.2f} pp, 95 % t CI [{s.t_ci[0]:+.2f}, {s.t_ci[1]:+.2f}], "
      f"bootstrap [{s.bootstrap_ci[0]:+.2f}, {s.bootstrap_ci[1]:+.2f}], p = {s.p:.3f}, {s.wins}/{s.n} seeds better."]
atomic_write_text("\n".join(md) + "\n", HERE / "lr_control.md")
print("\n".join(md))
