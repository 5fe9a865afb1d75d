"""Where :mod:`lightning_sdc.callbacks.common` imports :func:`rank_share` from; it lives in the engine."""

from lightning_sdc.evaluation.protocol import rank_share  # noqa: F401
