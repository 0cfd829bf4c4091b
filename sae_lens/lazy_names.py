"""Names a module offers without importing them until first use (a module-level
`__getattr__`): the package's top-level exports, and names 5.6.0 code imports from a module
that does not itself need them, kept out of that module's import time and import graph."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_names(module_globals: dict[str, Any], sources: dict[str, str]) -> Callable[[str], Any]:
    """A `__getattr__` for the module whose `globals()` are `module_globals`: it imports
    `name` from `sources[name]` (a module path) on first use and keeps it in the module."""

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {module_globals['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        module_globals[name] = value
        return value

    return __getattr__
