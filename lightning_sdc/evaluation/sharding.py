"""Evaluation jobs dealt over the processes of a distributed run, and their results gathered (issue 15).

One evaluation is a list of independent jobs — model ``i`` of architecture ``a`` — each drawing everything from
``seeded_generator(seed, i)`` (or ``(seed, 7919, step, i)`` for the periodic evaluation), so a job gives the same
network and accuracy whichever process runs it. Every sharded evaluation does the same three things, here once:

* :func:`eval_jobs` — the job list of a table, ``(arch, model)`` in table order;
* :func:`rank_share` — the jobs of rank ``r`` out of ``world``: ``r, r + world, …`` (disjoint, covering, balanced);
* :func:`gather_objects` — every rank's results to every rank (``torch.distributed.all_gather_object`` on the
  default process group, a no-op on one process), so each rank can rebuild the whole table in job order
  (:func:`gather_results`; for a table: :func:`evaluate_share` then :func:`gather_table`).

Used by :class:`~lightning_sdc.callbacks.CrossArchEvaluation`, ``evaluate_synset(..., distributed=True)``,
``lightning-sdc evaluate --trainer.devices N`` and the periodic evaluation of
:class:`~lightning_sdc.methods.base.DistillationModule` (which also shares the trained networks:
:func:`gather_modules`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from lightning_sdc.evaluation.protocol import EvalResult

T = TypeVar("T")


def eval_jobs(archs: Sequence[str], num_models: int) -> list[tuple[str, int]]:
    """``(arch, model)`` for every architecture and model index, in table order (architecture-major)."""
    return [(a, i) for a in archs for i in range(num_models)]


def rank_share(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Items ``rank, rank + world, …`` — this rank's share of a job list (disjoint, covering, balanced)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
    return list(items[rank::world])


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default ``torch.distributed`` process group; ``(0, 1)`` when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order, on every rank (``all_gather_object`` on the default process group).

    A collective: every rank must call it, the same number of times. On one process (no process group, or a
    group of one) it returns ``[obj]`` without communicating. Objects are pickled, so floats arrive bit-exact;
    tensors should be on the CPU (NCCL would otherwise need them on the rank's own device).
    """
    import torch.distributed as dist

    rank, world = dist_rank_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def gather_results(local: Mapping[int, T], num_jobs: int, error: BaseException | None = None) -> list[T]:
    """Merge every rank's ``{job index: result}`` into one list in job order (every rank gets the whole list).

    ``error``: this rank's failure (its jobs unfinished). The ranks still meet in the gather — a rank that raised
    before it would leave the others waiting forever — and then every rank raises the same ``RuntimeError``
    naming each failed rank, so all of them stop (or go on to the next table row) together.

    Raises:
        RuntimeError: a rank failed, or a job was done by no rank or by two (a wrong share).
    """
    rank, _ = dist_rank_world()
    payload = {"results": dict(local), "error": None if error is None else f"{type(error).__name__}: {error}"}
    gathered = gather_objects(payload)
    failed = [f"rank {r}: {p['error']}" for r, p in enumerate(gathered) if p["error"] is not None]
    if failed:
        if len(gathered) == 1 and error is not None:
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


def gather_modules(
    mine: Mapping[int, nn.Module],
    num: int,
    build: Callable[[int], nn.Module],
    device: torch.device | str,
    error: BaseException | None = None,
) -> list[nn.Module]:
    """Every rank's trained networks on every rank: networks ``0 … num-1`` in index order.

    ``mine`` holds the networks this rank trained (its :func:`rank_share`); their ``state_dict`` (parameters and
    buffers, moved to the CPU) go to every rank, which loads each one it did not train into ``build(i)`` (an
    untrained network of the same architecture) on ``device``. The copies are exact, so a network tests the
    same on every rank as on the one that trained it. ``error``: this rank's training failure, raised on every
    rank after the gather (see :func:`gather_results`).
    """
    local = {} if error is not None else {
        i: {k: v.detach().cpu() for k, v in net.state_dict().items()} for i, net in mine.items()
    }
    states = gather_results(local, num, error)
    nets = []
    for i, state in enumerate(states):
        if i in mine:
            nets.append(mine[i])
            continue
        net = build(i).to(device)
        net.load_state_dict(state)
        nets.append(net)
    return nets


def evaluate_share(
    jobs: Sequence[tuple[str, int]],
    rank: int,
    world: int,
    evaluate: Callable[[str, list[int]], EvalResult],
    *,
    keep_going: bool = False,
) -> tuple[dict[int, Any], BaseException | None]:
    """Run this rank's share of a table's ``(arch, model)`` jobs: one ``evaluate(arch, model_indices)`` call
    (an :func:`~lightning_sdc.evaluation.evaluate_synset` with ``models=``) per architecture with jobs here.

    Returns ``({job: (accuracy, seconds, lr)}, error)`` for :func:`gather_table`. A failing architecture stops the
    share (``error`` set), or with ``keep_going`` marks its jobs with the message and goes on to the next one.
    """
    mine = rank_share(range(len(jobs)), rank, world)
    local: dict[int, Any] = {}
    for arch in dict.fromkeys(a for a, _ in jobs):
        todo = [j for j in mine if jobs[j][0] == arch]
        if not todo:
            continue
        try:
            res = evaluate(arch, [jobs[j][1] for j in todo])
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - every rank must reach the gather
            if not keep_going:
                return local, exc
            local.update({j: f"{type(exc).__name__}: {exc}" for j in todo})
            continue
        local.update({j: (a, res.seconds / len(todo), res.lr) for j, a in zip(todo, res.accuracies)})
    return local, None


def gather_table(
    jobs: Sequence[tuple[str, int]], local: Mapping[int, Any], error: BaseException | None, epochs: int
) -> tuple[list[EvalResult], list[tuple[str, str]]]:
    """Every rank's :func:`evaluate_share` gathered into the table, on every rank: one :class:`EvalResult` per
    architecture (accuracies in model order, ``seconds`` summed over the ranks) and ``(arch, message)`` for each
    architecture a rank failed on (``keep_going``). ``error`` is raised on every rank (:func:`gather_results`)."""
    gathered = gather_results(local, len(jobs), error)
    results, failures = [], []
    for arch in dict.fromkeys(a for a, _ in jobs):
        entries = [gathered[j] for j, (a, _) in enumerate(jobs) if a == arch]
        failed = next((e for e in entries if isinstance(e, str)), None)
        if failed is not None:
            failures.append((arch, failed))
            continue
        results.append(EvalResult(arch=arch, accuracies=[e[0] for e in entries], epochs=epochs,
                                  lr=float(entries[0][2]), seconds=sum(e[1] for e in entries)))
    return results, failures
