"""Sample difficulty: per-sample GraDN (Definition 2), EL2N, misclassification χ (Definition 1), forgetting.

``per_sample_grad_norms`` is the building block (vmapped, looped, or last-layer closed form); the ensemble
functions return per-model rows ``[M, N]`` whose mean over models is the score; ``difficulty_command`` is the
``lightning-sdc difficulty`` subcommand (scores + the paper's Figure 3).
"""

from lightning_sdc.difficulty.command import difficulty_command
from lightning_sdc.difficulty.forgetting import NEVER_LEARNED, ForgettingCounter, forgetting_counts
from lightning_sdc.difficulty.grad_norms import (
    PARAM_SETS,
    per_sample_grad_norms,
    resolve_method,
    sample_losses,
)
from lightning_sdc.difficulty.scores import (
    DifficultyScores,
    difficulty_fractions,
    el2n,
    forward_scores,
    gradn,
    misclassification,
    score_samples,
    spearman,
)
from lightning_sdc.difficulty.training import KeptNetworks, train_classifier, train_ensemble, trained_network

__all__ = ["NEVER_LEARNED", "PARAM_SETS", "DifficultyScores", "ForgettingCounter", "KeptNetworks",
           "difficulty_command", "difficulty_fractions", "el2n", "forgetting_counts", "forward_scores",
           "gradn", "misclassification", "per_sample_grad_norms", "resolve_method", "sample_losses",
           "score_samples", "spearman", "train_classifier", "train_ensemble", "trained_network"]
