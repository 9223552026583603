"""Deprecated: the classical methods moved to :mod:`medrecon.methods.classical` and the weight
selection to :mod:`medrecon.solvers.weights`. The old names still resolve, with a ``DeprecationWarning``."""

from __future__ import annotations

from medrecon._deprecated import moved

_MOVED = {
    **{
        name: "medrecon.methods.classical"
        for name in ("fbp", "cgls", "tikhonov", "tv", "sense", "zero_filled")
    },
    **{
        name: "medrecon.solvers.weights"
        for name in ("discrepancy_weight", "SweepResult", "DEFAULT_GRID", "_n_measurements")
    },
    "sweep_weight": "medrecon.methods",  # accepts a method name, so it lives above the registry
}


def __getattr__(name: str):
    return moved(__name__, name, _MOVED)
