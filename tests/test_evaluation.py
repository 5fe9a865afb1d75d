import pytest
import pytorch_lightning as pl
import torch

from lightning_sdc.evaluation import evaluate_archs, evaluate_synset, results_markdown, write_results
from lightning_sdc.synthetic import SyntheticSet, random_coreset

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


def test_accuracy_equals_torchmetrics_micro_accuracy_bit_for_bit(digits):
    """``test_accuracy`` (correct / total in float32, over several batches) is exactly torchmetrics'
    MulticlassAccuracy (micro), the value the evaluation reported when it counted with torchmetrics."""
    from torchmetrics.classification import MulticlassAccuracy

    from lightning_sdc.evaluation import test_accuracy
    from lightning_sdc.models import build_network

    x, y = digits.test_images, digits.test_labels
    for seed in range(5):
        net = build_network("ConvNet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(seed), width=4, depth=1)
        with torch.no_grad():
            want = float(MulticlassAccuracy(10, average="micro")(net.eval()(x), y))
        acc = test_accuracy(net, x, y, batch_size=100)  # several batches: the counts accumulate across them
        assert acc == want and 0 < acc < 1


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


def test_periodic_evaluation_is_the_engine_on_the_loops_rows(digits):
    """``fit``'s validation is one engine call: networks ``(seed, 7919, step, i)`` (the final set: ``(seed, i)``,
    as ``evaluate``) trained on the set and tested on
    the rows the validation loop passes (``limit_val_batches=2`` batches of 64; the whole split:
    ``tests/test_evaluate_ddp.py``), equal to :func:`evaluate_table` on those rows; the sanity check (one batch)
    evaluates too, at step 0."""
    from lightning_sdc.data import RealDataModule
    from lightning_sdc.evaluation import evaluate_table
    from lightning_sdc.methods.gm.gradient import DC
    from tests.gm_helpers import SMALL

    seen = []

    class Record(pl.Callback):
        def on_validation_end(self, tr, module):  # after the module's on_validation_epoch_end
            seen.append((module.step_index, list(module.last_eval_accuracies), module.synset.detached()[:2]))

    model = DC("digits", 1, arch_kwargs=SMALL, batch_real=16, seed=3, eval_num_models=2, eval_epochs=2)
    pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, check_val_every_n_epoch=None, val_check_interval=1, max_epochs=-1,
               limit_val_batches=2, num_sanity_val_steps=1, callbacks=[Record()],
               ).fit(model, RealDataModule("digits", test_batch_size=64))
    assert [s for s, _, _ in seen] == [0, 1, 2]  # the sanity check (one batch), steps 1 and 2 (final)
    kw = model.eval_kwargs()
    kw["arch_kwargs"] = {kw.pop("arch"): kw["arch_kwargs"]}
    for (_, accs, synset), rows, key in zip(seen, (64, 128, 128), ((3, 7919, 0), (3, 7919, 1), (3,))):
        test = (digits.test_images[:rows], digits.test_labels[:rows])
        (want,), _ = evaluate_table(synset, test, ["ConvNet"], **kw, key=key)
        assert accs == want.accuracies and len(set(accs)) == 2
