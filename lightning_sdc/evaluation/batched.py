"""Where ``tests/test_speed_paths.py`` imports :func:`train_networks` from; it lives in the engine."""

from lightning_sdc.evaluation.protocol import train_networks  # noqa: F401
