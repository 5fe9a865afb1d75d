"""One name → factory registry, instantiated once per kind (datasets, networks, methods), as timm's
``register_model``/``create_model``: case-insensitive names and aliases; an unknown name lists the allowed ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps case-insensitive names (and aliases) to factories of one kind of thing."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._canonical: dict[str, str] = {}  # lower-case name or alias -> canonical name

    def register(self, name: str | None = None, *aliases: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``fn`` under ``name`` (default: its ``__name__``) and ``aliases``."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            canonical = name or fn.__name__
            for key in (canonical, *aliases):
                low = key.lower()
                if low in self._canonical and self._canonical[low] != canonical:
                    raise ValueError(f"{self.kind} name {key!r} is already registered")
                self._canonical[low] = canonical
            self._entries[canonical] = fn
            return fn

        return deco

    def canonical(self, name: str) -> str:
        """The registered spelling of ``name``; ``KeyError`` listing the allowed names if unknown."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}: {name!r}")
        try:
            return self._canonical[name.lower()]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}") from None

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``."""
        return self._entries[self.canonical(name)]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Call the factory registered under ``name``."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._canonical

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
