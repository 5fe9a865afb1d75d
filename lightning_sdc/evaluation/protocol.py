"""The evaluation engine: fresh networks trained on a synthetic set and tested on the real test split.

Every evaluation of this package runs here — :func:`evaluate_synset` (``compare``, the coreset baselines,
DD-Ranking), :func:`evaluate_table` (``lightning-sdc evaluate``, :class:`~lightning_sdc.callbacks.CrossArchEvaluation`)
and the periodic evaluation inside ``fit`` (:meth:`~lightning_sdc.methods.base.DistillationModule.evaluate_now`):

1. **jobs**: a list of ``(architecture, network index)``; network ``i`` draws its initialisation, batch order
   and augmentation from ``seeded_generator(*key, i)`` (``key`` = ``(seed,)``, or ``(seed, 7919, step)`` for
   ``fit``'s evaluations before the final set), so a job is the same network whichever process runs it;
2. **train** (:func:`train_network`): DC ``utils.py:evaluate_synset`` (also MTT's and DATM's) —
   :meth:`~lightning_sdc.training.Schedule.dc_evaluation` run by the one
   :class:`~lightning_sdc.training.TrainingLoop`: SGD momentum 0.9, weight decay 5e-4, ``epochs + 1`` passes
   in batches of 256, lr × 0.1 and a new optimiser after pass ``epochs // 2 + 1``, the training augmentation
   per batch; soft targets (probabilities) with cross-entropy on probabilities (TESLA/DATM ``SoftCrossEntropy``);
3. **test** (:func:`test_accuracy`): top-1 accuracy of the final network on the whole test split (correct /
   total in float32, = ``torchmetrics``' micro ``MulticlassAccuracy``);
4. **shard and gather**: under ``torch.distributed`` rank ``r`` runs jobs ``r, r + world, …``
   (:func:`rank_share`) and every rank gathers every result (:func:`gather_results`): the table of one process.

Speed (same numbers to float rounding): ``compiled`` runs the training loss and the test forward through
``torch.compile`` (:class:`~lightning_sdc.models.compiled.CompiledNetwork`); by default (``None``) whenever the
evaluation is big enough to pay for the compilation (:data:`COMPILE_MIN_FLOP`), eagerly otherwise, for networks
with BatchNorm, or — one log line — where compilation fails. ``stacked=k`` trains ``k`` networks at once
(``torch.func`` vmap over stacked parameters: for accelerators; on one CPU thread it is slower).
``test_bf16`` (opt-in, changes logits by bf16 rounding) runs the test pass under bf16 autocast.

Differences from the references, on purpose: initialisation and augmentation draw from the explicit generators
above (the references reseed the global RNG from the wall clock), so an evaluation is reproducible.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from lightning_sdc import models as networks
from lightning_sdc.checks import check_int
from lightning_sdc.data import DATASETS
from lightning_sdc.models.base import forward_flops
from lightning_sdc.models.compiled import CompiledNetwork, has_module_state, use_persistent_cache
from lightning_sdc.synthetic import SyntheticSet, label_range_problem
from lightning_sdc.training import TRAIN_AUGMENTS as EVAL_AUGMENTS  # noqa: F401  (re-exported)
from lightning_sdc.training import Augment, Schedule, TrainingLoop, make_train_augment, seeded_generator

#: Cross-architecture pool of DC's ``get_eval_pool('M')`` (Tables 3/9–11 of the paper).
CROSS_ARCHS = ("ConvNet", "ResNet18", "VGG11", "AlexNet", "LeNet", "MLP")
#: rows per batch of the compiled test pass: its activations stay in cache (ConvNet-128, Fashion-MNIST, one CPU
#: thread: 14.6 CPU s per 10,000 images against 16.2–16.9 s in batches of 2048)
COMPILED_TEST_BATCH = 128
#: ``compiled=None`` compiles when the networks this process trains cost at least this many FLOPs (forward,
#: backward ≈ 2 × forward, and the test pass): ≈ 20 s of eager work on one CPU core, a few times a warm compile
COMPILE_MIN_FLOP = 1e12

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class EvalResult:
    """Accuracies of ``num_models`` fresh networks of one architecture trained on one synthetic set."""

    arch: str
    accuracies: list[float]
    epochs: int
    lr: float
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_models(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float:
        return float(sum(self.accuracies) / len(self.accuracies))

    @property
    def std(self) -> float:
        """Population std (``np.std``), as the references report."""
        m = self.mean
        return float(math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / len(self.accuracies)))

    def __str__(self) -> str:
        return f"{self.arch}: {100 * self.mean:.2f} ± {100 * self.std:.2f} % ({self.num_models} models)"


# ---------------------------------------------------------------------------------------------- jobs over ranks
def eval_jobs(archs: Sequence[str], num_models: int | Sequence[int]) -> list[tuple[str, int]]:
    """``(arch, model)`` for every architecture and model index (``range(num_models)`` or the given indices),
    architecture-major (table order)."""
    indices = range(num_models) if isinstance(num_models, int) else num_models
    return [(a, i) for a in archs for i in indices]


def unique_archs(archs: Sequence[str]) -> list[str]:
    """The canonical names of ``archs``; ``KeyError`` naming the allowed ones for an unknown name, ``ValueError``
    for a network named twice (its networks would be the same ones, counted as independent)."""
    canon = [networks.NETWORKS.canonical(a) for a in archs]
    twice = sorted({c for c in canon if canon.count(c) > 1})
    if twice:
        raise ValueError(f"archs={list(archs)} names {', '.join(twice)} more than once; allowed: each architecture "
                         "once (network i of an architecture is always the same network)")
    return canon


def rank_share(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Items ``rank, rank + world, …`` — this rank's share of a job list (disjoint, covering, balanced)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    return list(items[rank::world])


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default ``torch.distributed`` process group; ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_results(local: Mapping[int, T], num_jobs: int, error: BaseException | None = None) -> list[T]:
    """Every rank's ``{job index: result}`` merged into one list in job order, on every rank
    (``all_gather_object`` on the default process group: pickled, so floats arrive bit-exact; none on one process).

    ``error``: this rank's failure (its jobs unfinished). The ranks still meet in the gather — a rank that raised
    before it would leave the others waiting for ever — and then every rank raises one ``RuntimeError`` naming
    each failed rank (one process: the error itself).

    Raises:
        RuntimeError: a rank failed, or a job was done by no rank or by two (a wrong share).
    """
    rank, world = dist_rank_world()
    payload = {"results": dict(local), "error": None if error is None else f"{type(error).__name__}: {error}"}
    gathered: list[Any] = [payload]
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, payload)
    failed = [f"rank {r}: {p['error']}" for r, p in enumerate(gathered) if p["error"] is not None]
    if failed:
        if world == 1 and error is not None:
            raise error
        raise RuntimeError("; ".join(failed))
    merged: dict[int, T] = {}
    for p in gathered:
        twice = sorted(set(merged) & set(p["results"]))
        if twice:
            raise RuntimeError(f"evaluation jobs {twice} were done by two ranks")
        merged.update(p["results"])
    missing = [j for j in range(num_jobs) if j not in merged]
    if missing:
        raise RuntimeError(f"evaluation jobs {missing} were done by no rank (rank {rank} gathered {sorted(merged)})")
    return [merged[j] for j in range(num_jobs)]


# ---------------------------------------------------------------------------------------------- train and test
def train_network(net: nn.Module, images: Tensor, targets: Tensor, *, epochs: int, lr: float, batch_size: int = 256,
                  momentum: float = 0.9, weight_decay: float = 5e-4, augment: Augment | None = None,
                  generator: torch.Generator | None = None, compiled: CompiledNetwork | None = None,
                  on_epoch: Callable[[], None] | None = None) -> nn.Module:
    """Train ``net`` in place on ``(images, targets)`` with DC ``utils.py:evaluate_synset``'s schedule
    (:meth:`~lightning_sdc.training.Schedule.dc_evaluation`), drawing batch order and augmentation from
    ``generator``; ``compiled``: the loss through its compiled pass. ``on_epoch`` after each of the ``epochs + 1``
    passes."""
    schedule = Schedule.dc_evaluation(epochs, lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay)
    params = list(net.parameters()) if compiled is not None else None
    loss = (lambda xs, ys: compiled.loss(net, params, xs[0], ys[0])) if compiled is not None else None
    TrainingLoop([net], [generator or torch.Generator().manual_seed(0)], images, targets, schedule=schedule,
                 augment=augment, loss=loss, params=params, on_epoch=on_epoch).run()
    return net


def train_networks(nets: Sequence[nn.Module], gens: Sequence[torch.Generator], images: Tensor, targets: Tensor, *,
                   epochs: int, lr: float, batch_size: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4,
                   augment: Augment | None = None, on_epoch: Callable[[], None] | None = None) -> None:
    """:func:`train_network` for several networks at once (network ``i`` drawing from ``gens[i]``): stacked
    parameters (``torch.func.stack_module_state``) and one ``vmap`` of the functional loss; the summed per-network
    losses give each network its own gradient and SGD is elementwise, so each makes its own updates.
    ``on_epoch`` once per network and pass."""
    template = copy.deepcopy(nets[0]).to("meta")
    params, buffers = stack_module_state(list(nets))

    def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

    batched = vmap(one)
    schedule = Schedule.dc_evaluation(epochs, lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay)
    TrainingLoop(nets, gens, images, targets, schedule=schedule, augment=augment,
                 loss=lambda xs, ys: batched(params, buffers, torch.stack(xs), torch.stack(ys)).sum(),
                 params=list(params.values()),
                 on_epoch=None if on_epoch is None else lambda: [on_epoch() for _ in nets]).run()
    with torch.no_grad():
        for i, net in enumerate(nets):
            for name, p in net.named_parameters():
                p.copy_(params[name][i])


@torch.no_grad()
def test_accuracy(net: nn.Module, images: Tensor, labels: Tensor, batch_size: int | None = None,
                  compiled: CompiledNetwork | None = None) -> float:
    """Top-1 accuracy of ``net`` (eval mode) on a labelled tensor set: correct / total in float32 (the value of
    ``torchmetrics``' micro ``MulticlassAccuracy``); ``compiled``: logits through its compiled forward. Batches of
    ``batch_size`` rows (default 2048, compiled :data:`COMPILED_TEST_BATCH`).

    Raises:
        ValueError: an empty test set (an accuracy of nothing is not 0).
    """
    if images.shape[0] == 0:
        raise ValueError("the test split is empty: there is nothing to measure accuracy on")
    net.eval()
    batch_size = batch_size or (2048 if compiled is None else COMPILED_TEST_BATCH)
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        logits = net(x) if compiled is None else compiled.logits(net, x)
        correct += (logits.argmax(dim=1) == labels[start : start + batch_size].to(x.device)).sum()
    return float(correct.float() / images.shape[0])


_ENGINES: dict[tuple, CompiledNetwork | None] = {}


def _compiled_engine(net: nn.Module, train: tuple[Tensor, Tensor], test: Tensor, batch_size: int) -> CompiledNetwork | None:
    """The process's compiled passes of ``net``'s structure, compiled (and checked) on first use on one training
    batch and one test batch; ``None`` with one log line where compilation fails (the eager passes then run)."""
    key = (type(net).__qualname__, tuple((n, tuple(p.shape)) for n, p in net.named_parameters()), test.device.type,
           net.training)
    if key not in _ENGINES:
        engine: CompiledNetwork | None = CompiledNetwork()
        probe = copy.deepcopy(net)
        try:
            params = list(probe.parameters())
            torch.autograd.grad(engine.loss(probe.train(), params, train[0][:batch_size], train[1][:batch_size]),
                                params)
            with torch.no_grad():
                engine.logits(probe.eval(), test[:COMPILED_TEST_BATCH])
            log.info("evaluation networks %s: compiled training loss and test forward (torch.compile; Inductor "
                     "cache %s)", type(net).__name__, use_persistent_cache())
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager passes compute the same
            log.warning("evaluation networks %s: torch.compile failed (%s: %s); training eagerly", type(net).__name__,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            engine = None
        _ENGINES[key] = engine
    return _ENGINES[key]


# ---------------------------------------------------------------------------------------------- the engine
@dataclass
class Protocol:
    """What one evaluation trains and tests: the set, the test split and the training settings of its jobs.

    ``build(arch, generator)`` returns a fresh network of ``arch`` drawn from ``generator`` on the set's device;
    ``augment(arch)`` the training augmentation of ``arch``'s networks (DC's depends on the network).
    """

    images: Tensor
    targets: Tensor
    test_images: Tensor
    test_labels: Tensor
    build: Callable[[str, torch.Generator], nn.Module]
    augment: Callable[[str], Augment | None]
    epochs: int
    lr: float
    batch_size: int = 256
    compiled: bool | None = None
    stacked: int = 1
    test_bf16: bool = False

    def __post_init__(self) -> None:
        check_int("stacked", self.stacked, 1)  # networks trained at once
        for name in ("compiled", "test_bf16"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "compiled" and value is None):
                raise ValueError(f"{name} must be true or false, got {value!r}")

    def engine(self, net: nn.Module, networks: int) -> CompiledNetwork | None:
        """The compiled passes for ``networks`` networks like ``net``, or ``None`` for the eager ones."""
        if self.compiled is False or has_module_state(net):
            return None
        if self.compiled is None:
            n = self.images.shape[0]
            rows = 3 * n * (self.epochs + 1) + self.test_images.shape[0]  # backward ≈ 2 forwards
            if networks * rows * forward_flops(net, self.images.shape[1:]) < COMPILE_MIN_FLOP:
                return None
        return _compiled_engine(net, (self.images, self.targets), self.test_images, self.batch_size)

    def run(self, arch: str, key: Sequence[int], indices: Sequence[int],
            on_epoch: Callable[[], None] | None = None) -> list[float]:
        """Accuracies of networks ``indices`` of ``arch`` (network ``i`` from ``seeded_generator(*key, i)``); also
        under Lightning's ``validate``/``test``, which run in inference mode."""
        aug, accs, use = self.augment(arch), [], None
        with torch.inference_mode(False), torch.enable_grad():
            for start in range(0, len(indices), self.stacked):
                gens = [seeded_generator(*key, i) for i in indices[start : start + self.stacked]]
                nets = [self.build(arch, g) for g in gens]
                if start == 0:
                    use = self.engine(nets[0], len(indices))
                kw = {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "augment": aug,
                      "on_epoch": on_epoch}
                if len(nets) > 1 and not has_module_state(nets[0]):
                    train_networks(nets, gens, self.images, self.targets, **kw)
                else:
                    for net, g in zip(nets, gens):
                        train_network(net, self.images, self.targets, generator=g, compiled=use, **kw)
                with torch.autocast(self.test_images.device.type, dtype=torch.bfloat16, enabled=self.test_bf16):
                    accs += [test_accuracy(net, self.test_images, self.test_labels, compiled=use) for net in nets]
        return accs


def evaluate_jobs(protocol: Protocol, jobs: Sequence[tuple[str, int]], key: Sequence[int], *,
                  distributed: bool = False, keep_going: bool = False,
                  on_epoch: Callable[[], None] | None = None) -> list[tuple[float, float] | str]:
    """Run ``jobs`` (``(arch, network index)``) with ``protocol``: ``(accuracy, seconds)`` per job, in job order.

    ``distributed``: this process runs its :func:`rank_share` of the jobs of the default ``torch.distributed``
    group and every rank returns every result (:func:`gather_results`; a collective: every rank calls it with
    the same jobs). A failing architecture stops the run (raised on every rank), or with ``keep_going`` gives its
    jobs the message ``"Type: message"`` instead and the next architecture runs.
    """
    rank, world = dist_rank_world() if distributed else (0, 1)
    mine = rank_share(range(len(jobs)), rank, world)
    local: dict[int, tuple[float, float] | str] = {}
    error: BaseException | None = None
    for arch in dict.fromkeys(jobs[j][0] for j in mine):
        todo = [j for j in mine if jobs[j][0] == arch]
        t0 = time.perf_counter()
        try:
            accs = protocol.run(arch, key, [jobs[j][1] for j in todo], on_epoch)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - every rank must reach the gather
            if not keep_going:
                error = exc
                break
            local.update({j: f"{type(exc).__name__}: {exc}" for j in todo})
            continue
        seconds = (time.perf_counter() - t0) / len(todo)
        local.update({j: (a, seconds) for j, a in zip(todo, accs)})
    return gather_results(local, len(jobs), error) if world > 1 or error is not None else [local[j] for j in
                                                                                           range(len(jobs))]


# ---------------------------------------------------------------------------------------------- entry points
def _unpack_synset(synset: Any) -> tuple[Tensor, Tensor, float | None, str]:
    if isinstance(synset, SyntheticSet):
        images, targets, lr = synset.detached()
        return images, targets, lr, synset.dataset
    if isinstance(synset, (tuple, list)) and len(synset) in (2, 3):
        lr = float(synset[2]) if len(synset) == 3 and synset[2] is not None else None
        return synset[0].detach(), synset[1].detach(), lr, ""
    raise TypeError(f"synset must be a SyntheticSet or (images, targets[, lr]), got {type(synset).__name__}")


def _unpack_test(test: Any) -> tuple[Tensor, Tensor, str]:
    if hasattr(test, "test_images"):
        return test.test_images, test.test_labels, getattr(test, "name", "")
    if isinstance(test, (tuple, list)) and len(test) == 2:
        return test[0], test[1], ""
    raise TypeError(f"test data must be a DatasetSpec or (images, labels), got {type(test).__name__}")


def _check_same_data(synset: Any, test: Any, set_dataset: str, test_dataset: str) -> None:
    """A set distilled from one dataset (or ZCA space) must be tested on that dataset (in that space)."""

    def canonical(name: str) -> str:
        return DATASETS.canonical(name) if name in DATASETS else name.lower()

    if set_dataset and set_dataset != "custom" and test_dataset and canonical(set_dataset) != canonical(test_dataset):
        raise ValueError(
            f"the synthetic set was distilled from dataset={set_dataset!r} but the test data are {test_dataset!r}; "
            "evaluate it on its own dataset"
        )
    set_zca, test_zca = getattr(synset, "zca_state", None) is not None, getattr(test, "zca", None) is not None
    if hasattr(test, "zca") and hasattr(synset, "zca_state") and set_zca != test_zca:
        raise ValueError(
            f"the synthetic set has zca={set_zca} but the test data have zca={test_zca}; load the dataset with "
            f"zca={set_zca}"
        )


def make_protocol(synset: Any, test: Any, *, arch_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
                  epochs: int = 300, lr: float | None = None, batch_size: int = 256, augment: str = "dsa",
                  dsa_strategy: str | None = None, device: str | torch.device | None = None,
                  num_classes: int | None = None, stacked: int = 1, compiled: bool | None = None,
                  test_bf16: bool = False) -> Protocol:
    """The checked :class:`Protocol` of ``synset`` tested on ``test`` (arguments as :func:`evaluate_synset`;
    ``arch_kwargs`` per architecture name)."""
    images, targets, set_lr, set_dataset = _unpack_synset(synset)
    test_images, test_labels, test_dataset = _unpack_test(test)
    if test_images.shape[0] == 0:
        raise ValueError("the test split is empty: there is nothing to measure accuracy on")
    if tuple(test_images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(
            f"synthetic images have shape {tuple(images.shape[1:])} but the test images {tuple(test_images.shape[1:])}"
        )
    _check_same_data(synset, test, set_dataset, test_dataset)
    if num_classes is None:
        num_classes = getattr(synset, "num_classes", None) or int(
            targets.shape[1] if targets.dim() == 2 else int(targets.max()) + 1
        )
    if test_labels.numel() and int(test_labels.max()) >= num_classes:
        raise ValueError(
            f"test labels go up to {int(test_labels.max())} but the synthetic set has num_classes={num_classes}"
        )
    problem = None if targets.is_floating_point() else label_range_problem(targets, num_classes)
    if problem:
        raise ValueError(f"synthetic {problem}")
    if targets.is_floating_point() and targets.dim() == 2 and targets.shape[1] != num_classes:
        raise ValueError(f"soft targets have {targets.shape[1]} classes but num_classes={num_classes}")
    lr = lr if lr is not None else (set_lr if set_lr is not None else 0.01)
    device = torch.device(device) if device is not None else images.device
    with torch.inference_mode(False):  # copies that training may use even when called under inference mode
        images, targets = images.to(device).clone(), targets.to(device).clone()
    c, h, w = images.shape[1:]
    options = dict(arch_kwargs or {})

    def build(arch: str, g: torch.Generator) -> nn.Module:
        return networks.build_network(arch, c, num_classes, (h, w), generator=g, **options.get(arch, {})).to(device)

    def train_augment(arch: str) -> Augment | None:
        return make_train_augment(augment, dataset=set_dataset or test_dataset, arch=arch, dsa_strategy=dsa_strategy)

    return Protocol(images, targets, test_images.to(device), test_labels.to(device), build, train_augment, epochs,
                    float(lr), batch_size, compiled, stacked, test_bf16)


def evaluate_table(synset: Any, test: Any, archs: Sequence[str] = CROSS_ARCHS, *, num_models: int = 5,
                   models: Sequence[int] | None = None, seed: int = 0, key: Sequence[int] | None = None,
                   distributed: bool = False, keep_going: bool = False, on_epoch: Callable[[], None] | None = None,
                   **protocol: Any) -> tuple[list[EvalResult], list[tuple[str, str]]]:
    """Train and test ``num_models`` networks (or ``models``) of every architecture in ``archs`` on ``synset``.

    ``protocol``: the keyword arguments of :func:`make_protocol` (``arch_kwargs`` per architecture name). Network
    ``i`` draws from ``seeded_generator(*key, i)``, ``key`` defaulting to ``(seed,)``. ``distributed`` and
    ``keep_going`` as :func:`evaluate_jobs`. Returns one :class:`EvalResult` per architecture (accuracies in
    model order, ``seconds`` summed over processes) and ``(arch, message)`` for each that failed
    (``keep_going``).
    """
    check_int("num_models", num_models, 1)
    unique_archs(archs)  # unknown or repeated names fail before any training
    p = make_protocol(synset, test, **protocol)
    jobs = eval_jobs(archs, list(models) if models is not None else num_models)
    done = evaluate_jobs(p, jobs, tuple(key) if key is not None else (seed,), distributed=distributed,
                         keep_going=keep_going, on_epoch=on_epoch)
    results, failures = [], []
    for arch in dict.fromkeys(archs):
        entries = [r for (a, _), r in zip(jobs, done) if a == arch]
        failed = next((e for e in entries if isinstance(e, str)), None)
        if failed is not None:
            failures.append((arch, failed))
            continue
        results.append(EvalResult(arch=arch, accuracies=[e[0] for e in entries], epochs=p.epochs, lr=p.lr,
                                  seconds=sum(e[1] for e in entries)))
    return results, failures


def evaluate_synset(synset: Any, test: Any, *, arch: str = "ConvNet", arch_kwargs: dict[str, Any] | None = None,
                    **protocol: Any) -> EvalResult:
    """Train ``num_models`` fresh ``arch`` networks on ``synset`` and test each on ``test``: one architecture of
    :func:`evaluate_table` (its keywords and :func:`make_protocol`'s; ``arch_kwargs`` for ``arch``).

    Args:
        synset: a :class:`~lightning_sdc.synthetic.SyntheticSet` or ``(images, targets[, lr])``; soft targets
            are probabilities.
        test: a ``DatasetSpec`` (its test split) or ``(images, labels)``.
        arch: any registered network name.
        num_models: fresh networks to train (default 5; the references use 20 for GM tables, 5 for TM).
        epochs: default 300 (DC without augmentation); 1000 for DSA / TM, as the references.
        lr: training lr; ``None`` uses the set's learned ``syn_lr`` if it has one, else 0.01 (``lr_net``).
        augment: ``"dsa"`` (default) | ``"dc"`` | ``"none"``; batch_size: 256.
        seed: network init and augmentation of model ``i`` draw from a generator seeded by ``(seed, i)``.
        device: where to train (default: the synthetic images' device).
        arch_kwargs: extra keyword arguments for ``build_network`` (e.g. ``width``, ``depth``).
        num_classes: defaults to the set's.
        models: indices of the models to train (default ``range(num_models)``).
        on_epoch: called after every training epoch of every network (progress bars).
        stacked, compiled, test_bf16: the speed options of the module docstring (``compiled=None``: compiled
            when it pays, :data:`COMPILE_MIN_FLOP`).
        distributed: shard the models over the processes of the default ``torch.distributed`` process group
            (a collective; see :func:`evaluate_jobs`): every rank returns the whole result, equal to one
            process's, ``seconds`` summed over the ranks.

    Returns:
        :class:`EvalResult` with one accuracy per model (in the order of ``models``).
    """
    (result,), _ = evaluate_table(synset, test, [arch], arch_kwargs={arch: arch_kwargs or {}}, **protocol)
    return result
