"""Diagnostics for any ``LinearOperator``: the checks the test suite runs, for users' own operators.

>>> import torch
>>> from medrecon.operators import MatrixOperator
>>> op = MatrixOperator(torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
>>> check_adjoint(op) < 1e-12
True
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator, real_dtype_of

__all__ = ["check_adjoint", "check_backward", "random_input", "random_output"]


def _randn(shape, dtype: torch.dtype, device, generator: torch.Generator) -> Tensor:
    real = real_dtype_of(dtype)
    t = torch.randn(shape, dtype=real, generator=generator)
    if dtype.is_complex:
        t = torch.complex(t, torch.randn(shape, dtype=real, generator=generator))
    return t.to(device)


def random_input(op: LinearOperator, batch: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """A standard normal batch ``(batch, 1, *op.in_shape)`` of the operator's input dtype."""
    generator = generator or torch.Generator().manual_seed(0)
    return _randn((batch, 1, *op.in_shape), op.in_dtype, op.device, generator)


def random_output(op: LinearOperator, batch: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """A standard normal batch ``(batch, 1, *op.out_shape)`` of the operator's output dtype."""
    generator = generator or torch.Generator().manual_seed(1)
    return _randn((batch, 1, *op.out_shape), op.out_dtype, op.device, generator)


def check_adjoint(op: LinearOperator, *, batch: int = 2, rtol: float | None = None,
                  generator: torch.Generator | None = None) -> float:
    """The dot-product test: |<Ax, y> - <x, A^H y>| / (||Ax|| ||y||) for random x, y.

    Returns the relative error. With ``rtol`` given, raises AssertionError when it is larger.
    """
    generator = generator or torch.Generator().manual_seed(0)
    x = random_input(op, batch, generator)
    y = random_output(op, batch, generator)
    with torch.no_grad():
        ax = op(x)
        ahy = op.adjoint(y)
    lhs = torch.vdot(ax.flatten(), y.flatten())  # <Ax, y> = sum conj(Ax) y
    rhs = torch.vdot(x.flatten(), ahy.flatten())  # <x, A^H y>
    scale = float(ax.norm() * y.norm())
    err = float(abs(lhs - rhs)) / scale if scale > 0 else float(abs(lhs - rhs))
    if rtol is not None and not err <= rtol:
        raise AssertionError(f"{type(op).__name__}: adjoint test failed, relative error {err:.3e} > {rtol:.1e}")
    return err


def check_backward(op: LinearOperator, *, batch: int = 1, generator: torch.Generator | None = None,
                   eps: float = 1e-6, atol: float = 1e-7, rtol: float = 1e-5) -> bool:
    """``torch.autograd.gradcheck`` of ``op`` and ``op.adjoint`` in float64 on a copy of ``op``.

    Raises (gradcheck's own error) when autograd's backward disagrees with finite differences.
    """
    generator = generator or torch.Generator().manual_seed(0)
    # A float64 operator is used as it is; otherwise a float64 copy (the caller's stays untouched).
    op64 = op if op.real_dtype == torch.float64 else copy.deepcopy(op).to(torch.float64)
    x = random_input(op64, batch, generator).requires_grad_(True)
    y = random_output(op64, batch, generator).requires_grad_(True)
    ok_fwd = torch.autograd.gradcheck(op64, (x,), eps=eps, atol=atol, rtol=rtol)
    ok_adj = torch.autograd.gradcheck(op64.adjoint, (y,), eps=eps, atol=atol, rtol=rtol)
    return bool(ok_fwd and ok_adj)
