"""Runs of a paired comparison: one distillation + evaluation per (seed, value), cached one file per run.

A comparison varies ONE config key over a few values (``model.init_args.sdc_lambda=0,0.01``) and repeats each
value with several seeds. Run ``(seed, value)`` is the LightningCLI run of the configs (as ``lightning-sdc fit``,
built by :func:`lightning_sdc.lightning_cli.build_in_memory_cli`, so the seed sets the global RNG and the method's keyed
generators) with ``--<key>=<value>`` appended, followed by the method's own evaluation protocol
(``model.eval_kwargs()``, optionally with ``num_models`` / ``epochs`` overridden) on the final set.

Pairing: the evaluation's seed is the run's seed, and :func:`~lightning_sdc.evaluation.evaluate_synset` draws
network ``i``'s initialisation, batch order and augmentation from ``seeded_generator(seed, i)``, so for one
seed every value's set is trained on by the *same* networks (same initial weights, same batch order, same
augmentation draws) — the accuracies differ only through the set. Distillation with one seed also starts from
the same images and sees the same matching networks / experts and augmentation draws, so two values differ
only in the varied key.

Each finished run is written atomically as ``<out>/runs/<slug>.json`` (+ the final set as ``<slug>.pt``); the
slug names the seed and value and carries a hash of everything that defines the run (config paths, overrides,
key, value, seed, evaluation overrides), so a rerun skips finished runs and a changed setting never reuses a
stale one. Two comparisons that share runs (λ = 0 of a main study and of a λ sweep) share the files.

A run in progress lives in ``<out>/runs/<slug>/``: ``checkpoints/last.ckpt`` (every 10 minutes and on
SIGTERM / SIGUSR1 / SIGINT, :class:`~lightning_sdc.callbacks.PreemptionCheckpoint`), from which the same command
resumes the distillation; ``step<k>.pt``, the set at each evaluation point of the config (every
``val_check_interval`` updates, as the in-fit validation would score it), scored after the distillation by the
same networks as the final set (``points`` of the result) and cached as ``step<k>.json``; ``segments.json``,
one entry per piece of the run (commit, first and last update, wall time), so a run spread over several
sessions records which code computed each piece.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_sdc.cost import evaluation_points
from lightning_sdc.io import atomic_write_text
from lightning_sdc.progress import progress, quiet_lightning, update_callback

#: a CLI key: dotted identifiers (``model.init_args.sdc_lambda``, ``trainer.max_steps``)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: the record of a run's pieces, in its run directory
SEGMENTS = "segments.json"
#: bump when the meaning of a cached run file changes
RUN_FORMAT = 1


def parse_vary(spec: str) -> tuple[str, list[str]]:
    """``"model.init_args.sdc_lambda=0,0.01"`` -> ``("model.init_args.sdc_lambda", ["0", "0.01"])``.

    Values stay strings (the CLI parses them with the config's types); at least two distinct values.
    """
    if not isinstance(spec, str) or "=" not in spec:
        raise ValueError(f"--vary {spec!r}: expected KEY=V1,V2[,...], e.g. model.init_args.sdc_lambda=0,0.01")
    key, _, rest = spec.partition("=")
    key = key.strip().removeprefix("--")
    if not _KEY.match(key):
        raise ValueError(f"--vary {spec!r}: key {key!r} is not a dotted config key like model.init_args.sdc_lambda")
    values = [v.strip() for v in rest.split(",")]
    if any(not v for v in values):
        raise ValueError(f"--vary {spec!r}: empty value; expected KEY=V1,V2[,...]")
    if len(values) < 2:
        raise ValueError(f"--vary {spec!r}: a comparison needs at least 2 values, got {len(values)}")
    if len(set(values)) != len(values):
        raise ValueError(f"--vary {spec!r}: repeated value(s) {sorted({v for v in values if values.count(v) > 1})}")
    return key, values


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run (and therefore its cache file)."""

    configs: tuple[str, ...]  # as given (repository-relative or absolute), so the fingerprint is portable
    key: str
    value: str
    seed: int
    overrides: tuple[str, ...] = ()
    eval_num_models: int | None = None
    eval_epochs: int | None = None
    gradn_networks: int = 4
    eval_test_size: int | None = None

    def fingerprint(self) -> str:
        fields = asdict(self)
        if fields["eval_test_size"] is None:  # added later: runs without it keep their fingerprint
            del fields["eval_test_size"]
        blob = json.dumps({"format": RUN_FORMAT, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def slug(self) -> str:
        value = re.sub(r"[^A-Za-z0-9.+-]", "_", self.value)
        return f"{self.key.rsplit('.', 1)[-1]}={value}_seed{self.seed}_{self.fingerprint()}"


@dataclass
class RunResult:
    """One finished run: the accuracies of the evaluation networks (fractions) and what produced them."""

    key: str
    value: str
    seed: int
    accuracies: list[float]
    steps: int
    eval: dict[str, Any]
    distill_seconds: float
    eval_seconds: float
    gradn: float | None = None
    synset: str | None = None
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    #: update -> accuracies of the set at that evaluation point (the final set's are ``accuracies``)
    points: dict[str, list[float]] = field(default_factory=dict)
    #: the pieces of the distillation: commit, first and last update, wall seconds
    segments: list[dict[str, Any]] = field(default_factory=list)


def resolve(config: str | Path) -> Path:
    """A config as given: a file (absolute or relative to the working directory), or a packaged config name
    (``demo/mnist5k_dsa_ipc1``, ``configs/demo/mnist5k_dsa_ipc1.yaml``: :func:`lightning_sdc.lightning_cli.resolve_config`), so
    a comparison runs from any directory and after ``pip install``; the run cache keys on the name as given."""
    from lightning_sdc.lightning_cli import resolve_config

    return resolve_config(config, option="--cell")


def run_key(spec: RunSpec) -> list[str]:
    """The CLI arguments of ``spec`` after the configs: the fixed overrides, then ``--key=value``."""
    return [*spec.overrides, f"--{spec.key}={spec.value}"]


def stratified_head(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Indices of the first ``size // C`` test images of each of the ``C`` classes (in file order): a fixed,
    class-balanced subset, the same for every run."""
    classes = int(labels.max()) + 1
    per = size // classes
    if per < 1:
        raise ValueError(f"eval_test_size={size}: needs at least one image per class ({classes} classes)")
    idx = [torch.nonzero(labels == c).flatten()[:per] for c in range(classes)]
    short = [c for c, i in enumerate(idx) if i.numel() < per]
    if short:
        raise ValueError(f"eval_test_size={size}: class {short[0]} has fewer than {per} test images")
    return torch.cat(idx).sort().values


def final_gradn(cli: Any, num_networks: int, seed: int) -> float:
    """Mean GraDN (eq. 7) of the final synthetic set over ``num_networks`` networks of the method's architecture:
    fresh initialisations keyed on ``seed`` for GM methods, expert snapshots for TM (``GraDNTracker``'s
    ``source="auto"``) — the same networks for every value of one seed."""
    from lightning_sdc.callbacks import GraDNTracker

    tracker = GraDNTracker(num_networks=num_networks, source="auto", seed=seed)
    return tracker.measure(cli.trainer, cli.model)


def eval_kwargs(model: Any, spec: RunSpec) -> dict[str, Any]:
    """The method's evaluation protocol with the run's seed (the pairing: one seed -> the same evaluation networks
    for every value) and the comparison's ``num_models`` / ``epochs`` overrides."""
    kw = dict(model.eval_kwargs())
    kw["seed"] = spec.seed
    if spec.eval_num_models is not None:
        kw["num_models"] = spec.eval_num_models
    if spec.eval_epochs is not None:
        kw["epochs"] = spec.eval_epochs
    return kw


def test_split(data: Any, spec: RunSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels of ``data`` (a DatasetSpec), cut to ``spec.eval_test_size`` if set."""
    images, labels = data.test_images, data.test_labels
    if spec.eval_test_size is not None:
        keep = stratified_head(labels, spec.eval_test_size)
        images, labels = images[keep], labels[keep]
    return images, labels


def source_commit() -> str:
    """The commit of the package's checkout (``+dirty`` with uncommitted changes), or its installed version."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"lightning-sdc {version('lightning-sdc')}"
        except PackageNotFoundError:
            return "unknown"


class SetSnapshots(pl.Callback):
    """Writes the synthetic set after each update in ``steps`` to ``<dirpath>/step<k>.pt`` (atomically), and at
    the start of a resumed run whose step is one of them (the checkpoint holds the set of that update)."""

    def __init__(self, steps: Sequence[int], dirpath: Path) -> None:
        self.steps, self.dirpath = set(steps), Path(dirpath)
        self.start_step: int | None = None  # the update this piece of the run started from

    def path(self, step: int) -> Path:
        return self.dirpath / f"step{step}.pt"

    def _write(self, trainer: pl.Trainer, pl_module: Any) -> None:
        step = trainer.global_step
        if step in self.steps and trainer.is_global_zero and not self.path(step).exists():
            pl_module.eval_synset().save(self.path(step))

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self.start_step = int(trainer.global_step)
        self._write(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self._write(trainer, pl_module)


def read_segments(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / SEGMENTS
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not a segments file ({exc}); delete it to restart the record") from None


def distil(spec: RunSpec, run_dir: Path) -> tuple[Any, list[int]]:
    """The distillation of ``spec`` in ``run_dir``, resumed from its ``last.ckpt`` when there is one; each piece
    appended to ``segments.json``. Returns the CLI (model, trainer, datamodule) and the evaluation points."""
    from lightning_sdc.callbacks import PreemptionCheckpoint
    from lightning_sdc.lightning_cli import build_in_memory_cli
    from lightning_sdc.runs import LAST

    run_dir.mkdir(parents=True, exist_ok=True)
    cli = build_in_memory_cli([resolve(c) for c in spec.configs], spec.seed,
                              [*run_key(spec), f"--trainer.default_root_dir={run_dir}",
                               "--trainer.enable_checkpointing=true"])
    points = evaluation_points(cli.trainer)
    ckpt_dir = run_dir / "checkpoints"
    snapshots = SetSnapshots(points, run_dir)
    cli.trainer.callbacks.insert(0, snapshots)
    cli.trainer.callbacks.append(PreemptionCheckpoint(dirpath=str(ckpt_dir), signals=("SIGTERM", "SIGUSR1", "SIGINT"),
                                                      resume="Run the same command to continue."))
    last = ckpt_dir / LAST
    segments = read_segments(run_dir)
    segment = {"commit": source_commit(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "from_step": None}
    t0 = time.perf_counter()
    try:
        with progress(total=cli.trainer.max_steps, desc=f"{spec.slug}: distil", unit="update") as bar:
            cli.trainer.callbacks.append(update_callback(bar))
            cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=str(last) if last.exists() else None)
    finally:
        if snapshots.start_step is not None and cli.trainer.global_step > snapshots.start_step:
            segment.update(from_step=snapshots.start_step, to_step=int(cli.trainer.global_step),
                           seconds=round(time.perf_counter() - t0, 1))
            atomic_write_text(json.dumps([*segments, segment], indent=1), run_dir / SEGMENTS)
    return cli, points


def _score(path: Path, synset: Any, test: tuple[torch.Tensor, torch.Tensor], kw: dict[str, Any]) -> dict[str, Any]:
    """Accuracies of ``synset`` under ``kw``, cached in ``path`` (a JSON), so an interrupted evaluation of the
    points resumes at the first unscored one."""
    from lightning_sdc.evaluation import evaluate_synset

    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            path.unlink()  # a torn cache file: score again
    with progress(total=kw["num_models"] * (kw["epochs"] + 1), desc=f"evaluate {path.stem}", unit="epoch") as bar:
        res = evaluate_synset(synset, test, on_epoch=bar.update, **kw)
    out = {"accuracies": [float(a) for a in res.accuracies], "lr": res.lr, "seconds": res.seconds}
    atomic_write_text(json.dumps(out), path)
    return out


def execute(spec: RunSpec, out_dir: Path) -> RunResult:
    """Distil (resumably, :func:`distil`) and evaluate one run: the set at each evaluation point and the final
    set, on the seed's networks; write the final set (``.pt``) and the result (``.json``) atomically."""
    from lightning_sdc.synthetic import SyntheticSet

    run_dir = out_dir / spec.slug
    cli, points = distil(spec, run_dir)
    model, dm = cli.model, cli.datamodule
    kw = eval_kwargs(model, spec)
    test = test_split(dm.spec, spec)
    scored = {str(k): _score(run_dir / f"step{k}.json", SyntheticSet.load(run_dir / f"step{k}.pt"), test, kw)
              for k in points if (run_dir / f"step{k}.pt").exists()}
    synset = model.eval_synset()
    final = _score(run_dir / "final.json", synset, test, kw)
    gradn = final_gradn(cli, spec.gradn_networks, spec.seed) if spec.gradn_networks > 0 else None
    set_path = out_dir / f"{spec.slug}.pt"
    synset.save(set_path)
    segments = read_segments(run_dir)
    result = RunResult(
        key=spec.key, value=spec.value, seed=spec.seed, accuracies=final["accuracies"],
        steps=int(cli.trainer.global_step),
        eval={k: v for k, v in kw.items() if k != "seed"} | {"lr": final["lr"], "test_images": int(test[1].numel())},
        distill_seconds=sum(s.get("seconds", 0.0) for s in segments),
        eval_seconds=final["seconds"] + sum(p["seconds"] for p in scored.values()), gradn=gradn,
        synset=set_path.name, configs=list(spec.configs), overrides=run_key(spec),
        points={k: p["accuracies"] for k, p in scored.items()}, segments=segments,
    )
    atomic_write_text(json.dumps(asdict(result), indent=1), out_dir / f"{spec.slug}.json")
    return result


def baseline_spec(spec: RunSpec, full_epochs: int) -> RunSpec:
    """The DD-Ranking baseline of ``spec``'s seed: its configs and fixed overrides without the varied key."""
    return RunSpec(spec.configs, "ddranking.full_epochs", str(full_epochs), spec.seed, spec.overrides,
                   spec.eval_num_models, spec.eval_epochs, 0, spec.eval_test_size)


def execute_baseline(spec: RunSpec, full_epochs: int, out_dir: Path) -> dict[str, Any]:
    """DD-Ranking's references for one seed, cached as ``random_seed<seed>_<hash>.json``: the accuracies of
    ``ipc`` random real images per class (drawn with the seed) on the seed's evaluation networks, under the protocol
    of the configs (without the varied key, nothing distilled), and the full-data accuracy
    (:func:`lightning_sdc.evaluation.ddranking.full_data_accuracy`, trained once per setting into
    ``<out>/full_data``)."""
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.evaluation.ddranking import full_data_accuracy
    from lightning_sdc.lightning_cli import build_in_memory_cli
    from lightning_sdc.synthetic import random_coreset

    base = baseline_spec(spec, full_epochs)
    path = out_dir / f"random_seed{spec.seed}_{base.fingerprint()}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            path.unlink()  # a torn cache file: computed again
    cli = build_in_memory_cli([resolve(c) for c in spec.configs], spec.seed, list(spec.overrides))
    model, dm = cli.model, cli.datamodule
    data = load_dataset(dm.dataset, dm.root, download=dm.download, zca=dm.zca, **dm.dataset_kwargs)
    kw = eval_kwargs(model, spec)
    test = test_split(data, spec)
    res = evaluate_synset(random_coreset(data, int(model.hparams.ipc), seed=spec.seed), test, **kw)
    full = full_data_accuracy(
        (data.train_images, data.train_labels), test, dataset=data.name, arch=kw["arch"],
        arch_kwargs=kw["arch_kwargs"], epochs=full_epochs, batch_size=kw["batch_size"], augment=kw["augment"],
        dsa_strategy=kw["dsa_strategy"], device=kw.get("device") or "cpu", cache_dir=out_dir.parent / "full_data")
    out = {"seed": spec.seed, "accuracies": [float(a) for a in res.accuracies], "full": float(full),
           "full_epochs": full_epochs, "eval": {k: v for k, v in kw.items() if k != "seed"} | {"lr": res.lr}}
    atomic_write_text(json.dumps(out, indent=1), path)
    return out


def load_result(path: Path) -> RunResult | None:
    """The finished run cached in ``path``, or ``None`` (with a line saying so) when the file is not one: a run
    cut short while writing it, or edited, is computed again from its run directory."""
    try:
        return RunResult(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        print(f"{path}: not a finished-run file ({type(exc).__name__}: {exc}); computing the run again", flush=True)
        return None


def run_all(specs: Sequence[RunSpec], out_dir: str | Path, log: Any = print) -> list[RunResult]:
    """Run (or load) every spec in order; a finished run is read back from its JSON, never recomputed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, spec in enumerate(specs, 1):
        path = out_dir / f"{spec.slug}.json"
        cached = load_result(path) if path.exists() else None
        if cached is not None:
            results.append(cached)
            log(f"[skip {i}/{len(specs)}] {spec.key}={spec.value} seed {spec.seed}: {path.name}")
            continue
        log(f"[run {i}/{len(specs)}] {spec.key}={spec.value} seed {spec.seed}")
        with quiet_lightning():
            r = execute(spec, out_dir)
        log(f"    {100 * sum(r.accuracies) / len(r.accuracies):.2f} % over {len(r.accuracies)} networks, "
            f"{r.steps} steps, distil {r.distill_seconds:.0f} s, eval {r.eval_seconds:.0f} s"
            + ("" if r.gradn is None else f", GraDN {r.gradn:.4g}"))
        results.append(r)
    return results
