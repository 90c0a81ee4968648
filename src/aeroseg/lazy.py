"""Lazy exports of a package ``__init__``: names imported from their module on first use, so that importing
the package (its config, for the registry and the command line) loads no torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(scope: dict[str, Any], names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the package whose ``globals()`` is ``scope``: each of ``names`` (name →
    module) is imported on first access and then kept in ``scope``."""
    package = scope["__name__"]

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        scope[name] = value
        return value

    return __getattr__
