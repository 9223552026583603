"""``medrecon.reconstruct(op, y, method, **options)``: one entry point, methods by name.

Each method is a function ``fn(op, y, *, <keyword options>) -> x`` with
``y: (B, C, *op.out_shape) -> x: (B, C, *op.in_shape)``, registered where it is defined by
``@register_method("name")`` (see :mod:`medrecon.methods.registry`: the shared checks of ``y`` and of
the option names and values, :func:`validate_options`). One module per family:

* :mod:`~medrecon.methods.classical`: ``fbp``, ``direct`` / ``zero-filled``, ``cgls``, ``tikhonov``,
  ``tv``, ``sense``
* :mod:`~medrecon.methods.vae`: ``vae-range``, ``vae-soft``
* :mod:`~medrecon.methods.flow`: ``flow``
* :mod:`~medrecon.methods.gan`: ``csgm``, ``gan-d``
* :mod:`~medrecon.methods.dip`: ``dip``, ``dip-tv``
* :mod:`~medrecon.methods.patchnr`: ``patchnr`` (patch normalizing flow, any image size)

Adding a family (e.g. a new learned prior): write ``medrecon/methods/<family>.py`` whose functions
carry ``@register_method("<name>")`` (options keyword-only; the shared rules of
:data:`~medrecon.methods.registry.OPTION_CHECKS` apply by option name, e.g. ``n_iter``, ``lam``, ``lr``;
add the method's own rules with ``checks=``), load learned weights with
:func:`medrecon.priors.base.load_weights` (``weights=`` a path or a model), and add the module to the
one import line below. The model itself lives in ``medrecon/priors/<family>.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.solvers.weights import SweepResult
from medrecon.solvers.weights import sweep_weight as _sweep_weight

from . import classical, dip, flow, gan, patchnr, vae  # noqa: F401 - importing a family registers its methods
from .registry import (
    available_methods,
    check_measurements,
    get_method,
    method_defaults,
    method_options,
    reconstruct,
    register_method,
    validate_options,
)

__all__ = [
    "available_methods",
    "check_measurements",
    "get_method",
    "method_defaults",
    "method_options",
    "reconstruct",
    "register_method",
    "sweep_weight",
    "validate_options",
]


def sweep_weight(
    op: LinearOperator,
    y: Tensor,
    method: str | Callable,
    x_true: Tensor,
    grid: Sequence[float] | None = None,
    **options: Any,
) -> SweepResult:
    """:func:`medrecon.solvers.weights.sweep_weight` with ``method`` a name (``"tikhonov"``) or a function."""
    fn = get_method(method) if isinstance(method, str) else method
    return _sweep_weight(op, y, fn, x_true, grid, **options)
