"""Classical methods: ``fbp``, ``direct`` (alias ``zero-filled``), ``cgls``, ``tikhonov``, ``tv``, ``sense``.

Each is ``fn(op, y, *, <keyword options>) -> x`` with ``y (B, C, *op.out_shape) -> x (B, C, *op.in_shape)``
and accepts ``callback(k, x, info)`` (returning ``True`` stops an iterative method).

Regularisation weights are **relative to the operator's squared norm**: ``tikhonov`` minimises
``1/2 ||Ax - y||^2 + lam/2 ||A||^2 ||x||^2`` and ``tv`` minimises ``1/2 ||Ax - y||^2 + lam ||A||^2 TV(x)``.
Scaling ``A`` and ``y`` together then leaves the best ``lam`` unchanged (so one value fits CT with
10 or 30 angles), and for ``||A|| = 1`` (identity, orthonormal Cartesian MRI) ``lam`` is the plain
weight (``tv`` with the identity is ``skimage.restoration.denoise_tv_chambolle(weight=lam)``).

``lam`` may also be ``"discrepancy"`` (with ``noise_std=``) or ``"sweep"`` (with ``x_true=``): see
:mod:`medrecon.solvers.weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.operators.ct import FBP_FILTERS
from medrecon.solvers.variational import Callback, least_squares, pdhg_tv
from medrecon.solvers.weights import _Lam, _per_element, _resolve_lam

from .registry import one_of, register_method, weight_or_rule

__all__ = ["cgls", "direct", "fbp", "sense", "tikhonov", "tv"]

_LAM_RULES = weight_or_rule("discrepancy", "sweep")


def _info_residual(op: LinearOperator, x: Tensor, y: Tensor) -> dict:
    with torch.no_grad():
        return {"residual": torch.linalg.vector_norm((op(x) - y).flatten(1), dim=1)}


# --------------------------------------------------------------------------- direct methods
@register_method("fbp", checks={"filter": one_of(*FBP_FILTERS)})
def fbp(
    op: LinearOperator,
    y: Tensor,
    *,
    filter: str = "ramp",
    frequency_scaling: float = 1.0,
    callback: Callback | None = None,
) -> Tensor:
    """x = FBP(y) through ``op.fbp`` (CT operators); an error for operators without one.

    ``op.direct(y)`` is the same image with the default filter; this method exists to choose the filter.
    """
    if not callable(getattr(op, "fbp", None)):  # the one method that is FBP itself, not a direct inverse
        raise ValueError(
            f"method 'fbp' needs an operator with an .fbp method (a CT operator); "
            f"{type(op).__name__} has none. "
            "Use 'direct', 'cgls' or 'tikhonov' instead."
        )
    with torch.no_grad():
        x = op.fbp(y, filter=filter, frequency_scaling=frequency_scaling)
    if callback is not None:
        callback(0, x, _info_residual(op, x, y))
    return x


def _direct(op: LinearOperator, y: Tensor, *, callback: Callback | None = None) -> Tensor:
    """x = op.direct(y): the operator's own direct reconstruction (FBP for CT, zero-filled for MRI,
    ``A^H y / ||A||^2`` by default)."""
    with torch.no_grad():
        x = op.direct(y)
    if callback is not None:
        callback(0, x, _info_residual(op, x, y) if x.dtype == op.in_dtype else {})
    return x


direct = register_method("direct")(_direct)
zero_filled = register_method("zero-filled")(_direct)  # the MRI name of the same thing


# --------------------------------------------------------------------------- iterative methods
@register_method("cgls")
def cgls(
    op: LinearOperator,
    y: Tensor,
    *,
    n_iter: int = 30,
    tol: float = 1e-6,
    x0: Tensor | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """x = argmin 1/2 ||Ax - y||^2 by CGLS from ``x0`` (default 0); ``n_iter`` (early stopping)
    regularises."""
    return least_squares(op, y, lam=0.0, n_iter=n_iter, tol=tol, x0=x0, callback=callback)


@register_method("tikhonov", checks={"lam": _LAM_RULES})
def tikhonov(
    op: LinearOperator,
    y: Tensor,
    *,
    lam: _Lam = 1e-3,
    n_iter: int = 100,
    tol: float = 1e-6,
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """x = argmin 1/2 ||Ax - y||^2 + lam/2 ||A||^2 ||x||^2 by CGLS; ``lam`` relative (see module doc)."""
    scale = op.norm_squared()

    def solve(lam_t: Tensor, x0: Tensor | None) -> Tensor:
        return least_squares(
            op, y, lam=_per_element(lam_t, y, scale), n_iter=n_iter, tol=tol, x0=x0, callback=callback
        )

    return _resolve_lam(lam, "tikhonov", solve, op, y, noise_std, tau, x_true, grid)


@register_method(
    "tv",
    checks={"lam": _LAM_RULES, "init": one_of("zeros", "adjoint", "direct")},
    value_aliases={"init": {"zero": "zeros", "fbp": "direct", "zero-filled": "direct"}},
)
def tv(
    op: LinearOperator,
    y: Tensor,
    *,
    lam: _Lam = 1e-2,
    n_iter: int = 300,
    tol: float = 1e-5,
    nonneg: bool = True,
    step_ratio: float = 1.0,
    init: str = "zeros",
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """x = argmin 1/2 ||Ax - y||^2 + lam ||A||^2 TV(x) [x >= 0] by PDHG; ``lam`` relative (see module doc).

    ``init``: ``"zeros"``, ``"adjoint"`` (``A^H y / ||A||^2``) or ``"direct"`` (``op.direct(y)``: FBP for CT,
    zero-filled for MRI; the old names ``"fbp"`` and ``"zero-filled"`` are deprecated aliases).
    ``step_ratio``: PDHG's ``sigma / tau`` (see :func:`medrecon.solvers.variational.pdhg_tv`).
    """
    scale = op.norm_squared()
    x_init = None
    if init != "zeros":
        with torch.no_grad():
            x_init = op.direct(y) if init == "direct" else op.adjoint(y) / scale
        if op.in_complex and not x_init.is_complex():  # a magnitude image (multi-coil zero-filled)
            x_init = x_init.to(op.in_dtype)

    def solve(lam_t: Tensor, x0: Tensor | None) -> Tensor:
        return pdhg_tv(
            op,
            y,
            lam=_per_element(lam_t, y, scale),
            n_iter=n_iter,
            tol=tol,
            nonneg=nonneg,
            x0=x0 if x0 is not None else x_init,
            step_ratio=step_ratio,
            callback=callback,
        )

    return _resolve_lam(lam, "tv", solve, op, y, noise_std, tau, x_true, grid)


@register_method("sense")
def sense(
    op: LinearOperator,
    y: Tensor,
    *,
    n_iter: int = 20,
    lam: float = 0.0,
    tol: float = 1e-6,
    callback: Callback | None = None,
) -> Tensor:
    """CG-SENSE: x = argmin 1/2 ||Ax - y||^2 + lam/2 ||A||^2 ||x||^2 by CGLS for a (multi-coil) MRI operator.

    [Pruessmann et al., "Advances in sensitivity encoding with arbitrary k-space trajectories",
    MRM 46, 2001.] Default: 20 iterations, no Tikhonov term (early stopping regularises).
    """
    if not op.in_complex:
        raise ValueError(
            f"method 'sense' needs a complex (MRI) operator; {type(op).__name__} is real. Use 'cgls'."
        )
    return least_squares(
        op, y, lam=lam * op.norm_squared() if lam else 0.0, n_iter=n_iter, tol=tol, callback=callback
    )
