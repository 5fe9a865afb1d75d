"""The method registry: ``build_method("dsa", dataset="digits", ipc=1)`` for the Python API and notebooks.

LightningCLI selects methods by class (``model: {class_path: DSA}``); this registry names the same classes. Every
method is registered by the time this module is usable: importing it imports its package first, and
``lightning_sdc/methods/__init__.py`` imports every method module.
"""

from __future__ import annotations

from typing import Any

from lightning_sdc.registry import Registry

METHODS: Registry[Any] = Registry("method")


def register_method(*aliases: str):  # noqa: ANN201 - decorator
    """Class decorator: register a ``DistillationModule`` subclass under its class name (and aliases)."""

    def deco(cls: type) -> type:
        METHODS.register(cls.__name__, *aliases)(cls)
        return cls

    return deco


def build_method(name: str, **kwargs: Any) -> Any:
    """Instantiate the method registered as ``name`` (case-insensitive)."""
    return METHODS.build(name, **kwargs)


def list_methods() -> list[str]:
    """Registered method names."""
    return METHODS.names()
