"""The run directory: ``last.ckpt``, ``--ckpt_path last``, resuming safely, one live run per directory.

A run writes into its log directory (``trainer.log_dir``, or ``default_root_dir`` with ``--trainer.logger
false``): ``checkpoints/last.ckpt`` (:class:`~lightning_sdc.callbacks.PreemptionCheckpoint`), ``synthetic/``,
``config.yaml``. ``--ckpt_path last`` takes the newest checkpoint of the run root that this command may resume
(every logger version, the no-logger directory, checkpoint callbacks' ``dirpath``; none: start at step 0). Before
anything is loaded, :func:`check_class_paths` refuses a class path outside this package that the user did not
name and :func:`check_resume_config` refuses other settings (each key with both values) but those listed in
``--resume_override``. :func:`lock_run_dir`: an ``flock`` beside the log directory refuses a second live run.
"""

from __future__ import annotations

import atexit
import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_sdc.io import prepare_output_dir

#: the package whose classes a checkpoint may name
PACKAGE = "lightning_sdc"
#: class-path keys a checkpoint's hyper-parameters may hold (LightningCLI writes the first two)
CLASS_PATH_KEYS = ("_class_path", "_instantiator", "class_path")
#: Lightning's ``_instantiator`` for LightningCLI-made checkpoints (its own code, not the user's)
LIGHTNING_INSTANTIATOR = "pytorch_lightning.cli.instantiate_module"
#: model settings that shape the checkpointed state: never overridable on resume
FROZEN = ("dataset", "ipc", "label_mode", "zca", "learn_lr", "arch", "arch_kwargs")
#: DataModule settings that do not change what a run computes (paths, loader sizes, device): free on resume
DATA_FREE = ("root", "download", "device", "test_batch_size", "buffer_dir", "train_if_missing", "num_workers")
LOCK_NAME = ".lightning_sdc.lock"
LAST = "last.ckpt"


class UsageError(ValueError):
    """A command line that cannot run; the console script prints it as one line (exit status 2)."""


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed by this command (another configuration, a foreign class path)."""


# ------------------------------------------------------------------------------------------ where checkpoints go
def checkpoint_dir(trainer: Any) -> Path:
    """The run's checkpoint directory, as Lightning's ``ModelCheckpoint`` resolves it when it has no ``dirpath``:
    ``<save_dir>/<name>/<version>/checkpoints`` with a logger, ``<default_root_dir>/checkpoints`` without."""
    if trainer.loggers:
        version = trainer.loggers[0].version
        return _versions_dir(trainer) / (version if isinstance(version, str) else f"version_{version}") / "checkpoints"
    return Path(trainer.default_root_dir, "checkpoints")


def _versions_dir(trainer: Any) -> Path:
    """``<save_dir>/<name>`` of the first logger, the parent of its version directories."""
    logger = trainer.loggers[0]
    return Path(logger.save_dir if logger.save_dir is not None else trainer.default_root_dir, str(logger.name))


def _last_candidates(trainer: Any) -> set[Path]:
    """Every checkpoint this trainer could resume, whatever its name (``last.ckpt``, ``epoch=0-step=3.ckpt``):
    each logger version's, the no-logger one, and the directories of checkpoint callbacks."""
    found: set[Path] = set()
    for cb in trainer.callbacks:
        dirpath = getattr(cb, "dirpath", None)
        if dirpath is not None and (getattr(cb, "save_last", None) is not None or hasattr(cb, "last_path")):
            found |= set(Path(dirpath).glob("*.ckpt"))
    if trainer.loggers and getattr(trainer.loggers[0], "_version", None) is None:  # no version pinned: all of them
        found |= set(_versions_dir(trainer).glob("*/checkpoints/*.ckpt"))
    else:
        found |= set(checkpoint_dir(trainer).glob("*.ckpt"))
    return {p for p in found if p.is_file()}


def check_resumable(checkpoint: Mapping[str, Any], path: str | os.PathLike, fit: bool = True) -> None:
    """Refuse, naming ``path``, a checkpoint that cannot continue a run: no hyper-parameters (so no settings to
    compare), non-finite tensors in its state (a diverged run), and for ``fit`` no optimizer or loop state (a
    ``save_weights_only`` checkpoint: resuming would silently drop the optimiser's momentum)."""
    if not checkpoint.get("hyper_parameters"):
        raise ResumeError(f"checkpoint {path} holds no hyper-parameters, so its settings cannot be checked "
                          "against this run; allowed: a checkpoint written by `lightning-sdc fit` (or a "
                          "Trainer fitting one of this package's methods)")
    for key, value in (checkpoint.get("state_dict") or {}).items():
        if hasattr(value, "is_floating_point") and value.is_floating_point() and not bool(value.isfinite().all()):
            raise ResumeError(f"checkpoint {path}: {key} holds NaN or infinite values (the run had diverged "
                              "when it was written); resume from an earlier checkpoint or start a new run")
    if fit and (not checkpoint.get("optimizer_states") or "loops" not in checkpoint):
        raise ResumeError(f"checkpoint {path} holds no optimizer state (saved with save_weights_only): "
                          "resuming would drop the set optimiser's momentum and not continue the run; resume "
                          "from a full checkpoint (last.ckpt) or start a new run")


# ------------------------------------------------------------------------------------------ reading a checkpoint
def _class_paths(tree: Any, where: str = "") -> Iterable[tuple[str, str]]:
    """``(key path, class path)`` for every class-path entry anywhere in ``tree`` (dicts and lists)."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            here = f"{where}.{key}" if where else str(key)
            if key in CLASS_PATH_KEYS and isinstance(value, str):
                yield here, value
            else:
                yield from _class_paths(value, here)
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _class_paths(value, f"{where}[{i}]")


def config_class_paths(config: Any) -> set[str]:
    """Every ``class_path`` the user named (command line and config files), from a parsed config."""
    if hasattr(config, "as_dict"):
        config = config.as_dict()
    return {value for _, value in _class_paths(config)}


def check_class_paths(checkpoint: Mapping[str, Any], path: str | os.PathLike, allowed: Iterable[str] = ()) -> None:
    """Refuse a checkpoint naming a class outside this package that is not in ``allowed`` (nothing is imported).

    The hyper-parameters of a LightningCLI checkpoint name the class to build (``_class_path``) and the function
    that builds it (``_instantiator``); Lightning imports both. ``weights_only`` loading does not cover them.
    """
    allowed = set(allowed) | {LIGHTNING_INSTANTIATOR}
    for section in ("hyper_parameters", "datamodule_hyper_parameters"):
        for key, value in _class_paths(checkpoint.get(section) or {}, section):
            if value in allowed or value == PACKAGE or value.startswith(PACKAGE + "."):
                continue
            raise ResumeError(f"checkpoint {path}: {key}={value!r} names a class outside {PACKAGE} that this "
                              "command does not name; refusing to load it (nothing was imported). Allowed: "
                              f"{PACKAGE}.* or a class_path given on the command line or in a --config file")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's dict (``weights_only=True``; a corrupt file names itself)."""
    from lightning_sdc.io import safe_torch_load

    return safe_torch_load(path, what="checkpoint")


# ------------------------------------------------------------------------------------------ same configuration
def _plain(value: Any) -> Any:
    """Comparable form: tuples as lists, mappings as dicts, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal settings (``1 == 1.0``, lists == tuples), but ``True`` is not ``1`` and ``nan`` equals ``nan``."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


_MISSING = object()


def _differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str) -> list[tuple[str, Any, Any]]:
    keys = sorted((set(saved) | set(current)) - set(CLASS_PATH_KEYS))
    out = []
    for key in keys:
        a, b = saved.get(key, _MISSING), current.get(key, _MISSING)
        if a is _MISSING or b is _MISSING or not _same(a, b):
            out.append((f"{prefix}{key}", a, b))
    return out


def _show(value: Any) -> str:
    return "(not set)" if value is _MISSING else repr(_plain(value))


def check_resume_config(checkpoint: Mapping[str, Any], path: str | os.PathLike, model: Any,
                        datamodule: Any = None, overrides: Sequence[str] = (), free: Sequence[str] = ()
                        ) -> list[str]:
    """Refuse to resume ``checkpoint`` with a model/DataModule configured differently, naming every key and both
    values; ``overrides`` (``sdc_lambda``, ``model.eval_epochs``, ``data.max_start_epoch``) may differ, except the
    :data:`FROZEN` keys that shape the checkpointed state. ``free`` lists further model keys that may differ
    (``validate``/``test`` pass the evaluation settings). Returns the keys that did differ (all overridden)."""
    canonical = {o if o.startswith(("model.", "data.")) else f"model.{o}" for o in overrides}
    frozen = sorted(o for o in canonical if o.startswith("model.") and o[len("model."):] in FROZEN)
    if frozen:
        raise ResumeError(f"--resume_override {', '.join(frozen)}: these shape the checkpointed synthetic set "
                          "and cannot change on resume; overridable: any other model or data setting (e.g. "
                          "eval_epochs, sdc_lambda)")
    saved_cls = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    current_cls = f"{type(model).__module__}.{type(model).__qualname__}"
    if saved_cls is not None and saved_cls != current_cls and not _same_class(saved_cls, type(model)):
        raise ResumeError(f"checkpoint {path} is a {saved_cls} run but this command builds {current_cls}; "
                          "resume with the checkpoint's method or start a new run (another default_root_dir, "
                          "or no --ckpt_path)")
    diffs = _differences(_hparams(checkpoint.get("hyper_parameters")), _hparams(getattr(model, "hparams", {})),
                         "model.")
    if datamodule is not None and checkpoint.get("datamodule_hyper_parameters") is not None:
        current = _hparams(getattr(datamodule, "hparams", {}))
        saved = _hparams(checkpoint["datamodule_hyper_parameters"])
        diffs += [d for d in _differences(saved, current, "data.") if d[0][len("data."):] not in DATA_FREE]
    free_keys = {f"model.{k}" for k in free}
    bad = [d for d in diffs if d[0] not in canonical and d[0] not in free_keys]
    if bad:
        listed = "; ".join(f"{key}: checkpoint {_show(a)}, this run {_show(b)}" for key, a, b in bad)
        raise ResumeError(f"checkpoint {path} was made with other settings: {listed}. Resume with the "
                          "checkpoint's settings, or list the keys that may change in --resume_override "
                          f"(e.g. --resume_override [{', '.join(k for k, _, _ in bad)}]); {', '.join(FROZEN)} "
                          "can never change")
    return [d[0] for d in diffs]


def _same_class(saved: str, cls: type) -> bool:
    """``lightning_sdc.methods.DC`` names ``lightning_sdc.methods.gm.gradient.DC`` (a re-export), without importing."""
    return saved.rsplit(".", 1)[-1] == cls.__qualname__ and saved.startswith(PACKAGE + ".") and \
        cls.__module__.startswith(saved.rsplit(".", 1)[0])


def _hparams(h: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(h or {}).items() if k not in CLASS_PATH_KEYS}


# ------------------------------------------------------------------------------------------ one live run per dir
_HELD: dict[Path, Any] = {}


def lock_path(trainer: Any) -> Path:
    """The lock of the directory this run writes into: ``.<version>.lock`` beside a logger's version folder
    (outside it, so the logger still finds it empty), ``<default_root_dir>/.lightning_sdc.lock`` without one."""
    if trainer.loggers:
        log_dir = Path(trainer.log_dir)
        return log_dir.parent / f".{log_dir.name}.lock"
    return Path(trainer.default_root_dir) / LOCK_NAME


def lock_run_dir(path: str | os.PathLike) -> Path:
    """Hold an exclusive ``flock`` on ``path`` until :func:`unlock_run_dir` (which removes the file) or the process
    ends (the kernel drops the lock even on SIGKILL; the file may stay, the lock not).

    Raises :class:`RuntimeError` naming the holder (pid, host) when another live process holds it. Idempotent
    within a process.
    """
    path = Path(path).absolute()
    if path in _HELD:
        return path
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no protection
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(path, "a+")  # noqa: SIM115 - held open for the life of the run
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise RuntimeError(f"another live run ({holder}) is writing into {path.parent} (lock "
                               f"{path.name}); give this run its own --trainer.default_root_dir, or wait for "
                               "that run to end") from None
        if path.exists() and os.path.samestat(os.fstat(fh.fileno()), path.stat()):
            break
        fh.close()  # the file was removed by the holder that released it: lock the new one
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()
    _HELD[path] = fh
    return path


def unlock_run_dir(path: str | os.PathLike | None = None) -> None:
    """Release ``path`` (default: every lock this process holds) and remove its file."""
    for p in list(_HELD) if path is None else [Path(path).absolute()]:
        fh = _HELD.pop(p, None)
        if fh is not None:
            p.unlink(missing_ok=True)  # while still held: a waiting process sees the file is gone
            fh.close()


atexit.register(unlock_run_dir)


# ------------------------------------------------------------------------------------------ settings of a run
def check_trainer_settings(trainer: Any) -> None:
    """One-line errors, before any step, for the Trainer settings of a ``fit`` that would never end (no
    ``max_steps`` nor ``max_time``: one step is one synthetic-set update and the data never run out, so an epoch
    never ends), train nothing (``max_steps`` 0) or crash late (``val_check_interval`` 0)."""
    from pytorch_lightning.callbacks import Timer

    max_steps = trainer.max_steps
    endless = max_steps in (None, -1) and not (
        isinstance(trainer.limit_train_batches, int) and trainer.max_epochs not in (None, -1))  # epochs of N steps
    if endless and not any(isinstance(cb, Timer) for cb in trainer.callbacks):
        raise ValueError(f"Trainer(max_steps={max_steps}, max_epochs={trainer.max_epochs}) would never end: "
                         "one step is one synthetic-set update and an epoch never ends; give max_steps (or max_time)")
    if max_steps == 0 or (isinstance(max_steps, int) and max_steps < -1):
        raise ValueError(f"max_steps={max_steps} trains nothing; allowed: an integer >= 1 (or -1 with max_epochs)")
    interval = trainer.val_check_interval
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) \
            or interval <= 0 or (isinstance(interval, float) and interval > 1.0):
        raise ValueError(f"val_check_interval={interval!r} is not allowed; allowed: an integer >= 1 (updates between "
                         "evaluations) or a float in (0, 1]")


def check_config_files(args: Sequence[str]) -> None:
    """Every ``--config FILE`` of a command line exists and holds a YAML mapping (one line otherwise)."""
    import yaml

    named = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config", "-c")]
    for path in map(Path, named + [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]):
        if not path.is_file():
            continue  # jsonargparse also accepts inline YAML and says so itself
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UsageError(f"--config {path}: not a text file (a YAML config was expected; is it a binary, a "
                             "checkpoint?)") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if doc is None:
            raise UsageError(f"config file {path} is empty; expected a mapping such as 'model: ...', 'trainer: ...'")
        if not isinstance(doc, dict):
            raise UsageError(f"config file {path} holds a {type(doc).__name__}, expected a mapping of settings")


# ------------------------------------------------------------------------------------------ one run per dir
#: the parts of a ``fit`` config that make a run what it is (the trainer's budget may grow on resume)
RUN_IDENTITY = ("seed_everything", "model", "data")
CONFIG_NAME = "config.yaml"


def flat_items(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every entry of a nested mapping, inner mappings included."""
    items = []
    for k, v in (tree.items() if isinstance(tree, Mapping) else ()):
        items += [(f"{prefix}{k}", v), *flat_items(v, f"{prefix}{k}.")]
    return items


def _run_identity(config: Any) -> dict[str, Any]:
    if hasattr(config, "as_dict"):
        config = config.as_dict()
    flat = flat_items({k: (config or {}).get(k) for k in RUN_IDENTITY})
    return {k: v for k, v in flat if not isinstance(v, Mapping)
            and not (k.startswith("data.init_args.") and k[len("data.init_args."):] in DATA_FREE)}


def check_run_dir(trainer: Any, config: Any, resuming: bool) -> None:
    """A directory holds one run: refuse a ``fit`` without a logger (which writes straight into
    ``default_root_dir``) whose directory already holds ``config.yaml`` of another run, or a ``config.yaml`` this
    program did not write (the user's own), before anything there is replaced. A run resumed from an accepted
    checkpoint (``--ckpt_path``) continues in its directory; a run with a logger gets its own ``version_N``."""
    import yaml

    if trainer.loggers:
        return
    root = Path(trainer.default_root_dir)
    existing = root / CONFIG_NAME
    if not existing.is_file():
        return
    try:
        saved = yaml.safe_load(existing.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError:
        saved = None
    if not isinstance(saved, dict) or not {"model", "trainer"} <= set(saved):
        raise ValueError(f"{existing} is not a run config written by lightning-sdc fit, and this run "
                         "(--trainer.logger false) would replace it; give the run its own "
                         "--trainer.default_root_dir (or keep the logger: runs then go into "
                         f"{root}/lightning_logs/version_N)")
    if resuming:
        return
    mine, theirs = _run_identity(config), _run_identity(saved)
    # keys the saved config lacks are link targets (dataset, zca, seed: written once, at their source)
    diffs = [k for k in sorted(theirs) if not _same(mine.get(k, _MISSING), theirs[k])]
    if diffs:
        shown = "; ".join(f"{k}: that run {_show(theirs.get(k, _MISSING))}, this run {_show(mine.get(k, _MISSING))}"
                          for k in diffs[:4])
        more = f" (and {len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise ValueError(f"{root} already holds another run ({CONFIG_NAME}: {shown}{more}); a second run with "
                         "other settings would overwrite its synset.pt, last.ckpt and config.yaml. Give this "
                         "run its own --trainer.default_root_dir, or continue that run with its own settings "
                         "and --ckpt_path last")


# ------------------------------------------------------------------------------------------ the CLI hook
def prepare_subcommand(cli: Any, subcommand: str, lock: bool = True) -> None:
    """What ``lightning-sdc fit|validate|test`` does before the Trainer runs (called from the CLI's
    ``before_<subcommand>``): create ``fit``'s output directories (root, callbacks' ``dirpath``), resolve ``--ckpt_path
    last``, check the checkpoint (class paths, same settings), refuse ``validate``/``test`` without one, and lock
    the run directory of ``fit`` (``lock``: a ``PreemptionCheckpoint`` releases the lock when ``fit`` ends)."""
    from pytorch_lightning.utilities import rank_zero_info

    config, trainer = cli.config_init[subcommand], cli.trainer
    ckpt = config.get("ckpt_path")
    if subcommand == "fit":  # output directories that are (or lie under) a file: one line now, not after the run
        check_trainer_settings(trainer)
        dirs = [(f"{type(cb).__name__}.dirpath", cb.dirpath) for cb in trainer.callbacks if getattr(cb, "dirpath", None)]
        for what, path in [("--trainer.default_root_dir", trainer.default_root_dir), *dirs]:
            if "://" not in str(path):
                prepare_output_dir(path, what)
    if subcommand in ("validate", "test") and not ckpt:
        raise ValueError(f"{subcommand} needs --ckpt_path (a checkpoint of a fit run): without one the "
                         "synthetic set is blank. To score a saved set, use lightning-sdc evaluate PATH")
    free = () if subcommand == "fit" else tuple(k for k in _hparams(cli.model.hparams) if k.startswith("eval_"))
    overrides = list(cli.config[subcommand].get("resume_override") or [])

    def accept(path: Path) -> list[str]:
        """Refuse ``path`` (foreign class, other settings, not resumable) or return the settings that changed
        (overridden)."""
        checkpoint = read_checkpoint(path)
        check_class_paths(checkpoint, path, allowed=config_class_paths(cli.config[subcommand]))
        check_resumable(checkpoint, path, fit=subcommand == "fit")
        return check_resume_config(checkpoint, path, cli.model, cli.datamodule, overrides, free)

    changed: list[str] = []
    if ckpt == "last":
        # the newest last.ckpt of *this* run: other runs may share the root directory (another dataset, method,
        # λ); when checkpoints exist and none is this run's, the newest one's refusal names the differences
        candidates = sorted(_last_candidates(trainer), key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True)
        found, refusal = None, None
        for candidate in candidates:
            try:
                changed, found = accept(candidate), candidate
                break
            except ResumeError as exc:
                refusal = refusal or exc
        if found is None and refusal is not None:
            raise refusal
        rank_zero_info(f"--ckpt_path last: resuming from {found}" if found is not None else
                       f"--ckpt_path last: no checkpoint under {trainer.default_root_dir}; starting at step 0")
        config["ckpt_path"] = str(found) if found is not None else None
    elif ckpt in ("best", "hpc") or (ckpt and "://" in str(ckpt)):
        pass  # Lightning's own resolution; nothing local to check here
    elif ckpt:
        path = Path(ckpt)
        if not path.is_file():
            raise FileNotFoundError(f"--ckpt_path {path}: no such checkpoint file")
        changed = accept(path)
    if changed:
        rank_zero_info(f"resuming {config['ckpt_path']} with changed settings: {', '.join(changed)}")
    if subcommand == "fit":
        check_run_dir(trainer, cli.config[subcommand], resuming=bool(config.get("ckpt_path")))
        path = lock_path(trainer)  # on every rank: trainer.log_dir broadcasts once the process group exists
        if lock and trainer.is_global_zero:  # refused now, not after the data are set up
            lock_run_dir(path)  # PreemptionCheckpoint releases it when fit ends

