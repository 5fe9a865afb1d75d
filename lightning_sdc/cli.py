"""The ``lightning-sdc`` command line (also ``python -m lightning_sdc``); ``lightning-sdc --help`` lists it all.

``fit | validate | test`` are LightningCLI subcommands over any registered method and DataModule::

    lightning-sdc fit --config trainer/cpu --config demo/mnist5k_dsa_ipc10 --model.init_args.sdc_lambda 0.002

``--config`` takes a file, or the name of a config shipped inside the package (``dsa/fashionmnist_ipc1``, with
or without ``configs/`` and ``.yaml``; ``lightning-sdc configs`` lists them), so the same command works in a
checkout and after ``pip install``. ``--model dsa`` / ``--data RealDataModule`` take short names. ``dataset`` and
``zca`` are given once on the DataModule, ``arch`` and ``arch_kwargs`` once on the method, and
``--seed_everything`` is the method's (and the expert DataModule's) ``seed``: :meth:`DistillationCLI.add_arguments_to_parser`
links them.

The other subcommands (:data:`SUBCOMMANDS`) are plain functions exposed through ``jsonargparse.auto_cli`` (typed
``--help`` from their signatures, ``--config`` files accepted); the first line of each function's docstring is
its description in ``lightning-sdc --help``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from argparse import ArgumentError
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_sdc.signals import stop_on_signals

PROG = "lightning-sdc"

#: subcommand -> "module:function" (imported only when used; the docstring's first line is its --help line)
SUBCOMMANDS = {
    "evaluate": "lightning_sdc.evaluation.command:evaluate_command",
    "experts": "lightning_sdc.experts.command:experts_command",
    "difficulty": "lightning_sdc.difficulty.command:difficulty_command",
    "coreset": "lightning_sdc.coresets.command:coreset_command",
    "theory": "lightning_sdc.theory.cli:theory_command",
    "demo": "lightning_sdc.demo:demo_command",
    "reproduce": "lightning_sdc.experiments:reproduce_command",
    "gradn-curve": "lightning_sdc.gradn_curve:gradn_curve_command",
    "compare": "lightning_sdc.compare.command:compare_command",
    "configs": "lightning_sdc.cli:configs_command",
}

#: subcommands whose required arguments are positional (``evaluate PATH``); the others take ``--name value``
POSITIONAL = {"evaluate"}

#: the LightningCLI subcommands this program offers, with their ``--help`` lines
LIGHTNING_SUBCOMMANDS = {
    "fit": "Distil a synthetic set (one training step = one update of the set); writes it to <log dir>/synthetic/.",
    "validate": "Run a method's evaluation protocol (fresh networks on its synthetic set) on the real test split.",
    "test": "The same evaluation through Lightning's test loop.",
}

#: LightningCLI subcommands refused, with the reason
REFUSED = {
    "predict": "a distillation method has nothing to predict; score a synthetic set with `lightning-sdc evaluate PATH`",
}

#: short ``--data`` names (case-insensitive) -> class path
DATAMODULES = {
    "RealDataModule": "lightning_sdc.data.RealDataModule",
    "ExpertTrajectoryDataModule": "lightning_sdc.experts.ExpertTrajectoryDataModule",
}

#: where the packaged configs live (``configs/`` in a checkout is a symlink to it)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

TRAINER_DEFAULTS: dict[str, Any] = {
    # distillation data is an infinite stream of steps: validation is scheduled by steps, not epochs
    "check_val_every_n_epoch": None,
    "num_sanity_val_steps": 0,
    "max_epochs": -1,
    "log_every_n_steps": 10,
}


class UsageError(ValueError):
    """A command line that cannot run; the console script prints it as one line (exit status 2)."""


# ---------------------------------------------------------------------- packaged configs
def packaged_configs() -> list[str]:
    """Names of the configs shipped in the package (``dsa/fashionmnist_ipc1``, ``trainer/cpu``, …)."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(name: str | Path, option: str = "--config") -> Path:
    """A config file: ``name`` itself if it is a file, else the packaged config it names.

    ``dsa/fashionmnist_ipc1``, ``dsa/fashionmnist_ipc1.yaml`` and ``configs/dsa/fashionmnist_ipc1.yaml`` all name
    ``lightning_sdc/configs/dsa/fashionmnist_ipc1.yaml``, from any working directory.
    """
    path = Path(name)
    if path.is_file():
        return path
    rel = str(name).replace("\\", "/")
    rel = rel[len("configs/"):] if rel.startswith("configs/") else rel
    candidate = CONFIG_DIR / (rel if rel.endswith((".yaml", ".yml")) else rel + ".yaml")
    if not path.is_absolute() and candidate.is_file():
        return candidate
    close = difflib.get_close_matches(rel.removesuffix(".yaml"), packaged_configs(), n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UsageError(f"{option} {name}: no such file and no packaged config of that name.{hint} "
                     f"`{PROG} configs` lists the packaged configs.")


def configs_command(group: str | None = None) -> list[str]:
    """List the packaged configs (usable as --config NAME from any directory).

    Args:
        group: only this directory (``dsa``, ``demo``, ``trainer``, …).
    """
    names = [n for n in packaged_configs() if group is None or n.split("/")[0] == group]
    if not names:
        groups = sorted({n.split("/")[0] for n in packaged_configs()})
        raise UsageError(f"configs: no group {group!r}; allowed: {', '.join(groups)}")
    print("\n".join(names))
    return names


# ---------------------------------------------------------------------- argument rewriting
_UNIFIED_LIGHTNING = re.compile(r"(?<![\w.])lightning\.(pytorch|fabric)\b[\w.]*")


def _refuse_unified_lightning(text: str, where: str) -> None:
    match = _UNIFIED_LIGHTNING.search(text)
    if match:
        raise UsageError(
            f"{where} names {match.group(0)!r} from the unified `lightning` package; this library uses "
            f"`pytorch-lightning`: write {match.group(0).replace('lightning.pytorch', 'pytorch_lightning').replace('lightning.fabric', 'lightning_fabric')!r}"
        )


#: values given once (LightningCLI links, :meth:`DistillationCLI.add_arguments_to_parser`): target -> source
LINKED = {
    "model.init_args.dataset": "data.init_args.dataset",
    "model.init_args.zca": "data.init_args.zca",
    "data.init_args.arch": "model.init_args.arch",
    "data.init_args.arch_kwargs": "model.init_args.arch_kwargs",
    "model.init_args.seed": "seed_everything",
    "data.init_args.seed": "seed_everything",
}


def _flat_items(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(tree, dict):
        return []
    items = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        items += [(key, v), *_flat_items(v, key + ".")]
    return items


def check_linked_values(config: Any, given: Sequence[tuple[str, Any, str]]) -> None:
    """jsonargparse lets a link overwrite a value given for its target (``model.init_args.dataset`` …): a given
    value equal to the linked one is redundant and allowed (older configs), a different one is refused."""
    for key, value, where in given:
        final = config.get(key) if config is not None else None
        same = final == value or (isinstance(final, str) and isinstance(value, str) and final.lower() == value.lower())
        if final is not None and not same:
            source = LINKED[key]
            raise UsageError(f"{where} sets {key}={value!r}, but it follows --{source} (given once: "
                             f"{final!r}); set --{source} instead")


def _short_class(option: str, value: str) -> str:
    """``--model dsa`` -> the method's class path; ``--data RealDataModule`` -> the DataModule's class path."""
    if "." in value or "/" in value or value.startswith(("{", "[")):
        return value  # a class path, a file or inline YAML: jsonargparse's business
    if option == "--model":
        from lightning_sdc.methods import METHODS

        if value in METHODS:
            cls = METHODS.get(value)
            return f"{cls.__module__}.{cls.__name__}"
        raise UsageError(f"--model {value}: unknown method; allowed: {', '.join(METHODS.names())} (any case), or a "
                         "class path")
    lookup = {k.lower(): v for k, v in DATAMODULES.items()}
    if value.lower() not in lookup:
        raise UsageError(f"--data {value}: unknown DataModule; allowed: {', '.join(DATAMODULES)}, or a class path")
    return lookup[value.lower()]


def rewrite_args(argv: Sequence[str], given: list[tuple[str, Any, str]] | None = None) -> list[str]:
    """Resolve packaged ``--config`` names and short ``--model``/``--data`` names; refuse unified-``lightning``
    class paths with one line (in arguments and in the config files). Values given for a link's target are
    appended to ``given`` as ``(key, value, where)`` (see :func:`check_linked_values`)."""
    import yaml

    given = [] if given is None else given
    out: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        option, eq, value = arg.partition("=")
        if option in ("--config", "-c", "--model", "--data"):
            if not eq:
                if i + 1 >= len(argv):
                    out.append(arg)
                    break
                value = argv[i + 1]
                i += 1
            if option in ("--config", "-c"):
                path = resolve_config(value)
                text = path.read_text(errors="replace")
                _refuse_unified_lightning(text, f"--config {value}")
                try:
                    given += [(k, v, f"--config {value}") for k, v in _flat_items(yaml.safe_load(text)) if k in LINKED]
                except yaml.YAMLError:
                    pass  # jsonargparse reports the syntax error with its position
                value = str(path)
            else:
                value = _short_class(option, value)
            out += [option, value]
        else:
            _refuse_unified_lightning(arg, f"argument {arg!r}")
            if arg.startswith("--") and option[2:] in LINKED:
                raw = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
                try:
                    parsed = yaml.safe_load(raw)
                except yaml.YAMLError:
                    parsed = raw
                given.append((option[2:], parsed, f"{option} {raw}"))
            out.append(arg)
        i += 1
    return _logger_save_dir(out)


#: loggers whose ``save_dir`` is required; a bare ``--trainer.logger NAME`` gets Lightning's default for it
_LOGGERS_WITH_SAVE_DIR = ("TensorBoardLogger", "CSVLogger")


def _logger_save_dir(argv: list[str]) -> list[str]:
    """``--trainer.logger TensorBoardLogger`` (or ``CSVLogger``) without a ``save_dir``: add the one Lightning's
    default logger uses, ``--trainer.default_root_dir`` (else the working directory), so the command works as
    written instead of failing on a required argument."""
    values = {}
    for k, arg in enumerate(argv):
        option, eq, value = arg.partition("=")
        if option.startswith("--trainer.") and k + 1 < len(argv) and not eq:
            value = argv[k + 1]
        values[option] = value
    logger = str(values.get("--trainer.logger", "")).rsplit(".", 1)[-1]
    if logger not in _LOGGERS_WITH_SAVE_DIR or any(o.startswith(("--trainer.logger.save_dir",
                                                                 "--trainer.logger.init_args.save_dir")) for o in values):
        return argv
    return [*argv, f"--trainer.logger.save_dir={values.get('--trainer.default_root_dir', '.')}"]


def list_options(*options: str) -> Any:
    """A subcommand's ``prepare_args`` that lets each of ``options`` take a plain list, as the shell splits it:
    ``--only a b --seeds 0 1`` becomes ``--only [a,b] --seeds [0,1]`` for jsonargparse (a list ends at the next
    ``--option``; ``--only [a,b]`` and ``--only=[a,b]`` pass through)."""

    def prepare(argv: Sequence[str]) -> list[str]:
        out: list[str] = []
        args = list(argv)
        i = 0
        while i < len(args):
            out.append(args[i])
            i += 1
            if out[-1] not in options:
                continue
            items = []
            while i < len(args) and not args[i].startswith("--"):
                items.append(args[i])
                i += 1
            if len(items) == 1 and items[0].startswith("["):
                out.append(items[0])
            elif items:
                out.append("[" + ",".join(items) + "]")
        return out

    return prepare


# ---------------------------------------------------------------------- LightningCLI
def method_seed(seed_everything: bool | int) -> int:
    """The method's ``seed`` from ``--seed_everything`` (``false``: 0; ``true`` is refused: a random global seed
    that the method's keyed generators could not reproduce on resume)."""
    if seed_everything is True:
        raise UsageError("--seed_everything true draws a random seed that a resumed run cannot repeat; give an "
                         "integer (it seeds the method's generators too)")
    return 0 if seed_everything is False else int(seed_everything)


def _lightning_cli_class(given: Sequence[tuple[str, Any, str]] = ()) -> type:
    from pytorch_lightning.cli import LightningCLI

    class DistillationCLI(LightningCLI):
        """LightningCLI with the links between method and DataModule, without ``predict``, with a step budget."""

        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            return {k: v for k, v in LightningCLI.subcommands().items() if k in LIGHTNING_SUBCOMMANDS}

        def add_arguments_to_parser(self, parser: Any) -> None:
            # given once: dataset/zca on the DataModule, the network on the method; skipped where a class lacks it
            parser.link_arguments("data.init_args.dataset", "model.init_args.dataset")
            parser.link_arguments("data.init_args.zca", "model.init_args.zca")
            parser.link_arguments("model.init_args.arch", "data.init_args.arch")
            parser.link_arguments("model.init_args.arch_kwargs", "data.init_args.arch_kwargs")
            # --seed_everything N seeds the global RNG (Lightning) and the method's and DataModule's generators
            parser.link_arguments("seed_everything", "model.init_args.seed", compute_fn=method_seed)
            parser.link_arguments("seed_everything", "data.init_args.seed", compute_fn=method_seed)
            parser.add_argument("--resume_override", type=list[str] | None, default=None,
                                help="With --ckpt_path: model (or data.*) settings allowed to differ from the "
                                     "checkpoint's, e.g. [eval_epochs, sdc_lambda]; any other difference is an error")

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            check_trainer_options(config.get("trainer"))
            check_step_budget(config.get("trainer"), fit=self.subcommand == "fit")
            check_linked_values(config, given)

        # resume and pre-emption (lightning_sdc.runs): the checkpoint is checked before use, never trusted
        def _parse_ckpt_path(self) -> None:
            """Lightning replaces the user's model settings by the checkpoint's and imports its class path here;
            this CLI instead compares them (``runs.prepare_subcommand``, before the subcommand runs)."""

        def before_fit(self) -> None:
            _prepare(self, "fit")

        def before_validate(self) -> None:
            _prepare(self, "validate")

        def before_test(self) -> None:
            _prepare(self, "test")

    return DistillationCLI


def _prepare(cli: Any, subcommand: str) -> None:
    """:func:`lightning_sdc.runs.prepare_subcommand`, its errors as one-line :class:`UsageError`; one
    ``PreemptionCheckpoint`` per run (the CLI's default comes last: one the user configured replaces it)."""
    from lightning_sdc.callbacks import PreemptionCheckpoint
    from lightning_sdc.runs import prepare_subcommand

    own = [cb for cb in cli.trainer.callbacks if isinstance(cb, PreemptionCheckpoint)]
    for extra in own[1:]:
        cli.trainer.callbacks.remove(extra)
    try:
        prepare_subcommand(cli, subcommand, lock=bool(own))
    except (ValueError, RuntimeError, OSError) as exc:
        raise UsageError(str(exc)) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_trainer_options(trainer: Any) -> None:
    """One line, before the Trainer is built, for the Trainer options Lightning would reject with a traceback (or
    accept and then crash on): negative budgets, fractional train limits of an endless stream, a GPU that is not
    there, zero devices, epoch-based validation of 0, and the automatic-optimisation features (gradient
    accumulation and clipping) that manual optimisation, one synthetic-set update per step, cannot use."""
    if trainer is None:
        return
    get = trainer.get
    max_steps = get("max_steps")
    if _is_int(max_steps) and (max_steps == 0 or max_steps < -1):
        raise UsageError(f"--trainer.max_steps {max_steps}: allowed: an integer >= 1 (synthetic-set updates), or -1 "
                         "with --trainer.max_time")
    limit = get("limit_train_batches")
    if isinstance(limit, float) and limit != 1.0:
        raise UsageError(f"--trainer.limit_train_batches {limit}: the real data are an endless stream of updates, "
                         "so a fraction of it means nothing; allowed: 1.0 or an integer (updates per epoch); "
                         "set the run's length with --trainer.max_steps")
    accelerator = get("accelerator")
    if isinstance(accelerator, str) and accelerator.lower() in ("gpu", "cuda", "mps"):
        import torch

        there = torch.backends.mps.is_available() if accelerator.lower() == "mps" else torch.cuda.is_available()
        if not there:
            raise UsageError(f"--trainer.accelerator {accelerator}: no {accelerator.upper()} device is visible on this "
                             f"machine (torch {torch.__version__}); allowed here: cpu or auto")
    devices = get("devices")
    if (_is_int(devices) and devices < 1 and devices != -1) or (isinstance(devices, str) and devices.strip() in
                                                                 ("0", "")):
        raise UsageError(f"--trainer.devices {devices}: allowed: an integer >= 1, -1 (all), 'auto', or a list of "
                         "device indices such as [0, 1]")
    every = get("check_val_every_n_epoch")
    if every is not None and (not _is_int(every) or every < 1):
        raise UsageError(f"--trainer.check_val_every_n_epoch {every}: allowed: null (the default: evaluate every "
                         "--trainer.val_check_interval updates) or an integer >= 1")
    accumulate = get("accumulate_grad_batches")
    if accumulate not in (None, 1):
        raise UsageError(f"--trainer.accumulate_grad_batches {accumulate}: not supported: every training step is "
                         "one update of the synthetic set under manual optimisation; allowed: 1 (a larger "
                         "batch_real / batch_syn averages more data per update)")
    clip = get("gradient_clip_val")
    if clip not in (None, 0, 0.0):
        raise UsageError(f"--trainer.gradient_clip_val {clip}: not supported: the methods step their own optimiser "
                         "(manual optimisation), which Lightning cannot clip; allowed: null")
    fast = get("fast_dev_run")
    if fast not in (None, False, 0):
        raise UsageError(f"--trainer.fast_dev_run {fast}: not supported (it turns off the checkpoints and the run "
                         "directory this program writes); for a smoke run use --trainer.max_steps 1 "
                         "--trainer.limit_val_batches 0")


def check_step_budget(trainer: Any, fit: bool = True) -> None:
    """Refuse epoch budgets (the data is an endless stream of steps) and a ``fit`` with no end."""
    if trainer is None:
        return
    max_epochs, max_steps, max_time = trainer.get("max_epochs"), trainer.get("max_steps"), trainer.get("max_time")
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool) and max_epochs not in (None, -1):
        return  # epochs of limit_train_batches steps end
    if max_epochs not in (None, -1):
        raise UsageError(f"--trainer.max_epochs {max_epochs}: distillation has no epochs (one step = one update of the "
                         "synthetic set, the data never run out); give --trainer.max_steps N instead")
    if trainer.get("min_epochs") not in (None, -1, 0):
        raise UsageError(f"--trainer.min_epochs {trainer.get('min_epochs')}: distillation has no epochs; use "
                         "--trainer.min_steps")
    if fit and max_steps in (None, -1) and max_time is None:
        raise UsageError("--trainer.max_steps -1 with no --trainer.max_time: the run would never end; give "
                         "--trainer.max_steps N (synthetic-set updates)")


def build_cli(args: Sequence[str] | None = None, run: bool = True, export: bool = True) -> Any:
    """The LightningCLI over every registered method (subclass mode) and DataModule.

    ``args`` (``None``: ``sys.argv[1:]``) go through :func:`rewrite_args` first. With ``export`` (the default, and
    what ``lightning-sdc fit`` does) a :class:`SyntheticSetExporter` is added to every run: the final synthetic set
    lands in ``<log dir>/synthetic/synset.pt`` (+ ``.png`` and the TM ``images_best.pt`` / ``labels_best.pt``
    layout), next to ``config.yaml`` and the checkpoints. Drivers that keep the set in memory (``demo``,
    ``reproduce``) pass ``export=False``.
    """
    from pytorch_lightning import LightningDataModule

    import lightning_sdc.callbacks  # noqa: F401 - short class names in configs
    import lightning_sdc.data  # noqa: F401
    import lightning_sdc.experts  # noqa: F401
    import lightning_sdc.methods  # noqa: F401
    from lightning_sdc.callbacks import PreemptionCheckpoint, SyntheticSetExporter
    from lightning_sdc.methods import DistillationModule
    from lightning_sdc.runs import check_config_files

    given: list[tuple[str, Any, str]] = []
    argv = rewrite_args(sys.argv[1:] if args is None else args, given)
    try:
        check_config_files(argv)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # last.ckpt every 10 minutes, on SIGTERM/SIGUSR1/SIGINT and at the end, before the set is exported (a failed
    # export, a full disk, leaves a resumable run: --ckpt_path last)
    callbacks = [PreemptionCheckpoint(), SyntheticSetExporter()]
    defaults = {**TRAINER_DEFAULTS, "callbacks": callbacks} if export else TRAINER_DEFAULTS
    # LightningCLI reads sys.argv (it warns when given ``args`` while sys.argv holds others, as under pytest)
    saved, sys.argv = sys.argv, [sys.argv[0] if sys.argv else PROG, *argv]
    try:
        return _lightning_cli_class(given)(
            DistillationModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=defaults,
            # parse errors raise ArgumentError: main() prints them on one line (jsonargparse would print the
            # usage and every Union subtype's error)
            parser_kwargs={"prog": PROG, "description": __doc__.split("\n\n")[0], "exit_on_error": False,
                           **{name: {"exit_on_error": False} for name in LIGHTNING_SUBCOMMANDS}},
            run=run,
            **({} if export else {"save_config_callback": None}),  # in memory: no config.yaml in the working dir
        )
    finally:
        sys.argv = saved


#: a run whose result stays in memory (``demo``, ``reproduce``): no logger, checkpoints, progress bar, model
#: summary or periodic validation
IN_MEMORY_FLAGS = ("--trainer.logger=false", "--trainer.enable_checkpointing=false",
                   "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                   "--trainer.limit_val_batches=0")


def build_in_memory_cli(configs: Sequence[str | Path], seed: int, overrides: Sequence[str] = ()) -> Any:
    """``build_cli`` (not run, no exporter) for ``configs`` (files or packaged names) composed in order, seeded
    with ``seed`` (global and the method's), with :data:`IN_MEMORY_FLAGS` and then ``overrides``."""
    args = [a for config in configs for a in ("--config", str(config))]
    args += [f"--seed_everything={seed}", *IN_MEMORY_FLAGS, *overrides]
    return build_cli(args, run=False, export=False)


# ---------------------------------------------------------------------- the program
def _function(name: str) -> Any:
    module, func = SUBCOMMANDS[name].split(":")
    return getattr(importlib.import_module(module), func)


def _summary(name: str) -> str:
    """First docstring line of ``name``'s function, read from its source with :mod:`ast` (no import: ``--help``
    stays fast)."""
    import ast
    import importlib.util

    module, func = SUBCOMMANDS[name].split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func:
            doc = (ast.get_docstring(node) or "").strip()
            return doc.splitlines()[0] if doc else ""
    return ""


def usage() -> str:
    """The top-level help: every subcommand with its one-line description."""
    rows = [*LIGHTNING_SUBCOMMANDS.items(), *((name, _summary(name)) for name in SUBCOMMANDS)]
    width = max(len(n) for n, _ in rows)
    lines = [f"usage: {PROG} SUBCOMMAND [options]      ({PROG} SUBCOMMAND --help: its options)", "",
             "Dataset distillation with Sample Difficulty Correction (SDC), as PyTorch Lightning modules.", "",
             "subcommands:"]
    lines += [f"  {name:<{width}}  {text.replace('``', '')}" for name, text in rows]
    lines += ["", f"examples:  {PROG} fit --config trainer/cpu --config demo/digits_dsa_ipc1",
              f"           {PROG} evaluate lightning_logs/version_0/synthetic/synset.pt --archs ConvNet ResNet18",
              f"           {PROG} configs          (the packaged configs, usable as --config NAME)"]
    return "\n".join(lines)


def _all_names() -> list[str]:
    return [*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS]


def _unknown(name: str) -> UsageError:
    if name in REFUSED:
        return UsageError(f"{name}: not available: {REFUSED[name]}")
    close = difflib.get_close_matches(name, _all_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"unknown subcommand {name!r}{hint}; choose from: {', '.join(_all_names())}")


def run(args: Sequence[str] | None = None) -> Any:
    """Run a command line in-process and return its result (the LightningCLI, or the subcommand's value).

    ``None`` reads ``sys.argv[1:]``. Raises :class:`UsageError` for an unknown subcommand and for bad arguments
    this module checks; ``--help`` and parse errors raise ``SystemExit`` as argparse does.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    name = argv[0]
    if name in SUBCOMMANDS:
        from jsonargparse import auto_cli

        from lightning_sdc.runs import check_config_files

        func = _function(name)
        sub_argv = getattr(func, "prepare_args", list)(argv[1:])  # e.g. evaluate's plain `--archs A B C` list
        try:
            check_config_files(sub_argv)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with stop_on_signals(name):  # SIGTERM/SIGUSR1/SIGINT: stop, keep finished work, no orphan workers
            return auto_cli(func, args=sub_argv, as_positional=name in POSITIONAL, prog=f"{PROG} {name}",
                            exit_on_error=False)
    if name in LIGHTNING_SUBCOMMANDS:
        with stop_on_signals(name):
            return build_cli(None if args is None else argv)
    if name.startswith("-"):
        raise UsageError(f"{name}: options come after a subcommand ({PROG} SUBCOMMAND {name} ...); "
                         f"subcommands: {', '.join(_all_names())}")
    raise _unknown(name)


_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":')
_CLASS_PATH = re.compile(r"^- Problem with given class_path '([^']+)':")
_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:",
          "Expected a <class 'NoneType'>")


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, without jsonargparse's wrapping.

    jsonargparse reports a bad value inside a class (``--model.init_args.ipc abc``) as nested blocks: "Parser key
    "model": Does not validate against any of the Union subtypes", every subtype's error (one is always
    ``Expected a <class 'NoneType'>``), the whole given value. This keeps the errors that matter, each prefixed
    with its full key (``model.init_args.ipc: Expected a <class 'int'>. Got value: abc``) and the value given."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = re.sub(r"Call to compute_fn of link '[^']*' with args \(.*?\) failed: ", "", text)  # our own check's text
    if "\n" not in text.strip():
        return text.strip()
    stack: list[tuple[int, str]] = []
    errors: list[tuple[str, str]] = []
    given: dict[str, str] = {}

    def path(indent: int) -> str:
        while stack and stack[-1][0] >= indent:
            stack.pop()
        return ".".join(name for _, name in stack)

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        indent = len(raw) - len(raw.lstrip())
        if (m := _PARSER_KEY.match(line)) or (m := _CLASS_PATH.match(line)):
            where = path(indent)
            stack.append((indent, m.group(1) if line.startswith("Parser") else "init_args"))
            continue
        where = path(indent)
        if line.startswith("Given value:"):
            value = line[len("Given value:"):].strip()
            if not value.startswith(("Namespace(", "NestedArg(")):
                given.setdefault(where, value)
            continue
        line = line.removeprefix("- ").strip()
        if not line or line.startswith(_NOISE):
            continue
        errors.append((where, line))
    if not errors:
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    parts = []
    for where, line in errors:
        last = where.rsplit(".", 1)[-1]
        shown = line if not where or re.search(rf"\b{re.escape(last)}\b", line) else f"{where}: {line}"
        if where in given and "Got value" not in line:
            value = given[where]
            split = value.startswith(("{", "[")) and value.count(value[0]) > value.count("}" if value[0] == "{" else "]")
            shown += f" (given: {value}" + (": the shell split the value at its spaces; quote it, e.g. "
                                            f"--{where} '{{width: 8, depth: 2}}')" if split else ")")
        if shown not in parts:
            parts.append(shown)
    return "; ".join(parts)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the console script: runs :func:`run`, prints the paths a subcommand returns as written,
    and turns a :class:`UsageError` into one line on stderr with exit status 2.

    The errors this library raises for bad input (``ValueError``, ``KeyError``, ``TypeError``, file errors,
    a refused resume or set file, a failed evaluation, a missing package) are printed as one line naming their type, with exit
    status 1; ``LIGHTNING_SDC_TRACEBACK=1`` re-raises them with the full traceback.
    """
    try:
        result = run(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ArgumentError as exc:  # a command line jsonargparse could not parse (exit_on_error=False)
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:  # stdout closed early (`lightning-sdc configs | head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes it
        raise SystemExit(1) from None
    except (ValueError, KeyError, TypeError, OSError, RuntimeError, ImportError) as exc:
        if os.environ.get("LIGHTNING_SDC_TRACEBACK", "") not in ("", "0"):
            raise
        message = _one_line(exc)
        if isinstance(exc, ImportError) and "tensorboard" in message.lower():
            message += "; pip install 'lightning-sdc[tensorboard]' adds it"
        print(f"{PROG}: error: {type(exc).__name__}: {message} (LIGHTNING_SDC_TRACEBACK=1 shows where)",
              file=sys.stderr)
        raise SystemExit(1) from None
    if isinstance(result, (list, tuple)) and result and all(isinstance(p, (str, Path)) for p in result):
        if all(Path(p).exists() for p in result):
            for p in result:
                print(f"wrote {p}")


if __name__ == "__main__":
    main()
