"""Evaluation of synthetic sets: the one evaluation engine (:mod:`~lightning_sdc.evaluation.protocol`), set files
and cross-architecture tables."""

from lightning_sdc.evaluation.protocol import (
    CROSS_ARCHS,
    EVAL_AUGMENTS,
    EvalResult,
    evaluate_synset,
    evaluate_table,
    make_train_augment,
    seeded_generator,
    test_accuracy,
    train_network,
)
from lightning_sdc.evaluation.set_files import SetFileError, load_set
from lightning_sdc.evaluation.tables import evaluate_archs, results_csv, results_markdown, write_results

__all__ = ["CROSS_ARCHS", "EVAL_AUGMENTS", "EvalResult", "SetFileError", "evaluate_archs",
           "evaluate_synset", "evaluate_table", "load_set", "make_train_augment", "results_csv",
           "results_markdown", "seeded_generator", "test_accuracy", "train_network", "write_results"]
