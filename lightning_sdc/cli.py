"""The ``lightning-sdc`` command line (also ``python -m lightning_sdc``).

``fit | validate | test`` are LightningCLI subcommands over any registered method and DataModule::

    lightning-sdc fit --config configs/trainer/cpu.yaml --config configs/demo/mnist5k_dsa_ipc10.yaml \
        --model.init_args.sdc_lambda 0.002

The other subcommands are plain functions exposed through ``jsonargparse.auto_cli`` (typed ``--help`` from
their signatures, ``--config`` files accepted)::

    lightning-sdc evaluate PATH --archs ConvNet ResNet18 ...   score a saved synthetic set
    lightning-sdc experts ...                                   train expert trajectories (TM)
    lightning-sdc difficulty ...                                GraDN / EL2N / χ difficulty scores
    lightning-sdc coreset ...                                   Random / Herding / Forgetting baselines
    lightning-sdc theory --figure 4a|4b|4c|15 --out DIR         the perceptron scaling-law figures
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: subcommand -> "module:function" (imported only when used)
SUBCOMMANDS = {
    "evaluate": "lightning_sdc.evaluation.command:evaluate_command",
    "experts": "lightning_sdc.experts.command:experts_command",
    "difficulty": "lightning_sdc.difficulty.command:difficulty_command",
    "coreset": "lightning_sdc.coresets.command:coreset_command",
    "theory": "lightning_sdc.theory.cli:theory_command",
}

#: subcommands whose required arguments are positional (``evaluate PATH``); the others take ``--name value``
POSITIONAL = {"evaluate"}

TRAINER_DEFAULTS: dict[str, Any] = {
    # distillation data is an infinite stream of steps: validation is scheduled by steps, not epochs
    "check_val_every_n_epoch": None,
    "num_sanity_val_steps": 0,
    "max_epochs": -1,
    "log_every_n_steps": 10,
}


def _function(name: str) -> Any:
    module, func = SUBCOMMANDS[name].split(":")
    return getattr(importlib.import_module(module), func)


def build_cli(args: Sequence[str] | None = None, run: bool = True, export: bool = True) -> Any:
    """The LightningCLI over every registered method (subclass mode) and DataModule.

    With ``export`` (the default, and what ``lightning-sdc fit`` does) a :class:`SyntheticSetExporter` is added
    to every run: the final synthetic set lands in ``<log dir>/synthetic/synset.pt`` (+ ``.png`` and the TM
    ``images_best.pt`` / ``labels_best.pt`` layout), next to ``config.yaml`` and the checkpoints. Drivers that
    keep the set in memory (``make demo``, the reproduction harness) pass ``export=False``.
    """
    from pytorch_lightning import LightningDataModule
    from pytorch_lightning.cli import LightningCLI

    import lightning_sdc.callbacks  # noqa: F401 - short class names in configs
    import lightning_sdc.data  # noqa: F401
    import lightning_sdc.methods  # noqa: F401
    from lightning_sdc.callbacks import SyntheticSetExporter
    from lightning_sdc.methods import DistillationModule

    defaults = {**TRAINER_DEFAULTS, "callbacks": [SyntheticSetExporter()]} if export else TRAINER_DEFAULTS
    return LightningCLI(
        DistillationModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults=defaults,
        parser_kwargs={"description": __doc__.split("\n\n")[0] + " Other subcommands: " + ", ".join(SUBCOMMANDS)},
        args=list(args) if args is not None else None,
        run=run,
    )


#: a run whose result stays in memory (``make demo``, the reproduction harness): no logger, checkpoints,
#: progress bar, model summary or periodic validation
IN_MEMORY_FLAGS = ("--trainer.logger=false", "--trainer.enable_checkpointing=false",
                   "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                   "--trainer.limit_val_batches=0")


def build_in_memory_cli(configs: Sequence[str | Path], seed: int, overrides: Sequence[str] = ()) -> Any:
    """``build_cli`` (not run, no exporter) for ``configs`` composed in order, seeded with ``seed`` (global and the
    model's), with :data:`IN_MEMORY_FLAGS` and then ``overrides`` (e.g. ``--trainer.max_steps=30``)."""
    args = [a for config in configs for a in ("--config", str(config))]
    args += [f"--seed_everything={seed}", f"--model.init_args.seed={seed}", *IN_MEMORY_FLAGS, *overrides]
    return build_cli(args, run=False, export=False)


def run(args: Sequence[str] | None = None) -> Any:
    """Run a command line in-process and return its result (the LightningCLI, or the subcommand's value)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in SUBCOMMANDS:
        from jsonargparse import auto_cli

        func = _function(argv[0])
        sub_argv = getattr(func, "prepare_args", list)(argv[1:])  # e.g. evaluate's plain `--archs A B C` list
        return auto_cli(func, args=sub_argv, as_positional=argv[0] in POSITIONAL)
    return build_cli(argv)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the console script (returns nothing, so the exit status is 0 on success)."""
    run(args)


if __name__ == "__main__":
    main()
