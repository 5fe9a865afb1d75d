import pytest
import torch

from lightning_sdc.coresets.random_subset import random_coreset
from lightning_sdc.evaluation import evaluate_archs, evaluate_synset, results_markdown, write_results
from lightning_sdc.synthetic import SyntheticSet

SMALL = {"width": 32, "depth": 2}


def test_real_images_beat_noise(digits):
    """10 real images per class of digits train a ConvNet far above chance; noise images do not."""
    real = random_coreset(digits, ipc=10, seed=0)
    kw = dict(arch="ConvNet", num_models=2, epochs=80, augment="none", arch_kwargs=SMALL)
    acc_real = evaluate_synset(real, digits, **kw)
    noise = SyntheticSet.blank(num_classes=10, ipc=10, image_shape=digits.image_shape)
    noise.init_noise(torch.Generator().manual_seed(0))
    acc_noise = evaluate_synset(noise, digits, **kw)
    assert acc_real.mean > 0.75, acc_real
    assert acc_noise.mean < 0.25, acc_noise
    assert acc_real.num_models == 2


def test_evaluation_is_deterministic_and_soft_labels_work(digits):
    s = random_coreset(digits, ipc=2, seed=3)
    kw = dict(num_models=2, epochs=8, augment="dsa", arch_kwargs=SMALL, seed=5)
    a = evaluate_synset(s, digits, **kw)
    b = evaluate_synset(s, digits, **kw)
    assert a.accuracies == b.accuracies
    onehot = torch.nn.functional.one_hot(s.labels, 10).float()
    c = evaluate_synset((s.images, onehot), digits, **kw)  # probability targets == hard labels
    assert c.accuracies == pytest.approx(a.accuracies, abs=1e-6)


def test_random_coreset_is_seeded_and_checks_ipc(digits):
    a, b = random_coreset(digits, 2, seed=1), random_coreset(digits, 2, seed=1)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, random_coreset(digits, 2, seed=2).images)
    with pytest.raises(ValueError, match="ipc=100000"):
        random_coreset(digits, 100000)


def test_shape_mismatch_is_an_error(digits):
    s = SyntheticSet.blank(num_classes=10, ipc=1, image_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="shape"):
        evaluate_synset(s, digits, num_models=1, epochs=1)


def test_cross_arch_table(tmp_path, digits):
    s = random_coreset(digits, 1, seed=0)
    res = evaluate_archs(s, digits, ["ConvNet", "ConvNetD1"], num_models=2, epochs=5, augment="none", arch_kwargs={})
    md = results_markdown(res, "t")
    assert "| ConvNet |" in md and "| ConvNetD1 |" in md
    paths = write_results(res, tmp_path / "table")
    assert {p.suffix for p in paths} == {".md", ".csv"}
    with pytest.raises(KeyError, match="allowed"):
        evaluate_archs(s, digits, ["NoSuchNet"])


def test_accuracy_is_counted_with_torchmetrics_and_equals_the_top1_count(digits):
    """Issue 13 point 11: ``test_accuracy`` uses torchmetrics' MulticlassAccuracy (micro) = correct / total."""
    from unittest import mock

    from lightning_sdc.evaluation import test_accuracy
    from lightning_sdc.models import build_network

    net = build_network("ConvNet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(0), width=4, depth=1)
    x, y = digits.test_images, digits.test_labels
    with torch.no_grad():
        by_hand = int((net.eval()(x).argmax(1) == y).sum()) / len(y)
    import torchmetrics.classification as tmc

    with mock.patch.object(tmc, "MulticlassAccuracy", wraps=tmc.MulticlassAccuracy) as spy:
        acc = test_accuracy(net, x, y, batch_size=100)  # several batches: the metric accumulates across them
    assert spy.call_count == 1 and spy.call_args.kwargs["average"] == "micro"
    assert acc == pytest.approx(by_hand, abs=1e-6) and 0 < acc < 1


def test_empty_test_split_and_out_of_range_labels_are_errors(digits):
    """Issue 17 point 7: an empty test split is an error (not 0.0); a label outside [0, K) names itself."""
    s = random_coreset(digits, 1, seed=0)
    empty = (digits.test_images[:0], digits.test_labels[:0])
    with pytest.raises(ValueError, match="test split is empty"):
        evaluate_synset(s, empty, num_models=1, epochs=0, augment="none", arch_kwargs={"width": 4, "depth": 1})
    bad = s.labels.clone()
    bad[3] = 12
    with pytest.raises(ValueError, match=r"synthetic label 12 is out of range; allowed: 0 … 9"):
        evaluate_synset((s.images, bad), digits, num_models=1, epochs=0, num_classes=10)
    bad[3] = -1
    with pytest.raises(ValueError, match=r"synthetic label -1 is out of range"):
        evaluate_synset((s.images, bad), digits, num_models=1, epochs=0, num_classes=10)
