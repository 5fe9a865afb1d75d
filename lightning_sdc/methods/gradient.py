"""Gradient matching with SDC: DC, DSA, DCC and DSAC (paper eq. 1, 3, 11 and Algorithm 1).

Reference behaviour (VICO-UoE/DatasetCondensation ``main.py``/``utils.py``; Saehyung-Lee/DCC ``main.py``):

* A DC *iteration* draws a freshly initialised network, then makes ``outer_loop`` image updates; between two
  updates the network is trained ``inner_loop`` epochs on the (detached) synthetic set with plain SGD
  (``lr_net`` 0.01, no momentum; DSA: non-Siamese augmentation per batch); no network update follows the last
  image update. ``outer_loop, inner_loop`` come from ``get_loops(ipc)`` (DCC: ipc 1 → (10, 5)).
* Each image update sums, over classes ``c``, ``D(∇θ CE(net(S_c)), ∇θ CE(net(R_c)))`` with ``R_c`` =
  ``batch_real`` random real images of class ``c``; the real gradient is detached, the synthetic one built with
  ``create_graph=True``; DSA augments ``R_c`` and ``S_c`` with one shared (Siamese) parameter draw.
* DCC/DSAC (eq. 3): after the bi-level warm-up (iteration ≥ ``outer_warmup`` or outer step ≥
  ``inner_warmup``) one distance between the class-averaged real gradient and the gradient of the mean loss
  over the whole (augmented, class-ordered) synthetic set.
* **SDC** (eq. 11): ``λ·‖∇θ L_syn‖`` is added to every class's distance (to the contrastive distance in DCC
  mode), computed from the synthetic gradient the matching already holds, so it costs no extra pass. When
  ``sdc_lambda == 0`` the term is not added to the graph at all, so the baseline is reproduced bit for bit;
  its value is still logged (``sdc/term``).

Here one ``training_step`` is one image update (``global_step`` counts updates; one reference iteration is
``outer_loop`` steps, so the references' 1000 iterations are ``max_steps = 1000·outer_loop``). The network of
the current iteration lives outside the module's parameters (it is not learned by the optimiser) and is
written into checkpoints, so a run resumed mid-iteration continues exactly. Randomness comes from generators
keyed on ``(seed, iteration, outer step, class)`` rather than the references' wall-clock reseeding; every DDP
rank therefore builds the same network and draws the same batches for a class. Under DDP each rank matches
its own classes (``local_classes``) and scales its loss by the world size, so the averaged image gradient
equals the single-process sum over classes.

Deliberate choices: ``init="real"`` for every method (DC's repository defaults to noise, its README and the
DSA/DCC runs use real images; ``init="noise"`` is available); the evaluation protocol follows ``main.py``:
DC trains evaluation networks 300 epochs without augmentation, or 1000 epochs with DC's augmentation where
``get_daparam`` gives one (MNIST); DSA/DSAC train 1000 epochs with DSA.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_sdc.augment import apply_dsa, dc_augment_strategy, default_dsa_strategy, diff_augment, sample_dsa
from lightning_sdc.matching.distances import METRICS, gradient_distance
from lightning_sdc.matching.sdc import sdc_term
from lightning_sdc.methods.base import DistillationModule, _check_positive
from lightning_sdc.methods.registry import register_method

#: DC ``utils.py:get_loops``: ipc -> (outer_loop, inner_loop)
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
#: DCC ``utils.py:get_loops`` (same as DC except ipc 1)
DCC_LOOPS = {**DC_LOOPS, 1: (10, 5)}


def _has_batchnorm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


class GradientMatching(DistillationModule):
    """Shared machinery of DC, DSA, DCC and DSAC (see the module docstring).

    Args:
        dataset, ipc: as :class:`DistillationModule`.
        outer_loop: image updates per network (default ``get_loops(ipc)``).
        inner_loop: network epochs on the synthetic set between two updates (default ``get_loops(ipc)``).
        batch_real: real images per class per update (256).
        batch_train: batch size of the network updates on the synthetic set (256).
        lr_net: lr of those updates (0.01).
        dis_metric: ``"ours"`` | ``"mse"`` | ``"cos"``.
        dsa: Siamese augmentation of the matched batches (DSA/DSAC).
        contrastive: DCC's class-averaged matching (eq. 3) after the warm-up.
        outer_warmup, inner_warmup: DCC's bi-level warm-up (250 iterations / 10 outer steps).
        **kwargs: everything :class:`DistillationModule` takes (``sdc_lambda``, ``lr_img``, ``eval_*`` …).
    """

    use_dsa = False
    use_contrastive = False
    loops_table = DC_LOOPS

    def __init__(
        self,
        dataset: str,
        ipc: int,
        *,
        outer_loop: int | None = None,
        inner_loop: int | None = None,
        batch_real: int = 256,
        batch_train: int = 256,
        lr_net: float = 0.01,
        dis_metric: str = "ours",
        outer_warmup: int = 250,
        inner_warmup: int = 10,
        **kwargs: Any,
    ) -> None:
        _check_positive("ipc", ipc, integer=True)
        default = self.loops_table.get(ipc)
        if default is None and (outer_loop is None or inner_loop is None):
            raise ValueError(
                f"ipc={ipc} has no reference (outer_loop, inner_loop); allowed ipc without explicit loops: "
                f"{', '.join(map(str, sorted(self.loops_table)))} — or pass outer_loop and inner_loop"
            )
        outer_loop = default[0] if outer_loop is None else outer_loop
        inner_loop = default[1] if inner_loop is None else inner_loop
        _check_positive("outer_loop", outer_loop, integer=True)
        _check_positive("inner_loop", inner_loop, integer=True, allow_zero=True)
        _check_positive("batch_real", batch_real, integer=True)
        _check_positive("batch_train", batch_train, integer=True)
        _check_positive("lr_net", lr_net)
        _check_positive("outer_warmup", outer_warmup, integer=True, allow_zero=True)
        _check_positive("inner_warmup", inner_warmup, integer=True, allow_zero=True)
        if dis_metric not in METRICS:
            raise ValueError(f"dis_metric={dis_metric!r} is not allowed; allowed: {', '.join(METRICS)}")
        kwargs.setdefault("lr_img", 0.1)
        kwargs.setdefault("momentum_img", 0.5)
        kwargs.setdefault("init", "real")
        super().__init__(dataset, ipc, **kwargs)
        self.save_hyperparameters()
        self.outer_loop, self.inner_loop = int(outer_loop), int(inner_loop)
        self.strategy = (self.hparams.dsa_strategy or default_dsa_strategy(self.info.name)) if self.use_dsa else None
        self._net: nn.Module | None = None  # the current iteration's network (not a registered submodule)
        self._net_iteration = -1
        self._pending_net: dict[str, Any] | None = None

    # ------------------------------------------------------------------ the network of an iteration
    def _set_net(self, net: nn.Module | None, iteration: int) -> None:
        object.__setattr__(self, "_net", net)  # bypass nn.Module registration: never an optimiser parameter
        self._net_iteration = iteration

    def iteration_network(self, iteration: int) -> nn.Module:
        """The network of ``iteration``: built from ``generator(iteration)`` (or restored from a checkpoint)."""
        if self._net is not None and self._net_iteration == iteration:
            return self._net
        from lightning_sdc.models import build_network

        c, h, w = self.synset.image_shape
        net = build_network(self.arch, c, self.num_classes, (h, w), generator=self.generator(iteration),
                            **self.arch_kwargs).to(self.device)
        if self._pending_net is not None and self._pending_net["iteration"] == iteration:
            net.load_state_dict(self._pending_net["state"])
        self._pending_net = None
        net.train()
        self._set_net(net, iteration)
        return net

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._net is not None:
            state = {k: v.detach().cpu().clone() for k, v in self._net.state_dict().items()}
            checkpoint["gm_network"] = {"iteration": self._net_iteration, "state": state}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._pending_net = checkpoint.get("gm_network")
        self._set_net(None, -1)

    # ------------------------------------------------------------------ one update
    def contrastive_now(self, iteration: int, outer: int) -> bool:
        """DCC's warm-up rule: contrastive iff iteration ≥ ``outer_warmup`` or outer step ≥ ``inner_warmup``."""
        return self.use_contrastive and (iteration >= self.hparams.outer_warmup or outer >= self.hparams.inner_warmup)

    def _matched_batches(self, c: int, iteration: int, outer: int) -> tuple[Tensor, Tensor]:
        """Real batch and synthetic block of class ``c``, Siamese-augmented under DSA."""
        g = self.generator(iteration, outer, c)
        real = self.real.sample(c, self.hparams.batch_real, g)
        syn = self.synset.images[self.synset.class_slice(c)]
        if self.strategy is not None:
            h, w = syn.shape[-2:]
            s = sample_dsa(self.strategy, 1, generator=g, siamese=True, device=syn.device, image_size=(h, w))
            real, syn = apply_dsa(real, s), apply_dsa(syn, s)
        return real, syn

    def _grads(self, net: nn.Module, params: list[Tensor], x: Tensor, c: int, create_graph: bool) -> tuple[Tensor, ...]:
        y = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
        loss = F.cross_entropy(net(x), y)
        return torch.autograd.grad(loss, params, create_graph=create_graph)

    def matching_loss(self, net: nn.Module, iteration: int, outer: int) -> tuple[Tensor, dict[str, float]]:
        """Σ over local classes of ``D(g_syn, g_real) + λ·sdc_term(g_syn)`` (or the DCC form), and logs."""
        params = list(net.parameters())
        lam, power = self.sdc_lambda, self.sdc_power
        classes = self.local_classes()
        if self.contrastive_now(iteration, outer):
            if self.trainer.world_size > 1:
                raise ValueError("contrastive matching (DCC/DSAC) needs every class on one rank; run it without DDP")
            real_mean = None
            syn_blocks = []
            for c in classes:
                real, syn = self._matched_batches(c, iteration, outer)
                gr = self._grads(net, params, real, c, create_graph=False)
                real_mean = [g / len(classes) for g in gr] if real_mean is None else [
                    a + g / len(classes) for a, g in zip(real_mean, gr)]
                syn_blocks.append(syn)
            syn_all = torch.cat(syn_blocks)
            y = torch.arange(self.num_classes, device=syn_all.device).repeat_interleave(self.synset.ipc)
            gs = torch.autograd.grad(F.cross_entropy(net(syn_all), y), params, create_graph=True)
            dist = gradient_distance(gs, [g.detach() for g in real_mean])
            norms = [sdc_term(gs, power)] if lam > 0 else [sdc_term([g.detach() for g in gs], power)]
            loss = dist + lam * norms[0] if lam > 0 else dist
            dists = [dist]
        else:
            loss, dists, norms = None, [], []
            for c in classes:
                real, syn = self._matched_batches(c, iteration, outer)
                gr = [g.detach() for g in self._grads(net, params, real, c, create_graph=False)]
                gs = self._grads(net, params, syn, c, create_graph=True)
                d = gradient_distance(gs, gr, self.hparams.dis_metric)
                if lam > 0:
                    term = sdc_term(gs, power)
                    d_total = d + lam * term
                else:
                    term = sdc_term([g.detach() for g in gs], power)
                    d_total = d
                loss = d_total if loss is None else loss + d_total
                dists.append(d.detach())
                norms.append(term.detach())
        logs = {
            "match/loss": float(torch.stack([d.detach() for d in dists]).sum()),
            "sdc/term": float(torch.stack([n.detach() for n in norms]).sum()),
            "sdc/grad_norm_mean": float(torch.stack([n.detach() for n in norms]).mean()),
        }
        return loss * self.trainer.world_size, logs

    def train_network_on_synset(self, net: nn.Module, iteration: int, outer: int) -> None:
        """``inner_loop`` epochs of plain SGD on the detached synthetic set (DC ``utils.py:epoch('train')``)."""
        images = self.synset.images.detach()
        labels = self.synset.hard_labels.detach()
        g = self.generator(iteration, outer, -2)
        opt = torch.optim.SGD(net.parameters(), lr=self.hparams.lr_net)
        n, bs = images.shape[0], self.hparams.batch_train
        net.train()
        for _ in range(self.inner_loop):
            order = torch.randperm(n, generator=g).to(images.device)
            for start in range(0, n, bs):
                idx = order[start : start + bs]
                x = images[idx]
                if self.strategy is not None:
                    x = diff_augment(x, self.strategy, generator=g, siamese=False)
                loss = F.cross_entropy(net(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def _freeze_batchnorm(self, net: nn.Module, iteration: int, outer: int) -> None:
        """DC's BN handling: one train-mode forward of 16 real images per class, then BN layers in eval mode."""
        net.train()
        g = self.generator(iteration, outer, -3)
        with torch.no_grad():
            net(torch.cat([self.real.sample(c, 16, g) for c in range(self.num_classes)]))
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        step = self.step_index
        iteration, outer = divmod(step, self.outer_loop)
        net = self.iteration_network(iteration)
        if _has_batchnorm(net):
            self._freeze_batchnorm(net, iteration, outer)
        loss, logs = self.matching_loss(net, iteration, outer)
        self.apply_update(loss)
        logs["match/iteration"] = iteration
        self.log_step(**logs)
        if outer < self.outer_loop - 1 and self.inner_loop > 0:
            with torch.enable_grad():
                self.train_network_on_synset(net, iteration, outer)


@register_method()
class DC(GradientMatching):
    """Dataset Condensation (Zhao et al., ICLR 2021) + SDC. Evaluation: 300 epochs, DC augmentation on MNIST
    (then 1000 epochs, as ``main.py``)."""

    def __init__(self, dataset: str, ipc: int, **kwargs: Any) -> None:
        if "eval_augment" not in kwargs:
            kwargs["eval_augment"] = "dc"
        if "eval_epochs" not in kwargs:
            arch = kwargs.get("eval_arch") or kwargs.get("arch", "ConvNet")
            augmented = kwargs["eval_augment"] == "dc" and dc_augment_strategy(dataset, arch) != "none"
            kwargs["eval_epochs"] = 1000 if augmented or kwargs["eval_augment"] == "dsa" else 300
        super().__init__(dataset, ipc, **kwargs)


@register_method()
class DSA(GradientMatching):
    """Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021) + SDC; evaluation 1000 epochs with DSA."""

    use_dsa = True

    def __init__(self, dataset: str, ipc: int, **kwargs: Any) -> None:
        kwargs.setdefault("eval_augment", "dsa")
        kwargs.setdefault("eval_epochs", 1000)
        super().__init__(dataset, ipc, **kwargs)


@register_method()
class DCC(DC):
    """DC with DCC's contrastive signal (Lee et al., ICML 2022, eq. 3) + SDC; DCC's loops (ipc 1 → 10/5)."""

    use_contrastive = True
    loops_table = DCC_LOOPS


@register_method()
class DSAC(DSA):
    """DSA with DCC's contrastive signal (the paper's DSAC) + SDC; DCC's loops and warm-up."""

    use_contrastive = True
    loops_table = DCC_LOOPS
