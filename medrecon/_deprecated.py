"""Old import locations kept working for a while: ``moved(...)`` backs a module's ``__getattr__``."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from importlib import import_module
from typing import Any


def moved(module: str, name: str, new_homes: Mapping[str, str]) -> Any:
    """``new_homes[name]``'s attribute ``name``, with a ``DeprecationWarning`` naming the new home.

    For ``def __getattr__(name): return moved(__name__, name, _MOVED)`` in the old module; a name that
    did not move is an ``AttributeError`` as usual. The new module is imported only on first use, so
    an old module may point at a higher layer (``priors.vae`` -> ``methods.vae``) without a cycle.
    """
    if name not in new_homes:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = new_homes[name]
    warnings.warn(
        f"{module}.{name} moved to {new}.{name}; the old name will be removed",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(import_module(new), name)
