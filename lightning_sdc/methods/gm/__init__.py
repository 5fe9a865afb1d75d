"""Gradient matching: DC, DSA, DCC, DSAC (:mod:`lightning_sdc.methods.gm.gradient`, Algorithm 1) and its blocks."""

from lightning_sdc.methods.gm.engine import EngineName, GradientEngine, select_engine
from lightning_sdc.methods.gm.grads import batched_class_gradients, class_gradient, stack_batches
from lightning_sdc.methods.gm.loops import DC_LOOPS, DCC_LOOPS, get_loops
from lightning_sdc.methods.gm.network import freeze_batchnorm, has_batchnorm, train_on_synset

__all__ = ["DCC_LOOPS", "DC_LOOPS", "EngineName", "GradientEngine", "batched_class_gradients",
           "class_gradient", "freeze_batchnorm", "get_loops", "has_batchnorm", "select_engine",
           "stack_batches", "train_on_synset"]
