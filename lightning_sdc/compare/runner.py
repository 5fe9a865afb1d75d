"""Runs of a paired comparison: one distillation + evaluation per (seed, value), cached one file per run.

A comparison varies ONE config key over a few values (``model.init_args.sdc_lambda=0,0.01``) and repeats each
value with several seeds. Run ``(seed, value)`` is the LightningCLI run of the configs (as ``lightning-sdc fit``,
built by :func:`lightning_sdc.cli.build_in_memory_cli`, so the seed sets the global RNG and the method's keyed
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
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightning_sdc.io import atomic_write_text

#: a CLI key: dotted identifiers (``model.init_args.sdc_lambda``, ``trainer.max_steps``)
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
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


def resolve(config: str | Path) -> Path:
    """A config as given: a file (absolute or relative to the working directory), or a packaged config name
    (``demo/mnist5k_dsa_ipc1``, ``configs/demo/mnist5k_dsa_ipc1.yaml``: :func:`lightning_sdc.cli.resolve_config`), so
    a comparison runs from any directory and after ``pip install``; the run cache keys on the name as given."""
    from lightning_sdc.cli import resolve_config

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


def execute(spec: RunSpec, out_dir: Path) -> RunResult:
    """Distil and evaluate one run; write the set (``.pt``) and the result (``.json``) atomically."""
    from lightning_sdc.cli import build_in_memory_cli
    from lightning_sdc.evaluation import evaluate_synset

    cli = build_in_memory_cli([resolve(c) for c in spec.configs], spec.seed, run_key(spec))
    model, dm = cli.model, cli.datamodule
    t0 = time.perf_counter()
    cli.trainer.fit(model, datamodule=dm)
    distill_s = time.perf_counter() - t0
    kw = eval_kwargs(model, spec)
    synset = model.eval_synset()
    test_images, test_labels = test_split(dm.spec, spec)
    res = evaluate_synset(synset, (test_images, test_labels), **kw)
    gradn = final_gradn(cli, spec.gradn_networks, spec.seed) if spec.gradn_networks > 0 else None
    set_path = out_dir / f"{spec.slug}.pt"
    synset.save(set_path)
    result = RunResult(
        key=spec.key, value=spec.value, seed=spec.seed, accuracies=[float(a) for a in res.accuracies],
        steps=int(cli.trainer.global_step),
        eval={k: v for k, v in kw.items() if k != "seed"} | {"lr": res.lr, "test_images": int(test_labels.numel())},
        distill_seconds=distill_s, eval_seconds=res.seconds, gradn=gradn, synset=set_path.name,
        configs=list(spec.configs), overrides=run_key(spec),
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
    from lightning_sdc.cli import build_in_memory_cli
    from lightning_sdc.coresets.random_subset import random_coreset
    from lightning_sdc.data import load_dataset
    from lightning_sdc.evaluation import evaluate_synset
    from lightning_sdc.evaluation.ddranking import full_data_accuracy

    base = baseline_spec(spec, full_epochs)
    path = out_dir / f"random_seed{spec.seed}_{base.fingerprint()}.json"
    if path.exists():
        return json.loads(path.read_text())
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


def load_result(path: Path) -> RunResult:
    return RunResult(**json.loads(path.read_text()))


def run_all(specs: Sequence[RunSpec], out_dir: str | Path, log: Any = print) -> list[RunResult]:
    """Run (or load) every spec in order; a finished run is read back from its JSON, never recomputed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for i, spec in enumerate(specs, 1):
        path = out_dir / f"{spec.slug}.json"
        if path.exists():
            results.append(load_result(path))
            log(f"[skip {i}/{len(specs)}] {spec.key}={spec.value} seed {spec.seed}: {path.name}")
            continue
        log(f"[run {i}/{len(specs)}] {spec.key}={spec.value} seed {spec.seed}")
        r = execute(spec, out_dir)
        log(f"    {100 * sum(r.accuracies) / len(r.accuracies):.2f} % over {len(r.accuracies)} networks, "
            f"{r.steps} steps, distil {r.distill_seconds:.0f} s, eval {r.eval_seconds:.0f} s"
            + ("" if r.gradn is None else f", GraDN {r.gradn:.4g}"))
        results.append(r)
    return results
