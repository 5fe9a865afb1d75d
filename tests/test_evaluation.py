import pytest
import torch

from lightning_sdc.coresets.random_subset import random_coreset
from lightning_sdc.evaluation import evaluate_archs, evaluate_synset, results_markdown, write_results
from lightning_sdc.synthetic import SyntheticSet

SMALL = {"width": 32, "depth": 2}


def test_real_images_beat_noise(digits):
    """10 real images per class of digits train a ConvNet far above chance; noise images do not."""
    real = random_coreset(digits, ipc=10, seed=0)
    kw = dict(arch="ConvNet", num_models=2, epochs=80, augment="none", network_kwargs=SMALL)
    acc_real = evaluate_synset(real, digits, **kw)
    noise = SyntheticSet.blank(num_classes=10, ipc=10, image_shape=digits.image_shape)
    noise.init_noise(torch.Generator().manual_seed(0))
    acc_noise = evaluate_synset(noise, digits, **kw)
    assert acc_real.mean > 0.75, acc_real
    assert acc_noise.mean < 0.25, acc_noise
    assert acc_real.num_models == 2


def test_evaluation_is_deterministic_and_soft_labels_work(digits):
    s = random_coreset(digits, ipc=2, seed=3)
    kw = dict(num_models=2, epochs=8, augment="dsa", network_kwargs=SMALL, seed=5)
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
    res = evaluate_archs(s, digits, ["ConvNet", "ConvNetD1"], num_models=2, epochs=5, augment="none", network_kwargs={})
    md = results_markdown(res, "t")
    assert "| ConvNet |" in md and "| ConvNetD1 |" in md
    paths = write_results(res, tmp_path / "table")
    assert {p.suffix for p in paths} == {".md", ".csv"}
    with pytest.raises(KeyError, match="allowed"):
        evaluate_archs(s, digits, ["NoSuchNet"])
