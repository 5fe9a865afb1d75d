"""``lightning-sdc compare``: a paired multi-seed comparison of the values of one config key.

::

    lightning-sdc compare --cell configs/demo/mnist5k_dsa_ipc1.yaml --seeds 5 \
        --vary model.init_args.sdc_lambda=0,0.01 --out runs/sdc-paired

distils the cell once per (seed, value) — seeds ``first_seed … first_seed + seeds − 1`` — evaluates every final
set with the method's protocol on the networks of its seed (the same networks for every value:
:mod:`lightning_sdc.compare.runner`), and writes ``<out>/<name>.md`` / ``.csv`` / ``.png`` / ``_sets.png`` (``--out``, default ``runs/compare``), printing
``wrote <path>`` for each: per-seed accuracies
of each value, and for each value against the first (the baseline) the paired difference, its 95 % t and
bootstrap confidence intervals and the paired t-test p-value (:mod:`lightning_sdc.compare.stats`). Runs are
cached one file each under ``<out>/runs/``; an interrupted comparison resumes where it stopped.

(``--config`` is jsonargparse's: a YAML of this command's own arguments, so a study can be kept as a file.)
"""

from __future__ import annotations

from pathlib import Path

from lightning_sdc.checks import check_int, check_number
from lightning_sdc.compare.runner import RunSpec, parse_vary, resolve, run_all
from lightning_sdc.io import prepare_output_dir

TRAINER_CONFIG = "configs/trainer/cpu.yaml"  # a packaged config name (works from any directory)


def _override(item: str) -> str:
    item = item.strip()
    key = item.removeprefix("--").partition("=")[0]
    if "=" not in item or not key:
        raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. trainer.max_steps=30")
    return "--" + item.removeprefix("--")


def plan(
    cell: str,
    vary: str,
    seeds: int = 5,
    first_seed: int = 0,
    trainer_config: str | None = TRAINER_CONFIG,
    overrides: list[str] | None = None,
    num_models: int | None = None,
    epochs: int | None = None,
    gradn_networks: int = 4,
    test_size: int | None = None,
) -> list[RunSpec]:
    """The runs of a comparison, seed-major (every value of seed 0, then of seed 1, …), validated before any
    compute."""
    key, values = parse_vary(vary)
    check_int("seeds", seeds, 2)  # a paired comparison
    check_int("first_seed", first_seed, 0)
    check_int("gradn_networks", gradn_networks, 0)  # 0: no GraDN
    for name, v, low in (("num_models", num_models, 1), ("epochs", epochs, 0), ("test_size", test_size, 1)):
        if v is not None:  # None: the config's (test_size: the whole test split)
            check_int(name, v, low)
    configs = [c for c in (trainer_config, cell) if c]
    for c in configs:
        resolve(c)  # a file or a packaged config name; else one line naming it and the closest names
    fixed = tuple(_override(o) for o in overrides or ())
    clash = [o for o in fixed if o[2:].partition("=")[0] == key]
    if clash:
        raise ValueError(f"override {clash[0]!r} sets the varied key {key!r}")
    return [
        RunSpec(tuple(str(c) for c in configs), key, value, seed, fixed, num_models, epochs, gradn_networks, test_size)
        for seed in range(first_seed, first_seed + seeds) for value in values
    ]


def compare_command(
    cell: str,
    vary: str,
    seeds: int = 5,
    first_seed: int = 0,
    trainer_config: str | None = TRAINER_CONFIG,
    overrides: list[str] | None = None,
    num_models: int | None = None,
    epochs: int | None = None,
    gradn_networks: int = 4,
    test_size: int | None = None,
    ddranking: bool = False,
    full_data_epochs: int = 30,
    ddranking_weight: float = 0.5,
    out: str = "runs/compare",
    name: str | None = None,
    bootstrap: int = 10000,
    confidence: float = 0.95,
) -> str:
    """Paired multi-seed comparison of the values of one config key (mean difference, 95 % CIs, p-value).

    Distils ``cell`` with every value of ``vary`` for each seed, evaluates each set on the seed's networks (the
    same networks for every value) and reports paired differences against the first value.

    Args:
        cell: the method's YAML (e.g. ``configs/demo/mnist5k_dsa_ipc1.yaml``), composed after ``trainer_config``.
        vary: ``KEY=V1,V2[,...]``, any config key; the first value is the baseline of the differences.
        seeds: number of seeds (>= 2), ``first_seed`` upwards.
        first_seed: the first seed.
        trainer_config: the trainer preset composed first (``None``/empty: none).
        overrides: fixed ``KEY=VALUE`` settings for every run, a plain list (``--overrides trainer.max_steps=30
            model.init_args.batch_real=64``; ``'[a=1, b=2]'`` works too).
        num_models: evaluation networks per set (default: the method's ``eval_num_models``).
        epochs: evaluation epochs (default: the method's).
        gradn_networks: networks of the final sets' GraDN (0: skip).
        test_size: test on a fixed class-balanced subset of this many test images (the first ``test_size // C``
            of each class; default: the whole test split) — a CPU budget knob, the same subset for every run.
        ddranking: add DD-Ranking's HLR / IOR / LRS per set (:mod:`lightning_sdc.evaluation.ddranking`): a random
            real subset per seed on the seed's networks and a full-data network (``full_data_epochs`` epochs),
            both cached.
        full_data_epochs: epochs of the full-data network behind HLR.
        ddranking_weight: DD-Ranking's ``w`` of IOR against HLR in the LRS.
        out: directory of the report and of the cached runs (``<out>/runs``).
        name: file stem of the report (default ``<cell stem>__<key leaf>``).
        bootstrap: bootstrap resamples of the mean paired difference.
        confidence: confidence level of the intervals.

    Returns:
        The Markdown report (also printed).
    """
    check_number("confidence", confidence, 0, below=1)
    if ddranking:
        check_number("ddranking_weight", ddranking_weight, 0, strict=False, at_most=1)
        check_int("full_data_epochs", full_data_epochs, 1)
    check_int("bootstrap", bootstrap, 100)
    specs = plan(cell, vary, seeds, first_seed, trainer_config, overrides, num_models, epochs, gradn_networks,
                 test_size)
    key, values = parse_vary(vary)
    out_dir = prepare_output_dir(out, "--out")
    name = name or f"{Path(cell).stem}__{key.rsplit('.', 1)[-1]}"
    results = run_all(specs, out_dir / "runs", log=lambda s: print(s, flush=True))
    baselines = {}
    if ddranking:
        from lightning_sdc.compare.runner import execute_baseline
        from lightning_sdc.progress import quiet_lightning

        for spec in specs[:: len(values)]:  # one per seed
            print(f"[ddranking] seed {spec.seed}: random subset + full data", flush=True)
            with quiet_lightning():
                baselines[spec.seed] = execute_baseline(spec, full_data_epochs, out_dir / "runs")

    from lightning_sdc.compare.report import Study, sets_figure, write_report

    study = Study(name=name, cell=cell, key=key, values=values, results=results, overrides=list(specs[0].overrides),
                  bootstrap=bootstrap, confidence=confidence, baselines=baselines, ddranking_weight=ddranking_weight)
    md = write_report(study, out_dir)
    sets_figure(study, out_dir / "runs", out_dir / f"{name}_sets.png")
    print(md)
    for suffix in (".md", ".csv", "_runs.csv", ".json", ".png", "_sets.png"):
        print(f"wrote {out_dir / f'{name}{suffix}'}")
    print(f"wrote {out_dir / 'runs'}/ (one file and final set per run)", flush=True)
    return md
