"""The one training loop (lightning_sdc.training): resume bit for bit, the DC evaluation schedule, the batch hook."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from lightning_sdc.models import build_network
from lightning_sdc.training import (
    PlainStep,
    Schedule,
    TrainingLoop,
    make_train_augment,
    seeded_generator,
    sharpness_aware,
)

SMALL = {"width": 8, "depth": 1}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(11)
    return torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)


def _net(arch: str, key: int):
    g = seeded_generator(5, key)
    return build_network(arch, 1, 10, (8, 8), generator=g, **SMALL), g


def _loop(arch, schedule, data, key=0, sam=False, **kw):
    net, g = _net(arch, key)
    step = sharpness_aware(0.05, 0.3, model=net) if sam else PlainStep
    loop = TrainingLoop([net], [g], *data, schedule=schedule, augment=make_train_augment("dsa", dataset="digits"),
                        step=step, **kw)
    return loop, net


def _state(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _assert_equal_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


SCHEDULES = {
    # the evaluation: momentum 0.9, decay with a fresh optimiser before pass 4 (0-based) of 5
    "dc_evaluation": (Schedule.dc_evaluation(4, 0.02, batch_size=16), "ConvNetBN", False),
    # experts with FTD's GSAM step
    "mtt_expert_sam": (Schedule.mtt_expert(3, 0.02, batch_size=16), "ConvNet", True),
    # difficulty: in-place decay at pass 2 of 4, momentum carried across it
    "classifier": (Schedule.classifier(4, 0.02, batch_size=16), "ConvNet", False),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_resume_after_any_pass_equals_uninterrupted(name, data):
    """State after pass k, saved and loaded (weights_only) into a loop built from *other* seeds, finishes with
    parameters, buffers and generator state torch.equal to an uninterrupted run — for every k, so the resume
    point falls before, at and after the lr decay."""
    schedule, arch, sam = SCHEDULES[name]
    whole, net = _loop(arch, schedule, data, sam=sam)
    whole.run()
    want, want_gen = _state(net), whole.generators[0].get_state()
    start = _state(_net(arch, 0)[0])
    assert any(not torch.equal(want[k], start[k]) for k in want)  # it trained
    for k in range(1, schedule.passes):
        first, _ = _loop(arch, schedule, data, sam=sam)
        for _ in range(k):
            first.run_epoch()
        buf = io.BytesIO()
        torch.save(first.state_dict(), buf)
        buf.seek(0)
        resumed, net2 = _loop(arch, schedule, data, key=99, sam=sam)  # other init, other generator
        resumed.load_state_dict(torch.load(buf, weights_only=True))
        assert resumed.epoch == k
        resumed.run()
        _assert_equal_states(_state(net2), want)
        assert torch.equal(resumed.generators[0].get_state(), want_gen)
        assert resumed.lr == whole.lr


def test_resume_needs_the_optimizer_state(data):
    """The classifier schedule keeps momentum across passes: dropping the optimiser state from the checkpoint
    changes the result (so the resume test above can fail)."""
    schedule, arch, _ = SCHEDULES["classifier"]
    whole, net = _loop(arch, schedule, data)
    whole.run()
    first, _ = _loop(arch, schedule, data)
    first.run_epoch()
    state = first.state_dict()
    resumed, net2 = _loop(arch, schedule, data, key=99)
    state["optimizer"] = resumed.optimizer.state_dict()  # fresh: no momentum buffers
    resumed.load_state_dict(state)
    resumed.run()
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))


def _dc_evaluate_synset_reference(net, images, labels, epochs, lr, batch_size, g, augment):
    """DC utils.py:evaluate_synset's training, written out: epochs + 1 passes, SGD(momentum 0.9, wd 5e-4),
    after pass epochs // 2 + 1 the lr × 0.1 and a new optimiser (shuffles and DSA from ``g``)."""
    net.train()
    lr_schedule = [epochs // 2 + 1]
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    n = images.shape[0]
    for ep in range(epochs + 1):
        perm = torch.randperm(n, generator=g)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(net(augment(images[idx], g)), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if ep in lr_schedule:
            lr *= 0.1
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)


@pytest.mark.parametrize("epochs", [4, 6])
def test_dc_evaluation_schedule_equals_the_reference_loop(data, epochs):
    """Schedule.dc_evaluation through the loop (and the protocol's train_network) = the DC loop, torch.equal."""
    from lightning_sdc.evaluation.protocol import train_network

    aug = make_train_augment("dsa", dataset="digits")
    ref, g = _net("ConvNet", 1)
    _dc_evaluate_synset_reference(ref, *data, epochs, 0.02, 16, g, aug)
    net, g = _net("ConvNet", 1)
    TrainingLoop([net], [g], *data, schedule=Schedule.dc_evaluation(epochs, 0.02, batch_size=16), augment=aug).run()
    _assert_equal_states(_state(net), _state(ref))
    net, g = _net("ConvNet", 1)
    train_network(net, *data, epochs=epochs, lr=0.02, batch_size=16, augment=aug, generator=g)
    _assert_equal_states(_state(net), _state(ref))
    # an in-place decay (momentum kept) is a different schedule: the comparison can fail
    net, g = _net("ConvNet", 1)
    inplace = Schedule(epochs + 1, 0.02, 16, 0.9, 5e-4, decay_from=epochs // 2 + 2, always_shuffle=False)
    TrainingLoop([net], [g], *data, schedule=inplace, augment=aug).run()
    assert not all(torch.equal(a, b) for a, b in zip(net.parameters(), ref.parameters()))


def test_evaluation_passes_a_set_of_one_batch_whole_without_draws(data):
    """At most batch_size rows: one unshuffled batch, no permutation drawn (no augmentation: no draw at all)."""
    net, g = _net("ConvNet", 2)
    before = g.get_state()
    TrainingLoop([net], [g], *data, schedule=Schedule.dc_evaluation(2, 0.01, batch_size=64)).run()
    assert torch.equal(g.get_state(), before)


@pytest.mark.parametrize("sam", [False, True])
def test_on_batch_sees_the_logits_before_the_step(data, sam):
    """The hook's logits are the current network's forward on the batch (before its step), once per batch —
    also with the two-forward SAM step — and the rows of a pass cover the set once."""
    images, labels = data
    net, g = _net("ConvNet", 3)
    calls: list[torch.Tensor] = []

    def hook(rows, logits, targets):
        with torch.no_grad():
            assert torch.equal(logits, net(images[rows]))
        assert torch.equal(targets, labels[rows]) and not logits.requires_grad
        calls.append(rows)

    schedule = Schedule.classifier(2, 0.05, batch_size=16)
    step = sharpness_aware(0.05, 0.3, model=net) if sam else PlainStep
    TrainingLoop([net], [g], images, labels, schedule=schedule, step=step, on_batch=hook).run()
    assert len(calls) == 2 * 3
    for p in range(2):
        assert torch.equal(torch.cat(calls[3 * p : 3 * p + 3]).sort().values, torch.arange(40))
    assert not torch.equal(torch.cat(calls[:3]), torch.arange(40))  # shuffled


def test_bad_settings_are_refused_before_training(data):
    net, g = _net("ConvNet", 0)
    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got nan"):
        Schedule(3, float("nan"))
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1 \(> 0\), got 0"):
        Schedule(3, 0.1, batch_size=0)
    with pytest.raises(ValueError, match=r"epochs must be an integer >= 1 \(> 0\), got 0"):
        Schedule.mtt_expert(0, 0.01)
    with pytest.raises(ValueError, match="rho must be a finite number >= 0, got -1"):
        sharpness_aware(-1, 0.0)
    with pytest.raises(ValueError, match="one generator per network, got 1 networks and 2 generators"):
        TrainingLoop([net], [g, g], *data, schedule=Schedule(1, 0.1))
    with pytest.raises(ValueError, match="on_batch needs the default one-network loss"):
        TrainingLoop([net], [g], *data, schedule=Schedule(1, 0.1), loss=lambda xs, ys: xs[0].sum(),
                     params=list(net.parameters()), on_batch=lambda *a: None)
    loop = TrainingLoop([net], [g], *data, schedule=Schedule(1, 0.1))
    loop.run()
    with pytest.raises(RuntimeError, match="already run its 1 passes"):
        loop.run_epoch()
    with pytest.raises(ValueError, match=r"training state is at pass 5, allowed: 0 … 1"):
        loop.load_state_dict({**loop.state_dict(), "epoch": 5})


def test_old_import_paths_are_the_new_objects():
    """The names that moved here stay importable from their old homes, as the same objects (no copies)."""
    import lightning_sdc.evaluation as evaluation
    import lightning_sdc.evaluation.protocol as protocol
    import lightning_sdc.experts as experts
    import lightning_sdc.training as training

    assert protocol.seeded_generator is evaluation.seeded_generator is training.seeded_generator
    assert protocol.make_train_augment is evaluation.make_train_augment is training.make_train_augment
    assert protocol.EVAL_AUGMENTS is training.TRAIN_AUGMENTS
    assert experts.SharpnessAwareStep is training.SharpnessAwareStep
