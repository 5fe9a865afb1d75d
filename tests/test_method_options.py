"""Method options that guard or reproduce reference behaviour: GM refuses soft labels, TESLA's
``reference_grad_scale`` halves the image gradient exactly as the reference code does."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lightning_sdc.methods import DC, DCC, DSA, DSAC, build_method

from .test_tm_methods import buffer_dir, make, make_dm, trainer  # noqa: F401 - buffer_dir is a fixture


@pytest.mark.parametrize("cls", [DC, DSA, DCC, DSAC])
@pytest.mark.parametrize("mode", ["soft", "learned"])
def test_gradient_matching_refuses_soft_labels(cls, mode):
    with pytest.raises(ValueError, match=rf"label_mode='{mode}' is not allowed for {cls.__name__}.*allowed: hard"):
        cls("digits", 1, label_mode=mode)
    assert cls("digits", 1, label_mode="hard").synset.label_mode == "hard"
    with pytest.raises(ValueError, match="allowed: hard"):
        build_method(cls.__name__.lower(), dataset="digits", ipc=1, label_mode="soft")


class GradRecorder(pl.Callback):
    """The gradients the optimiser is about to apply (after the method's own scaling)."""

    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []
        self.lr: list[torch.Tensor] = []

    def on_before_optimizer_step(self, tr, m, optimizer) -> None:
        self.images.append(m.synset.images.grad.detach().clone())
        self.lr.append(m.synset.syn_lr.grad.detach().clone())


@pytest.mark.parametrize("label_mode", ["hard", "soft"])
def test_tesla_reference_grad_scale_halves_the_image_gradient_exactly(buffer_dir, label_mode):  # noqa: F811
    recs = {}
    for ref in (False, True):
        model, rec = make("TESLA", label_mode=label_mode, reference_grad_scale=ref, sdc_lambda=0.01), GradRecorder()
        trainer(2, [rec]).fit(model, datamodule=make_dm(buffer_dir))
        recs[ref] = rec
    exact, ref = recs[False], recs[True]
    assert len(exact.images) == len(ref.images) == 2
    assert exact.images[0].abs().sum() > 0
    # step 0 starts from the same set: the reference's image gradient is exactly half, the lr gradient the same
    assert torch.equal(ref.images[0], 0.5 * exact.images[0])
    assert torch.equal(ref.lr[0], exact.lr[0])
    # after one (different) update the runs differ: the option really changes the step taken
    assert not torch.allclose(ref.images[1], 0.5 * exact.images[1])


def test_tesla_reference_grad_scale_is_checked_and_set_by_the_paper_configs():
    from pathlib import Path

    import yaml

    with pytest.raises(ValueError, match="reference_grad_scale must be true or false"):
        build_method("tesla", dataset="digits", ipc=1, reference_grad_scale="yes")
    configs = sorted((Path(__file__).resolve().parents[1] / "lightning_sdc" / "configs" / "tesla").glob("*.yaml"))
    assert configs
    for path in configs:
        assert yaml.safe_load(path.read_text())["model"]["init_args"]["reference_grad_scale"] is True, path
