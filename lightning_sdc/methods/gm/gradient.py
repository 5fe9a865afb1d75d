"""Gradient matching with SDC: DC, DSA, DCC and DSAC (paper eq. 1, 3, 11 and Algorithm 1).

Reference behaviour (VICO-UoE/DatasetCondensation ``main.py``/``utils.py``; Saehyung-Lee/DCC ``main.py``):

* A DC *iteration* draws a freshly initialised network, then makes ``outer_loop`` image updates; between two
  updates the network is trained ``inner_loop`` epochs on the (detached) synthetic set with plain SGD
  (``lr_net`` 0.01, no momentum; DSA: non-Siamese augmentation per batch); no network update follows the last
  image update. ``outer_loop, inner_loop`` come from ``get_loops(ipc)`` (DCC: ipc 1 → (10, 5)).
* Each image update sums, over classes ``c``, ``D(∇θ CE(net(S_c)), ∇θ CE(net(R_c)))`` with ``R_c`` =
  ``batch_real`` random real images of class ``c``; the real gradient is detached, the synthetic one built with
  ``create_graph=True``; DSA augments ``R_c`` and ``S_c`` with one shared (Siamese) parameter draw per
  (update, class).
* DCC/DSAC (eq. 3): after the bi-level warm-up (iteration ≥ ``outer_warmup`` or outer step ≥
  ``inner_warmup``) **one** distance between the class-averaged real gradient and the gradient of the mean
  loss over the whole (Siamese-augmented, class-ordered) synthetic set.
* **SDC** (eq. 11): ``λ·‖∇θ L_syn‖`` (``sdc_power=2``: its square, as Algorithm 1) is added to every class's
  distance — to the contrastive distance in DCC mode — computed from the synthetic gradient the matching
  already holds, so it costs no extra pass. When ``sdc_lambda == 0`` the term is not put in the graph at all,
  so the baseline is reproduced bit for bit; the norm is still logged (``sdc/grad_norm``).

State: one ``training_step`` is one image update (the references' 1000 iterations are ``max_steps =
1000·outer_loop``). The network of the current iteration is a plain attribute (neither the optimiser nor DDP
sees it), written into checkpoints (``gm_network``) so that a run resumed mid-iteration continues exactly.
Randomness: generators keyed on ``(seed, iteration)`` (network init), ``(seed, iteration, outer, c)`` (real batch of
class ``c``; ``…, 1``: its Siamese DSA draw), ``(seed, iteration, outer, -2)`` (network update) and ``(seed,
iteration, outer, -3)`` (BatchNorm statistics batch), so every DDP rank builds the same network.
DDP: class-wise matching shards the classes and scales the local loss by the world size (DDP's averaged image
gradient = the single-process sum over classes); contrastive matching all-reduces the real gradients.

Deliberate choices: ``init="real"`` for every method (Algorithm 1 line 1, the DSA README and DCC; DC's
``main.py`` defaults to noise: ``init="noise"``); a class with fewer than ``batch_real`` real images contributes
all of them (as DC's ``get_images`` does silently).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_sdc.augment import DSASample, apply_dsa, dc_augment_strategy, default_dsa_strategy, sample_dsa
from lightning_sdc.checks import check_int, check_number
from lightning_sdc.matching.distances import DisMetric, gradient_distance
from lightning_sdc.matching.sdc import sdc_term
from lightning_sdc.methods.base import DistillationModule
from lightning_sdc.methods.gm import (
    DC_LOOPS,
    DCC_LOOPS,
    EngineName,
    GradientEngine,
    freeze_batchnorm,
    get_loops,
    has_batchnorm,
    select_engine,
    train_on_synset,
)
from lightning_sdc.methods.registry import register_method
from lightning_sdc.models import build_network
from lightning_sdc.training import TrainAugment

#: images per class in DC's BatchNorm-statistics forward
BN_REAL_PER_CLASS = 16


class GradientMatching(DistillationModule):
    """Shared machinery of DC, DSA, DCC and DSAC (see the module docstring).

    Subclasses set the flags ``use_dsa`` / ``use_contrastive``, the loops table and the evaluation defaults.

    Args:
        dataset, ipc: as :class:`DistillationModule`.
        outer_loop: image updates per network (default ``get_loops(ipc)``).
        inner_loop: network epochs on the synthetic set between two updates (default ``get_loops(ipc)``).
        batch_real: real images per class per update (256).
        batch_train: batch size of the network updates on the synthetic set (256).
        lr_net: lr of those updates (0.01).
        dis_metric: ``"ours"`` | ``"mse"`` | ``"cos"`` (:mod:`lightning_sdc.matching.distances`).
        outer_warmup, inner_warmup: DCC's bi-level warm-up (250 iterations / 10 outer steps); contrastive
            methods only.
        engine: how the gradients are computed (:mod:`lightning_sdc.methods.gm.engine`; same numbers to float
            rounding): ``auto`` (``compiled`` when the run pays for compilation, else ``eager``), ``eager``,
            ``compiled``, ``vmap``; resolved once in ``setup``, with one log line.
        label_mode: ``hard`` only: gradient matching trains on class labels.
        **kwargs: everything :class:`DistillationModule` takes (``sdc_lambda``, ``sdc_power``, ``lr_img``,
            ``init``, ``arch``, ``arch_kwargs``, ``eval_*`` …).
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
        dis_metric: DisMetric = "ours",
        outer_warmup: int = 250,
        inner_warmup: int = 10,
        engine: EngineName = "auto",
        label_mode: Literal["hard"] = "hard",
        **kwargs: Any,
    ) -> None:
        check_int("ipc", ipc, 1)
        outer_loop, inner_loop = get_loops(ipc, self.loops_table, outer_loop=outer_loop, inner_loop=inner_loop)
        for name, value, low in (("outer_loop", outer_loop, 1), ("inner_loop", inner_loop, 0), ("batch_real", batch_real, 1),
                                 ("batch_train", batch_train, 1), ("outer_warmup", outer_warmup, 0),
                                 ("inner_warmup", inner_warmup, 0)):
            check_int(name, value, low)
        check_number("lr_net", lr_net)
        super().__init__(dataset, ipc, label_mode=label_mode, **kwargs)
        self.outer_loop, self.inner_loop = int(outer_loop), int(inner_loop)
        self.dis_metric = dis_metric
        self.engine = GradientEngine()  # the eager engine until setup() resolves hparams.engine for the run
        self.strategy = (self.hparams.dsa_strategy or default_dsa_strategy(self.info.name)) if self.use_dsa else None
        self._net: nn.Module | None = None  # the current iteration's network (never a registered submodule)
        self._net_iteration = -1
        self._pending_net: dict[str, Any] | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.engine = self.run_engine()

    def run_engine(self) -> GradientEngine:
        """The gradient engine of this run: ``hparams.engine``, ``auto`` resolved by the run's length
        (:func:`~lightning_sdc.methods.gm.engine.select_engine`, which logs the choice)."""
        c, h, w = self.synset.image_shape
        net = build_network(self.arch, c, self.num_classes, (h, w), generator=self.generator(-2), **self.arch_kwargs)
        real = sum(min(self.hparams.batch_real, self.real.count(k)) for k in range(self.num_classes))
        inner = self.inner_loop * self.synset.images.shape[0] * (self.outer_loop - 1) / self.outer_loop
        trainer = self._trainer
        return select_engine(self.hparams.engine, net, image_shape=(c, h, w), step_images=real + inner,
                             max_steps=None if trainer is None else trainer.max_steps,
                             device=self.device if trainer is None else trainer.strategy.root_device)

    # ------------------------------------------------------------------ the network of an iteration
    def _set_net(self, net: nn.Module | None, iteration: int) -> None:
        object.__setattr__(self, "_net", net)  # bypass nn.Module registration: not learned, not in DDP
        self._net_iteration = iteration

    def iteration_network(self, iteration: int) -> nn.Module:
        """The network of ``iteration``: built from ``generator(iteration)`` (or restored from a checkpoint)."""
        if self._net is not None and self._net_iteration == iteration:
            return self._net
        c, h, w = self.synset.image_shape
        net = build_network(self.arch, c, self.num_classes, (h, w), generator=self.generator(iteration),
                            **self.arch_kwargs).to(self.device)
        pending, self._pending_net = self._pending_net, None
        if pending is not None and pending["iteration"] == iteration:
            net.load_state_dict(pending["state"])
        net.train()
        self._set_net(net, iteration)
        return net

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._net is not None:
            state = {k: v.detach().cpu().clone() for k, v in self._net.state_dict().items()}
            checkpoint["gm_network"] = {"iteration": self._net_iteration, "state": state}
        elif self._pending_net is not None:  # restored but not used yet (e.g. saved again before the next step)
            checkpoint["gm_network"] = self._pending_net

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._pending_net = checkpoint.get("gm_network")
        self._set_net(None, -1)

    # ------------------------------------------------------------------ batches
    def real_batch(self, c: int, iteration: int, outer: int) -> Tensor:
        """``min(batch_real, count(c))`` distinct real images of class ``c`` (DC ``get_images(c, batch_real)``)."""
        n = min(self.hparams.batch_real, self.real.count(c))
        return self.real.sample(c, n, self.generator(iteration, outer, c))

    def syn_block(self, c: int) -> Tensor:
        """The synthetic images of class ``c`` (a view of the learned parameter)."""
        return self.synset.images[self.synset.class_slice(c)]

    def dsa_sample(self, c: int, iteration: int, outer: int) -> DSASample | None:
        """The Siamese DSA draw of class ``c`` at this update (``None`` without DSA)."""
        if self.strategy is None:
            return None
        h, w = self.synset.image_shape[1:]
        return sample_dsa(self.strategy, 1, generator=self.generator(iteration, outer, c, 1), siamese=True,
                          device=self.device, image_size=(h, w))

    def matched_batches(self, c: int, iteration: int, outer: int) -> tuple[Tensor, Tensor]:
        """Real batch and synthetic block of class ``c``, both augmented with one Siamese draw under DSA."""
        real, syn = self.real_batch(c, iteration, outer), self.syn_block(c)
        sample = self.dsa_sample(c, iteration, outer)
        if sample is not None:
            real, syn = apply_dsa(real, sample), apply_dsa(syn, sample)
        return real, syn

    def augmented_real(self, c: int, iteration: int, outer: int) -> Tensor:
        """The real half of :meth:`matched_batches` (same draws)."""
        real, sample = self.real_batch(c, iteration, outer), self.dsa_sample(c, iteration, outer)
        return real if sample is None else apply_dsa(real, sample)

    def augmented_syn(self, c: int, iteration: int, outer: int) -> Tensor:
        """The synthetic half of :meth:`matched_batches` (same draws; no real batch is sampled)."""
        syn, sample = self.syn_block(c), self.dsa_sample(c, iteration, outer)
        return syn if sample is None else apply_dsa(syn, sample)

    def _world_size(self) -> int:
        """DDP world size (1 without a trainer)."""
        return self.trainer.world_size if self._trainer is not None else 1

    # ------------------------------------------------------------------ gradients
    def classwise_terms(self, net: nn.Module, classes: list[int], iteration: int, outer: int,
                        with_sdc: bool) -> tuple[Tensor, Tensor]:
        """Per local class: ``D(g_syn, g_real)`` and ``sdc_term(g_syn)`` (graph only when ``with_sdc``), ``[k]`` each."""
        reals, syns = zip(*(self.matched_batches(c, iteration, outer) for c in classes))
        g_real = self.engine.real_gradients(net, reals, classes)
        g_syn = self.engine.syn_gradients(net, syns, classes)
        dists = [gradient_distance(gs, gr, self.dis_metric) for gs, gr in zip(g_syn, g_real)]
        norms = [sdc_term(gs if with_sdc else [g.detach() for g in gs], self.sdc_power) for gs in g_syn]
        return torch.stack(dists), torch.stack(norms)

    def real_gradient_sum(self, net: nn.Module, classes: list[int], iteration: int, outer: int) -> list[Tensor]:
        """``Σ_c ∇θ CE(net(R_c), c)`` over ``classes`` (each ``R_c`` Siamese-augmented under DSA), detached."""
        reals = [self.augmented_real(c, iteration, outer) for c in classes]
        first, *rest = self.engine.real_gradients(net, reals, classes)
        for g in rest:
            first = [a + b for a, b in zip(first, g)]
        return first

    def contrastive_terms(self, net: nn.Module, iteration: int, outer: int, with_sdc: bool) -> tuple[Tensor, Tensor]:
        """DCC (eq. 3): ``D(∇θ CE_mean(net(S), y), (1/C)·Σ_c g_real,c)`` and the SDC term of that synthetic gradient.

        The real gradients of this rank's classes are summed and all-reduced across ranks; the synthetic side
        (the whole set, each class block with its class's Siamese draw, class order) is built on every rank.
        """
        num_classes = self.num_classes
        real_sum = self.real_gradient_sum(net, self.local_classes(), iteration, outer)
        if self._world_size() > 1:
            flat = self.trainer.strategy.reduce(torch.cat([g.reshape(-1) for g in real_sum]), reduce_op="sum")
            real_sum = [t.view_as(g) for t, g in zip(torch.split(flat, [g.numel() for g in real_sum]), real_sum)]
        g_real = [g / num_classes for g in real_sum]
        syn = torch.cat([self.augmented_syn(c, iteration, outer) for c in range(num_classes)])
        g_syn = self.engine.syn_gradient(net, syn, self.synset.hard_labels.to(syn.device))
        dist = gradient_distance(g_syn, g_real, self.dis_metric)
        norm = sdc_term(g_syn if with_sdc else [g.detach() for g in g_syn], self.sdc_power)
        return dist, norm

    def contrastive_now(self, iteration: int, outer: int) -> bool:
        """DCC's warm-up rule: contrastive iff iteration ≥ ``outer_warmup`` or outer step ≥ ``inner_warmup``."""
        return self.use_contrastive and (
            iteration >= self.hparams.outer_warmup or outer >= self.hparams.inner_warmup
        )

    def matching_loss(self, net: nn.Module, iteration: int, outer: int) -> tuple[Tensor, Tensor | None]:
        """The loss given to ``manual_backward`` (eq. 11 summed over local classes, or eq. 3 + SDC) and this
        rank's statistics for the logs, ``[Σ D, Σ term, Σ ‖g_syn‖₂, classes, contrastive]`` (detached).

        The statistics are summed over DDP ranks by :meth:`step_logs` *after* the update: a collective (and a
        device sync) between the forward and the backward would make every rank wait for the slowest twice per
        step, and on a GPU would stall the kernel queue before the backward.
        """
        lam = self.sdc_lambda
        with_sdc = lam > 0
        world = self._world_size()
        if self.contrastive_now(iteration, outer):
            dist, term = self.contrastive_terms(net, iteration, outer, with_sdc)
            loss = dist + lam * term if with_sdc else dist
            # identical on every rank: DDP's mean of the image gradients is the gradient itself
            stats = torch.stack([dist.detach(), term.detach(), self._norm(term.detach()), term.new_ones(()),
                                 term.new_ones(())]) / world
        else:
            classes = self.local_classes()
            dists, terms = self.classwise_terms(net, classes, iteration, outer, with_sdc)
            loss = (dists + lam * terms).sum() if with_sdc else dists.sum()
            loss = loss * world  # DDP averages the image gradients over ranks; the reference sums over classes
            stats = torch.stack([dists.detach().sum(), terms.detach().sum(), self._norm(terms.detach()).sum(),
                                 terms.new_tensor(float(len(classes))), terms.new_zeros(())])
        return loss, stats

    def step_logs(self, stats: Tensor | None) -> dict[str, float]:
        """The per-step logs from :meth:`matching_loss`'s statistics, summed over DDP ranks (one collective,
        one device sync): ``match/loss`` (Σ_c D, or the contrastive D), ``sdc/grad_norm`` (Σ_c ‖g_syn,c‖^p: what
        λ multiplies), ``sdc/term`` (λ · ``sdc/grad_norm``, as added to the objective), ``train/objective``
        (``match/loss`` + ``sdc/term``), ``sdc/grad_norm_mean`` (mean over classes of ‖g_syn,c‖₂),
        ``match/contrastive`` (0/1)."""
        if stats is None:
            return {}
        if self._world_size() > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        d, t, n, k, contrastive = stats.tolist()
        term = self.sdc_lambda * t
        return {"match/loss": d, "sdc/grad_norm": t, "sdc/term": term, "train/objective": d + term,
                "sdc/grad_norm_mean": n / max(k, 1.0), "match/contrastive": float(round(contrastive))}

    def _norm(self, term: Tensor) -> Tensor:
        """``‖g‖₂`` from the SDC term ``‖g‖₂^p``."""
        return term if self.sdc_power == 1 else term.sqrt()

    # ------------------------------------------------------------------ one update
    def training_step(self, batch: Any, batch_idx: int) -> None:
        step = self.step_index
        iteration, outer = divmod(step, self.outer_loop)
        net = self.iteration_network(iteration)
        if has_batchnorm(net):
            g = self.generator(iteration, outer, -3)
            counts = [min(BN_REAL_PER_CLASS, self.real.count(c)) for c in range(self.num_classes)]
            freeze_batchnorm(net, torch.cat([self.real.sample(c, n, g) for c, n in enumerate(counts)]))
        loss, stats = self.matching_loss(net, iteration, outer)
        self.apply_update(loss)
        self.log_step(**self.step_logs(stats), **{"match/iteration": iteration})
        if outer == self.outer_loop - 1:
            self._set_net(None, -1)  # the reference never trains the network after its last update
        elif self.inner_loop > 0:
            train_on_synset(net, self.synset.images, self.synset.hard_labels, epochs=self.inner_loop,
                            lr=self.hparams.lr_net, batch_size=self.hparams.batch_train,
                            generator=self.generator(iteration, outer, -2), dsa_strategy=self.strategy,
                            loss_fn=self.engine.loss)


def _dc_eval_epochs(dataset: str, arch: str, eval_augment: TrainAugment) -> int:
    """DC ``main.py``: 1000 evaluation epochs when the evaluation trains with augmentation, else 300."""
    if eval_augment == "dsa" or (eval_augment == "dc" and dc_augment_strategy(dataset, arch) != "none"):
        return 1000
    return 300


@register_method()
class DC(GradientMatching):
    """Dataset Condensation (Zhao et al., ICLR 2021) + SDC.

    Evaluation defaults (``main.py``): DC's ``get_daparam`` augmentation — MNIST only — and 300 epochs, or 1000
    epochs where that augmentation is active. ``eval_epochs=None`` resolves to that rule.
    """

    def __init__(self, dataset: str, ipc: int, *, arch: str = "ConvNet", eval_arch: str | None = None,
                 eval_augment: TrainAugment = "dc", eval_epochs: int | None = None, **kwargs: Any) -> None:
        if eval_epochs is None:
            eval_epochs = _dc_eval_epochs(dataset, eval_arch or arch, eval_augment)
        super().__init__(dataset, ipc, arch=arch, eval_arch=eval_arch, eval_augment=eval_augment,
                         eval_epochs=eval_epochs, **kwargs)
        # LightningCLI stores the *given* arguments as hparams (eval_epochs: null); keep the resolved value
        self.hparams["eval_epochs"] = eval_epochs


@register_method()
class DSA(GradientMatching):
    """Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021) + SDC; evaluation 1000 epochs with DSA."""

    use_dsa = True

    def __init__(self, dataset: str, ipc: int, *, eval_augment: TrainAugment = "dsa", eval_epochs: int = 1000,
                 **kwargs: Any) -> None:
        super().__init__(dataset, ipc, eval_augment=eval_augment, eval_epochs=eval_epochs, **kwargs)


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
