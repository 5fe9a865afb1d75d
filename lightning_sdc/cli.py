"""The ``lightning-sdc`` command line (also ``python -m lightning_sdc``); ``lightning-sdc --help`` lists it all.

:data:`COMMANDS` is the one table of subcommands and their help lines; :func:`command` imports the function of one
when it runs (``--help`` and ``theory`` load no torch). ``fit | validate | test`` are the LightningCLI of
:mod:`lightning_sdc.lightning_cli`; the others are functions run by ``jsonargparse.auto_cli`` (typed ``--help``,
``--config`` files), each list option taking ``--x A B`` and ``--x '[A, B]'`` and each flag alone meaning true.
All run under :func:`lightning_sdc.signals.stop_on_signals`; :func:`main` prints errors in one line.
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
import re
import sys
import warnings
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_sdc.lightning_cli import (  # noqa: F401 - the command line's public names
    CONFIG_DIR,
    PROG,
    UsageError,
    build_cli,
    build_in_memory_cli,
    configs_command,
    help_formatter,
    packaged_configs,
    resolve_config,
    rewrite_args,
)
from lightning_sdc.runs import check_config_files
from lightning_sdc.signals import stop_on_signals

#: every subcommand -> its line in ``lightning-sdc --help``; :func:`command` holds the function of each
COMMANDS = {
    "fit": "Distil a synthetic set (one training step = one update of the set); writes it to <log dir>/synthetic/.",
    "validate": "Run a method's evaluation protocol (fresh networks on its synthetic set) on the real test split.",
    "test": "The same evaluation through Lightning's test loop.",
    "evaluate": "Score a saved synthetic set: train fresh networks on it, report test accuracy per architecture.",
    "experts": "Train expert trajectories (MTT buffer.py; FTD's sharpness-aware experts with --rho).",
    "difficulty": "Train an ensemble, score every sample with χ, GraDN, EL2N and loss, and draw Figure 3.",
    "coreset": "Select ipc real images per class with a coreset baseline, save them, and evaluate them.",
    "theory": "Compute (or load from the .npz cache next to it) and draw one theory figure as a PNG.",
    "demo": "Distil a GM demo config with and without SDC on the CPU; print the accuracy of Random and the method.",
    "reproduce": "Run (or resume) a reproduction grid of paper cells with and without SDC.",
    "gradn-curve": "GraDN of the synthetic set during distillation, with and without SDC (Figure 1a/1c).",
    "compare": "Paired multi-seed comparison of the values of one config key (mean difference, 95 % CIs, p-value).",
    "configs": "List the packaged configs (usable as --config NAME from any directory).",
}
#: the LightningCLI's subcommands; the others are functions (:func:`command`)
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")
SUBCOMMANDS = tuple(name for name in COMMANDS if name not in LIGHTNING_SUBCOMMANDS)
#: subcommands whose required arguments are positional (``evaluate PATH``); the others take ``--name value``
POSITIONAL = ("evaluate",)
REFUSED = {"predict": "a distillation method has nothing to predict; score a synthetic set with "
                      "`lightning-sdc evaluate PATH`"}


def command(name: str) -> Callable[..., Any]:
    """The function that runs subcommand ``name`` (``fit``/``validate``/``test``: :func:`build_cli`)."""
    match name:
        case "evaluate":
            from lightning_sdc.evaluation.command import evaluate_command as function
        case "experts":
            from lightning_sdc.experts.command import experts_command as function
        case "difficulty":
            from lightning_sdc.difficulty.command import difficulty_command as function
        case "coreset":
            from lightning_sdc.coresets.command import coreset_command as function
        case "theory":
            from lightning_sdc.theory.cli import theory_command as function
        case "demo":
            from lightning_sdc.demo import demo_command as function
        case "reproduce":
            from lightning_sdc.experiments import reproduce_command as function
        case "gradn-curve":
            from lightning_sdc.gradn_curve import gradn_curve_command as function
        case "compare":
            from lightning_sdc.compare.command import compare_command as function
        case "configs":
            function = configs_command
        case _:
            function = build_cli
    return function


# ---------------------------------------------------------------------- one syntax for lists and flags
def list_options(function: Callable[..., Any], kind: str = "list") -> list[str]:
    """The options of a subcommand's ``function`` that take a list (``--archs``, ``--seeds``, ``--overrides``), or
    with ``kind="flag"`` a boolean."""
    pattern = r"(typing\.)?(List|list|Sequence|tuple|Tuple)\[" if kind == "list" else \
        r"(typing\.)?(bool|bool \| None|None \| bool|Optional\[bool\])"
    found = []
    for p in inspect.signature(function).parameters.values():
        text = p.annotation if isinstance(p.annotation, str) else "bool" if p.annotation is bool else str(p.annotation)
        if (re.search if kind == "list" else re.fullmatch)(pattern, text):
            found.append(f"--{p.name}")
    return found


def plain_args(argv: Sequence[str], lists: Sequence[str] = (), flags: Sequence[str] = (),
               positional: bool = False) -> list[str]:
    """``--x A B`` (``x`` in ``lists``) -> ``--x [A, B]``, ending at the next ``--option`` (with ``positional``, at
    an existing path); ``--x '[A, B]'`` and ``--x=[A,B]`` pass as written; ``--flag`` alone -> ``--flag=true``."""
    out, args, i = [], list(argv), 0
    while i < len(args):
        arg, i = args[i], i + 1
        following = args[i] if i < len(args) else ""
        if arg in flags and following.lower() not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            out.append(f"{arg}=true")
            continue
        out.append(arg)
        if arg not in lists:
            continue
        if following.startswith("["):  # written as a list, perhaps split by the shell at its spaces
            j = i
            while j + 1 < len(args) and not args[j].rstrip().endswith("]"):
                j += 1
            out.append(" ".join(args[i:j + 1]))
            i = j + 1
            continue
        items = []
        while i < len(args) and not args[i].startswith("--") and not (positional and os.path.exists(args[i])):
            items.append(args[i])
            i += 1
        if items:
            out.append("[" + ", ".join(json.dumps(x) if re.search(r"[\s,\[\]{}:#'\"]", x) else x for x in items) + "]")
    return out


# ---------------------------------------------------------------------- the program
def usage() -> str:
    """The top-level help: every subcommand with its one-line description."""
    width = max(map(len, COMMANDS))
    return "\n".join([
        f"usage: {PROG} SUBCOMMAND [options]      ({PROG} SUBCOMMAND --help: its options)", "",
        "Dataset distillation with Sample Difficulty Correction (SDC), as PyTorch Lightning modules.", "",
        "subcommands:", *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()), "",
        f"examples:  {PROG} fit --config trainer/cpu --config demo/digits_dc_ipc1",
        f"           {PROG} evaluate lightning_logs/version_0/synthetic/synset.pt --archs ConvNet ResNet18",
        f"           {PROG} configs          (the packaged configs, usable as --config NAME)"])


def _unknown(name: str) -> UsageError:
    if name in REFUSED:
        return UsageError(f"{name}: not available: {REFUSED[name]}")
    if name.startswith("-"):
        return UsageError(f"{name}: options come after a subcommand ({PROG} SUBCOMMAND {name} ...); "
                          f"subcommands: {', '.join(COMMANDS)}")
    close = difflib.get_close_matches(name, list(COMMANDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"unknown subcommand {name!r}{hint}; choose from: {', '.join(COMMANDS)}")


class _LightningNoise(logging.Filter):
    """Drops Lightning's tips (litlogger, litmodels) and a banner it already printed in this process (the
    accelerator and seed lines of every in-memory run of ``reproduce`` or ``compare``); other lines pass."""

    BANNERS = ("GPU available", "TPU available", "HPU available", "IPU available", "LOCAL_RANK:", "Seed set to")
    seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("💡") or (message.startswith(self.BANNERS) and message in self.seen):
            return False
        self.seen.add(message)
        return True


def quiet_lightning_noise() -> None:
    """:class:`_LightningNoise` on the loggers of Lightning's banners and tips; no ``_pytree`` deprecation warning."""
    warnings.filterwarnings("ignore", message=r".*(_pytree|LeafSpec)")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LightningNoise) for f in logger.filters):
            logger.addFilter(_LightningNoise())


def report_fit(cli: Any) -> None:
    """``fit``'s last lines: the final accuracy (when it evaluated) and the set it wrote."""
    from statistics import fmean, pstdev

    trainer, model = cli.trainer, cli.model
    accs = list(getattr(model, "last_eval_accuracies", None) or [])
    if accs and trainer.is_global_zero:
        print(f"accuracy {100 * fmean(accs):.2f} ± {100 * pstdev(accs):.2f} % over {len(accs)} networks "
              f"({model.hparams.get('dataset')} test, {model.last_eval_test_images} images)")
    for cb in trainer.callbacks if trainer.is_global_zero else ():
        for path in getattr(cb, "paths", None) or []:
            if Path(path).name == f"{getattr(cb, 'filename', 'synset')}.pt":
                print(f"wrote {path}")


def run(args: Sequence[str] | None = None) -> Any:
    """Run a command line in-process and return its result (the LightningCLI, or the subcommand's value).

    ``None`` reads ``sys.argv[1:]``. Raises :class:`UsageError` for an unknown subcommand and for bad arguments
    this program checks; ``--help`` and parse errors raise ``SystemExit`` as argparse does.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    name = argv[0]
    if name not in COMMANDS:
        raise _unknown(name)
    quiet_lightning_noise()
    if name in LIGHTNING_SUBCOMMANDS:
        with stop_on_signals(name):
            cli = build_cli(None if args is None else argv)
        if name == "fit":
            report_fit(cli)
        return cli
    from jsonargparse import auto_cli

    function = command(name)
    sub_argv = plain_args(argv[1:], list_options(function),
                          list_options(function, "flag"), positional=name in POSITIONAL)
    try:
        check_config_files(sub_argv)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with stop_on_signals(name):  # SIGTERM/SIGUSR1/SIGINT: stop, keep finished work, no orphan workers
        return auto_cli(function, args=sub_argv, as_positional=name in POSITIONAL, prog=f"{PROG} {name}",
                        exit_on_error=False, formatter_class=help_formatter())


_PARSER_KEY = re.compile(r'^Parser key "([^"]+)":')
_CLASS_PATH = re.compile(r"^- Problem with given class_path '([^']+)':")
_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:",
          "Expected a <class 'NoneType'>")


#: jsonargparse's ``Expected a <class 'float'>`` in words (YAML reads ``nan``/``inf`` as strings: only ``.nan``/``.inf``)
_TYPE_WORDS = {"float": "a number such as 0.01 (nan and inf are not numbers here)", "int": "an integer",
               "bool": "true or false", "NoneType": "null"}


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, without jsonargparse's wrapping.

    jsonargparse reports a bad value inside a class (``--model.init_args.ipc abc``) as nested blocks: every Union
    subtype's error (one is always ``Expected a <class 'NoneType'>``) and the whole given value. This keeps the
    errors that matter, each prefixed with its full key (``model.init_args.ipc: Expected a <class 'int'>. Got
    value: abc``), and the value given."""
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    text = re.sub(r"Call to compute_fn of link '[^']*' with args \(.*?\) failed: ", "", text)  # our own check's text
    if "\n" not in text.strip():
        return _plain_types(text.strip())
    stack: list[tuple[int, str]] = []
    errors: list[tuple[str, str]] = []
    given: dict[str, str] = {}
    for raw in filter(str.strip, text.splitlines()):
        line, indent = raw.strip(), len(raw) - len(raw.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        where = ".".join(name for _, name in stack)
        if (m := _PARSER_KEY.match(line)) or (m := _CLASS_PATH.match(line)):
            stack.append((indent, m.group(1) if line.startswith("Parser") else "init_args"))
        elif line.startswith("Given value:"):
            if not (value := line[len("Given value:"):].strip()).startswith(("Namespace(", "NestedArg(")):
                given.setdefault(where, value)
        elif (line := line.removeprefix("- ").strip()) and not line.startswith(_NOISE):
            errors.append((where, line))
    parts = []  # one per error, each once
    for where, line in errors:
        last = where.rsplit(".", 1)[-1]
        shown = line if not where or re.search(rf"\b{re.escape(last)}\b", line) else f"{where}: {line}"
        if where in given and "Got value" not in line:
            value = given[where]
            split = value.startswith(("{", "[")) and value.count(value[0]) > value.count("}" if value[0] == "{" else "]")
            shown += f" (given: {value}" + (": the shell split the value at its spaces; quote it, e.g. "
                                            f"--{where} '{{width: 8, depth: 2}}')" if split else ")")
        parts.append(shown)
    return _plain_types("; ".join(dict.fromkeys(parts)) or " ".join(line.strip() for line in text.splitlines()
                                                                      if line.strip()))


def _plain_types(text: str) -> str:
    return re.sub(r"Expected a <class '(\w+)'>", lambda m: "expected " + _TYPE_WORDS.get(m[1], f"a {m[1]}"), text)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the console script: runs :func:`run`, prints the paths a subcommand returns as written,
    and turns a :class:`UsageError` (or a command line jsonargparse refused) into one line on stderr with exit
    status 2. The errors this library raises for bad input (``ValueError``, ``KeyError``, ``TypeError``, file
    errors, a refused resume or set file, a failed evaluation, a missing package) are one line naming their type,
    exit status 1; ``LIGHTNING_SDC_TRACEBACK=1`` re-raises them with the full traceback."""
    try:
        result = run(args)
    except (UsageError, ArgumentError) as exc:
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
    if isinstance(result, (list, tuple)) and result and all(isinstance(p, (str, Path)) and Path(p).exists()
                                                            for p in result):
        print("\n".join(f"wrote {p}" for p in result))


if __name__ == "__main__":
    main()
