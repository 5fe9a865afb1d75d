"""The LightningCLI behind ``lightning-sdc fit | validate | test`` and the in-memory runs of the commands.

``--config`` takes a file or a packaged config's name (``dsa/fashionmnist_ipc1``); ``--model dsa`` / ``--data
realdatamodule`` a registry or class name, any case. :data:`LINKS` gives ``dataset``/``zca`` once (DataModule),
``arch``/``arch_kwargs`` once (method) and ``--seed_everything`` as both ``seed``s, and refuses a different value
given for a target."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from lightning_sdc.runs import UsageError, check_config_files, flat_items, prepare_subcommand

PROG = "lightning-sdc"
#: where the packaged configs live (``configs/`` in a checkout is a symlink to it)
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: the data are an endless stream of updates: validation is scheduled by updates, never by epochs
TRAINER_DEFAULTS: dict[str, Any] = {"check_val_every_n_epoch": None, "num_sanity_val_steps": 0, "max_epochs": -1,
                                    "log_every_n_steps": 10}
#: callbacks every exporting run (``lightning-sdc fit``) has, shown by ``--print_config``; one the user lists
#: (a ``PreemptionCheckpoint`` with other settings) replaces the default of its class
RUN_CALLBACKS = ("lightning_sdc.callbacks.PreemptionCheckpoint", "lightning_sdc.callbacks.SyntheticSetExporter",
                 "lightning_sdc.callbacks.UpdateProgressBar")
#: a run whose result stays in memory (``demo``, ``reproduce``): no logger, checkpoints, bar, summary, validation
IN_MEMORY_FLAGS = ("--trainer.logger=false", "--trainer.enable_checkpointing=false",
                   "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                   "--trainer.limit_val_batches=0")


def method_seed(seed_everything: bool | int) -> int:
    """The method's ``seed`` from ``--seed_everything`` (``false``: 0; ``true``, a random seed that a resumed run
    could not repeat, is refused)."""
    if seed_everything is True:
        raise UsageError("--seed_everything true draws a random seed that a resumed run cannot repeat; give an "
                         "integer (it seeds the method's generators too)")
    return 0 if seed_everything is False else int(seed_everything)


#: values given once: (source, target, compute_fn)
LINKS = (("data.init_args.dataset", "model.init_args.dataset", None),
         ("data.init_args.zca", "model.init_args.zca", None),
         ("model.init_args.arch", "data.init_args.arch", None),
         ("model.init_args.arch_kwargs", "data.init_args.arch_kwargs", None),
         ("seed_everything", "model.init_args.seed", method_seed),
         ("seed_everything", "data.init_args.seed", method_seed))
_TARGETS = {target: source for source, target, _ in LINKS}


# ---------------------------------------------------------------------- packaged configs
def packaged_configs() -> list[str]:
    """Names of the configs shipped in the package (``dsa/fashionmnist_ipc1``, ``trainer/cpu``, …)."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))


def resolve_config(name: str | Path, option: str = "--config") -> Path:
    """``name`` if it is a file, else the packaged config it names (``dsa/fashionmnist_ipc1``,
    ``dsa/fashionmnist_ipc1.yaml`` and ``configs/dsa/fashionmnist_ipc1.yaml`` alike, from any directory)."""
    path = Path(name)
    if path.is_file():
        return path
    rel = str(name).replace("\\", "/").removeprefix("configs/")
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
        group: only this directory (dsa, demo, trainer, …).
    """
    if not (names := [n for n in packaged_configs() if group is None or n.split("/")[0] == group]):
        raise UsageError(f"configs: no group {group!r}; allowed: "
                         f"{', '.join(sorted({n.split('/')[0] for n in packaged_configs()}))}")
    print("\n".join(names))
    return names


# ---------------------------------------------------------------------- the command line before jsonargparse
_UNIFIED = re.compile(r"(?<![\w.])lightning\.(pytorch|fabric)\b[\w.]*")


def _refuse_unified_lightning(text: str, where: str) -> None:
    if match := _UNIFIED.search(text):
        ours = match.group(0).replace("lightning.pytorch", "pytorch_lightning").replace("lightning.fabric", "lightning_fabric")
        raise UsageError(f"{where} names {match.group(0)!r} from the unified `lightning` package; this library "
                         f"uses `pytorch-lightning`: write {ours!r}")


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def _short_class(option: str, value: str) -> str:
    """``--model dsa`` (a name in the method registry) or ``--data realdatamodule`` (a DataModule class of this
    package, any case) -> the class path; class paths, files and inline YAML pass through."""
    if "." in value or "/" in value or value.startswith(("{", "[")):
        return value
    if option == "--model":
        from lightning_sdc.methods import METHODS

        if value not in METHODS:
            raise UsageError(f"--model {value}: unknown method; allowed: {', '.join(METHODS.names())} (any case), "
                             "or a class path")
        cls = METHODS.get(value)
    else:
        from pytorch_lightning import LightningDataModule

        import lightning_sdc.data  # noqa: F401 - the DataModule classes
        import lightning_sdc.experts  # noqa: F401
        ours = {c.__name__.lower(): c for c in _subclasses(LightningDataModule) if c.__module__.startswith("lightning_sdc")}
        if value.lower() not in ours:
            raise UsageError(f"--data {value}: unknown DataModule; allowed: "
                             f"{', '.join(sorted(c.__name__ for c in ours.values()))}, or a class path")
        cls = ours[value.lower()]
    return f"{cls.__module__}.{cls.__name__}"


def rewrite_args(argv: Sequence[str], given: list[tuple[str, Any, str]] | None = None) -> list[str]:
    """Resolve packaged ``--config`` names and short ``--model``/``--data`` names, refuse unified-``lightning``
    class paths (in arguments and config files) in one line, append the values given for a link's target to
    ``given`` as ``(key, value, where)``, and give a bare ``--trainer.logger TensorBoardLogger`` (or ``CSVLogger``)
    the ``save_dir`` of Lightning's default logger (``--trainer.default_root_dir``, else ``.``)."""
    import yaml

    given = [] if given is None else given
    out, args, i = [], list(argv), 0
    while i < len(args):
        option, eq, value = args[i].partition("=")
        if option in ("--config", "-c", "--model", "--data") and (eq or i + 1 < len(args)):
            if not eq:
                i, value = i + 1, args[i + 1]
            _refuse_unified_lightning(value, f"{option} {value}")
            if option in ("--config", "-c"):
                path = resolve_config(value)
                text = path.read_text(errors="replace")
                _refuse_unified_lightning(text, f"--config {value}")
                try:
                    given += [(k, v, f"--config {value}") for k, v in flat_items(yaml.safe_load(text)) if k in _TARGETS]
                except yaml.YAMLError:
                    pass  # jsonargparse reports the syntax error with its position
                value = str(path)
            out += [option, value if option in ("--config", "-c") else _short_class(option, value)]
        else:
            _refuse_unified_lightning(args[i], f"argument {args[i]!r}")
            if option.startswith("--") and option[2:] in _TARGETS:
                raw = value if eq else (args[i + 1] if i + 1 < len(args) else "")
                try:
                    parsed = yaml.safe_load(raw)
                except yaml.YAMLError:
                    parsed = raw
                given.append((option[2:], parsed, f"{option} {raw}"))
            out.append(args[i])
        i += 1
    parts = [arg.partition("=") for arg in out]  # option -> its value (``--x=v`` or ``--x v``)
    values = {option: value if eq or k + 1 >= len(out) else out[k + 1] for k, (option, eq, value) in enumerate(parts)}
    if str(values.get("--trainer.logger", "")).rsplit(".", 1)[-1] in ("TensorBoardLogger", "CSVLogger") and not any(
            o.startswith(("--trainer.logger.save_dir", "--trainer.logger.init_args.save_dir")) for o in values):
        out.append(f"--trainer.logger.save_dir={values.get('--trainer.default_root_dir', '.')}")
    return out


def check_linked_values(config: Any, given: Sequence[tuple[str, Any, str]]) -> None:
    """A value given for a link's target (jsonargparse would overwrite it silently) is refused when it differs
    from the linked one; an equal (redundant) one is allowed."""
    for key, value, where in given:
        final = config.get(key) if config is not None else None
        same = final == value or (isinstance(final, str) and isinstance(value, str) and final.lower() == value.lower())
        if final is not None and not same:
            raise UsageError(f"{where} sets {key}={value!r}, but it follows --{_TARGETS[key]} (given once: "
                             f"{final!r}); set --{_TARGETS[key]} instead")


# ---------------------------------------------------------------------- checks of the Trainer options
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_trainer_options(trainer: Any, fit: bool = True) -> None:
    """One line, before the Trainer is built, for what Lightning would reject with a traceback (or accept and
    crash on): epoch budgets and endless runs (the data are an endless stream of updates), negative budgets,
    fractional train limits, a val_check_interval that counts no updates (a time), a GPU that is not there, zero
    devices, and the automatic-optimisation features (accumulation, clipping) one update per step cannot use."""
    if trainer is None:
        return
    get = trainer.get
    max_epochs, max_steps, limit = get("max_epochs"), get("max_steps"), get("limit_train_batches")
    if max_epochs not in (None, -1) and not _is_int(limit):
        raise UsageError(f"--trainer.max_epochs {max_epochs}: distillation has no epochs (one step = one update of the "
                         "synthetic set, the data never run out); give --trainer.max_steps N instead")
    if get("min_epochs") not in (None, -1, 0):
        raise UsageError(f"--trainer.min_epochs {get('min_epochs')}: distillation has no epochs; use "
                         "--trainer.min_steps")
    if fit and max_steps in (None, -1) and get("max_time") is None and max_epochs in (None, -1):
        raise UsageError("--trainer.max_steps -1 with no --trainer.max_time: the run would never end; give "
                         "--trainer.max_steps N (synthetic-set updates)")
    if _is_int(max_steps) and (max_steps == 0 or max_steps < -1):
        raise UsageError(f"--trainer.max_steps {max_steps}: allowed: an integer >= 1 (synthetic-set updates), or -1 "
                         "with --trainer.max_time")
    if isinstance(limit, float) and limit != 1.0:
        raise UsageError(f"--trainer.limit_train_batches {limit}: the real data are an endless stream of updates, "
                         "so a fraction of it means nothing; allowed: 1.0 or an integer (updates per epoch); "
                         "set the run's length with --trainer.max_steps")
    if isinstance(accelerator := get("accelerator"), str) and accelerator.lower() in ("gpu", "cuda", "mps"):
        import torch

        if not (torch.backends.mps.is_available() if accelerator.lower() == "mps" else torch.cuda.is_available()):
            raise UsageError(f"--trainer.accelerator {accelerator}: no {accelerator.upper()} device is visible on this "
                             f"machine (torch {torch.__version__}); allowed here: cpu or auto")
    if (_is_int(devices := get("devices")) and devices < 1 and devices != -1) or (isinstance(devices, str) and devices.strip() in ("0", "")):
        raise UsageError(f"--trainer.devices {devices}: allowed: an integer >= 1, -1 (all), 'auto', or a list of "
                         "device indices such as [0, 1]")
    if (i := get("val_check_interval")) is not None and not (_is_int(i) or isinstance(i, float) and 0 < i <= 1):
        raise UsageError(f"--trainer.val_check_interval {i}: allowed: an integer >= 1 (updates) or a float in (0, 1]")
    if (every := get("check_val_every_n_epoch")) is not None and (not _is_int(every) or every < 1):
        raise UsageError(f"--trainer.check_val_every_n_epoch {every}: allowed: null (the default: evaluate every "
                         "--trainer.val_check_interval updates) or an integer >= 1")
    for key, ok, why in (
            ("accumulate_grad_batches", (None, 1), "every training step is one update of the synthetic set under "
             "manual optimisation; allowed: 1 (a larger batch_real / batch_syn averages more data per update)"),
            ("gradient_clip_val", (None, 0, 0.0), "the methods step their own optimiser (manual optimisation), "
             "which Lightning cannot clip; allowed: null"),
            ("fast_dev_run", (None, False, 0), "it turns off the checkpoints and the run directory this program "
             "writes; for a smoke run use --trainer.max_steps 1 --trainer.limit_val_batches 0")):
        if get(key) not in ok:
            raise UsageError(f"--trainer.{key} {get(key)}: not supported: {why}")


def _run_callbacks(trainer: Any) -> None:
    """:data:`RUN_CALLBACKS` in ``trainer.callbacks`` (the parser's default): a missing one is added, one the user
    also listed keeps only the user's (the last), and the update bar leaves when the bar is off or another is set."""
    from jsonargparse import Namespace

    callbacks = trainer.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    names = [str(cb.get("class_path")).rsplit(".", 1)[-1] for cb in callbacks]
    ours = {p.rsplit(".", 1)[-1]: p for p in RUN_CALLBACKS}
    keep = [cb for i, cb in enumerate(callbacks) if names[i] not in ours or names[i] not in names[i + 1:]]
    keep += [Namespace(class_path=p, init_args=Namespace()) for name, p in ours.items() if name not in names]
    if trainer.get("enable_progress_bar") is False or any("ProgressBar" in n and n not in ours for n in names):
        keep = [cb for cb in keep if not str(cb.get("class_path", "")).endswith("UpdateProgressBar")]
    trainer["callbacks"] = keep


# ---------------------------------------------------------------------- the LightningCLI
@cache
def help_formatter() -> type:
    """jsonargparse's help formatter with the docstrings' reST markup (````x````, ``:class:`~a.B```) as plain text."""
    from jsonargparse import DefaultHelpFormatter

    class PlainHelpFormatter(DefaultHelpFormatter):
        def format_help(self) -> str:
            return re.sub(r":\w+:`~?(?:[\w.]+\.)?([^`]+)`", r"\1", super().format_help()).replace("``", "")

    return PlainHelpFormatter


def _cli_class(given: Sequence[tuple[str, Any, str]], export: bool) -> type:
    from pytorch_lightning.cli import LightningCLI

    class DistillationCLI(LightningCLI):
        """LightningCLI with the links between method and DataModule, without ``predict``, with a step budget."""

        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "validate", "test")}

        def add_arguments_to_parser(self, parser: Any) -> None:
            for source, target, compute_fn in LINKS:  # skipped where a class lacks the target
                parser.link_arguments(source, target, compute_fn=compute_fn)
            parser.add_argument("--resume_override", type=list[str] | None, default=None,
                                help="With --ckpt_path: model (or data.*) settings allowed to differ from the "
                                     "checkpoint's, e.g. [eval_epochs, sdc_lambda]; any other difference is an error")
            if export:
                parser.set_defaults({"trainer.callbacks": [{"class_path": p} for p in RUN_CALLBACKS]})

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            check_trainer_options(config.get("trainer"), fit=self.subcommand == "fit")
            check_linked_values(config, given)
            if export:
                _run_callbacks(config["trainer"])

        def _parse_ckpt_path(self) -> None:
            """Lightning replaces the user's settings by the checkpoint's and imports its class path here; this CLI
            compares them instead (:func:`lightning_sdc.runs.prepare_subcommand`, before the subcommand runs)."""

        def before_subcommand(self) -> None:
            """:func:`lightning_sdc.runs.prepare_subcommand` (errors as one-line :class:`UsageError`)."""
            try:
                prepare_subcommand(self, self.subcommand, lock=export)
            except (ValueError, RuntimeError, OSError) as exc:
                raise UsageError(str(exc)) from None

        before_fit = before_validate = before_test = before_subcommand

    return DistillationCLI


def build_cli(args: Sequence[str] | None = None, run: bool = True, export: bool = True) -> Any:
    """The LightningCLI over every registered method (subclass mode) and DataModule; ``args`` (``None``:
    ``sys.argv[1:]``) go through :func:`rewrite_args` first.

    With ``export`` (``lightning-sdc fit``) every run has :data:`RUN_CALLBACKS`: ``last.ckpt`` every 10 minutes, on
    SIGTERM/SIGUSR1/SIGINT and at the end, then the final set in ``<log dir>/synthetic/synset.pt`` (+ ``.png``, TM
    layout), beside ``config.yaml``; a bar counting updates. Drivers that keep the set in memory pass
    ``export=False`` (no callbacks, no config.yaml)."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning import LightningDataModule

    import lightning_sdc.callbacks  # noqa: F401 - short class names in configs
    from lightning_sdc.methods import DistillationModule

    given: list[tuple[str, Any, str]] = []
    argv = rewrite_args(sys.argv[1:] if args is None else args, given)
    check_config_files(argv)
    per_parser = {"exit_on_error": False, "formatter_class": help_formatter()}  # main() prints errors in one line
    saved, sys.argv = sys.argv, [sys.argv[0] if sys.argv else PROG, *argv]  # LightningCLI reads sys.argv
    try:
        return _cli_class(given, export)(
            DistillationModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
            auto_configure_optimizers=False, seed_everything_default=0, save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS, run=run,
            parser_kwargs={"prog": PROG, "description": __doc__.split("\n\n")[0], **per_parser,
                           **{name: per_parser for name in ("fit", "validate", "test")}},
            **({} if export else {"save_config_callback": None}))
    except MisconfigurationException as exc:  # a Trainer setting Lightning refuses (limit_val_batches -1): one line
        raise UsageError(str(exc)) from None
    finally:
        sys.argv = saved


def build_in_memory_cli(configs: Sequence[str | Path], seed: int, overrides: Sequence[str] = ()) -> Any:
    """``build_cli`` (not run, no exporter) for ``configs`` (files or packaged names) composed in order, seeded
    with ``seed`` (global and the method's), with :data:`IN_MEMORY_FLAGS` and then ``overrides``."""
    args = [a for config in configs for a in ("--config", str(config))]
    return build_cli([*args, f"--seed_everything={seed}", *IN_MEMORY_FLAGS, *overrides], run=False, export=False)
