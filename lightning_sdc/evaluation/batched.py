"""Faster evaluation of a synthetic set: several networks trained at once, compiled passes (opt-in).

:func:`~lightning_sdc.evaluation.protocol.evaluate_synset` trains its ``num_models`` networks one after the
other with the reference schedule (DC ``utils.py:evaluate_synset``). This module runs the *same* schedule —
same initialisations, the same generator draws per network (shuffles, augmentation) in the same order, the
same SGD updates — in two faster ways, either or both:

* ``stacked=k``: ``k`` networks train together. Their parameters are stacked (``torch.func.stack_module_state``)
  and one ``torch.func.vmap`` of the functional loss serves all of them; the sum of the per-network mean losses
  has, per network, exactly that network's gradient, and SGD (momentum, weight decay) is elementwise, so one
  optimiser over the stacked tensors makes every network's own update. One wide pass instead of ``k`` narrow
  ones: a win where a pass is launch- or overhead-bound (an accelerator, tiny synthetic sets); on one CPU
  thread the arithmetic is the same and the gain is small.
* ``compiled=True``: the training loss and the test-split forward go through ``torch.compile``
  (:class:`~lightning_sdc.models.compiled.CompiledNetwork`; Inductor fuses the norm/activation/pooling chain,
  ≈ 1.5× on a CPU after a one-off compile). The test pass is about half of an evaluation at IPC 1.

Both give the accuracies of the one-at-a-time loop up to float rounding (``tests/test_speed_paths.py``);
networks with BatchNorm (module state written by the forward) fall back to the one-at-a-time eager path.

* ``test_bf16=True`` (changes numbers: opt-in): the test-split pass under bf16 autocast. Logits move by bf16
  rounding, so a few near-tied test images can flip class; training is untouched (fp32).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from lightning_sdc.models.compiled import CompiledNetwork, has_module_state
from lightning_sdc.training import Augment, Schedule, TrainingLoop


def check_speed_options(stacked: int, compiled: bool, test_bf16: bool = False) -> None:
    """``stacked`` a positive int, ``compiled`` and ``test_bf16`` bools; a ``ValueError`` naming the bad value."""
    if isinstance(stacked, bool) or not isinstance(stacked, int) or stacked < 1:
        raise ValueError(f"stacked must be an integer >= 1 (networks trained at once), got {stacked!r}")
    for name, value in (("compiled", compiled), ("test_bf16", test_bf16)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")


def train_networks(
    nets: Sequence[nn.Module],
    gens: Sequence[torch.Generator],
    images: Tensor,
    targets: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    augment: Augment | None = None,
    compiled: CompiledNetwork | None = None,
    on_epoch: Callable[[], None] | None = None,
) -> None:
    """Train ``nets`` in place together, network ``i`` drawing from ``gens[i]``, with the evaluation schedule
    (:meth:`~lightning_sdc.training.Schedule.dc_evaluation`, DC ``utils.py:evaluate_synset``: ``epochs + 1``
    passes, lr × 0.1 and a fresh optimiser after pass ``epochs // 2 + 1``) through the one
    :class:`~lightning_sdc.training.TrainingLoop`. More than one network: stacked parameters and ``vmap``; one
    network with ``compiled``: the compiled loss. ``on_epoch`` is called once per network and pass."""
    schedule = Schedule.dc_evaluation(epochs, lr, batch_size=batch_size, momentum=momentum,
                                      weight_decay=weight_decay)
    if len(nets) != len(gens) or not nets:
        raise ValueError(f"need one generator per network, got {len(nets)} networks and {len(gens)} generators")
    loss_of: Callable[[list[Tensor], list[Tensor]], Tensor] | None = None
    leaves: list[Tensor] | None = None
    params: dict[str, Tensor] = {}
    if len(nets) == 1 and compiled is not None:
        net, leaves = nets[0], list(nets[0].parameters())

        def loss_of(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
            return compiled.loss(net, leaves, xs[0], ys[0])
    elif len(nets) > 1:
        template = copy.deepcopy(nets[0]).to("meta")
        params, buffers = stack_module_state(list(nets))
        leaves = list(params.values())

        def one(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

        batched = vmap(one)

        def loss_of(xs: list[Tensor], ys: list[Tensor]) -> Tensor:
            return batched(params, buffers, torch.stack(xs), torch.stack(ys)).sum()

    def each_network() -> None:
        for _ in nets:
            on_epoch()

    TrainingLoop(nets, gens, images, targets, schedule=schedule, augment=augment, loss=loss_of, params=leaves,
                 on_epoch=each_network if on_epoch is not None else None).run()
    if len(nets) > 1:
        with torch.no_grad():
            for i, net in enumerate(nets):
                for name, p in net.named_parameters():
                    p.copy_(params[name][i])


@torch.no_grad()
def compiled_test_accuracy(net: nn.Module, compiled: CompiledNetwork, images: Tensor, labels: Tensor,
                           batch_size: int = 2048) -> float:
    """Top-1 accuracy (correct / total, as ``test_accuracy``) with the compiled eval-mode forward."""
    net.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        correct += int((compiled.logits(net, x).argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / images.shape[0]


def train_and_test(
    build: Callable[[int], tuple[nn.Module, torch.Generator]],
    indices: Sequence[int],
    images: Tensor,
    targets: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    stacked: int = 1,
    compiled: bool = False,
    test_bf16: bool = False,
    test: Callable[[nn.Module, Tensor, Tensor], float],
    on_epoch: Callable[[], None] | None = None,
    **train_kw,
) -> list[float]:
    """The accuracies of the networks ``build(i)`` (network, its generator) for ``i`` in ``indices``, trained in
    groups of ``stacked`` (and/or with ``compiled`` passes), tested with ``test`` or the compiled forward
    (under bf16 autocast with ``test_bf16``).
    Networks are built group by group, each from its own generator, so initialisations equal the loop's."""
    check_speed_options(stacked, compiled, test_bf16)
    engine = CompiledNetwork() if compiled else None
    accs: list[float] = []
    indices = list(indices)
    for start in range(0, len(indices), stacked):
        built = [build(i) for i in indices[start : start + stacked]]
        nets, gens = [b[0] for b in built], [b[1] for b in built]
        use = engine if engine is not None and engine.supports(nets[0]) else None
        groups = [nets] if len(nets) > 1 and not has_module_state(nets[0]) else [[net] for net in nets]
        gen_of = {id(net): g for net, g in zip(nets, gens)}
        with torch.enable_grad():
            for group in groups:
                train_networks(group, [gen_of[id(net)] for net in group], images, targets, compiled=use,
                               on_epoch=on_epoch, **train_kw)
        with torch.autocast(test_images.device.type, dtype=torch.bfloat16, enabled=test_bf16):
            for net in nets:
                accs.append(test(net, test_images, test_labels) if use is None
                            else compiled_test_accuracy(net, use, test_images, test_labels))
    return accs
