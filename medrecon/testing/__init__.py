"""Diagnostics for any ``LinearOperator``: the checks the test suite runs, for users' own operators.

>>> import torch
>>> from medrecon.operators import MatrixOperator
>>> op = MatrixOperator(torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
>>> check_adjoint(op) < 1e-12
True
>>> sorted(check_operator(op))[:3]
['adjoint', 'adjoint_of_adjoint', 'deepcopy']
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor
from torch.autograd.gradcheck import GradcheckError

from medrecon.operators.base import LinearOperator, OperatorInputError, complex_dtype_of, real_dtype_of

__all__ = ["check_adjoint", "check_backward", "check_operator", "random_input", "random_output"]


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


def check_adjoint(
    op: LinearOperator, *, batch: int = 2, rtol: float | None = None, generator: torch.Generator | None = None
) -> float:
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
        raise AssertionError(
            f"{type(op).__name__}: adjoint test failed, relative error {err:.3e} > {rtol:.1e}"
        )
    return err


def check_backward(
    op: LinearOperator,
    *,
    batch: int = 1,
    generator: torch.Generator | None = None,
    eps: float = 1e-6,
    atol: float = 1e-7,
    rtol: float = 1e-5,
    fast_mode: bool = False,
) -> bool:
    """``torch.autograd.gradcheck`` of ``op`` and ``op.adjoint`` in float64 on a copy of ``op``.

    Raises (gradcheck's own error) when autograd's backward disagrees with finite differences.
    ``fast_mode``: gradcheck's fast mode, which compares random projections ``v^T J u`` instead of
    the full Jacobian (one forward and one backward pass instead of one per input entry).
    """
    generator = generator or torch.Generator().manual_seed(0)
    # A float64 operator is used as it is; otherwise a float64 copy (the caller's stays untouched).
    op64 = op if op.real_dtype == torch.float64 else copy.deepcopy(op).to(torch.float64)
    x = random_input(op64, batch, generator).requires_grad_(True)
    y = random_output(op64, batch, generator).requires_grad_(True)
    ok_fwd = torch.autograd.gradcheck(op64, (x,), eps=eps, atol=atol, rtol=rtol, fast_mode=fast_mode)
    ok_adj = torch.autograd.gradcheck(op64.adjoint, (y,), eps=eps, atol=atol, rtol=rtol, fast_mode=fast_mode)
    return bool(ok_fwd and ok_adj)


# ------------------------------------------------------------------------------------------ all at once
#: check_operator's default relative tolerance per real precision: a few thousand roundings.
_DEFAULT_RTOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2}
#: float32 rounding, for comparing a float32 copy with the float64 operator.
_FLOAT32_RTOL = 1e-5
#: power iteration (100 steps, rtol 1e-6) against the exact largest singular value, relative.
_NORM_RTOL = 1e-3


def _relative(a: Tensor, b: Tensor) -> float:
    """||a - b|| / max(||a||, ||b||) (0 when both vanish)."""
    scale = max(float(a.norm()), float(b.norm()))
    return float((a - b).norm()) / scale if scale > 0 else float((a - b).norm())


def _fail(op: LinearOperator, check: str, message: str) -> AssertionError:
    return AssertionError(f"{type(op).__name__} {check}: {message}")


def _expect_rejected(op: LinearOperator, fn, t: Tensor, what: str) -> None:
    try:
        fn(t)
    except OperatorInputError:
        return
    except Exception as exc:  # noqa: BLE001 - any other error is a failure of the check
        raise _fail(
            op, "bad input", f"{what} raised {type(exc).__name__}, not OperatorInputError: {exc}"
        ) from exc
    raise _fail(op, "bad input", f"{what} was accepted; it must raise OperatorInputError")


def _bad_inputs(op: LinearOperator, t: Tensor, shape: tuple[int, ...]) -> dict[str, Tensor]:
    """Inputs that must be refused: wrong shape, no channel axis, wrong dtype, NaN."""
    wrong_shape = torch.zeros((*t.shape[:-1], t.shape[-1] + 1), dtype=t.dtype, device=t.device)
    other = torch.float32 if real_dtype_of(t.dtype) == torch.float64 else torch.float64
    wrong_dtype = t.to(complex_dtype_of(other) if t.is_complex() else other)
    realness = t.real.clone() if t.is_complex() else t.to(complex_dtype_of(t.dtype))
    nan = t.clone()
    nan.view(-1)[0] = float("nan")
    return {
        f"shape {tuple(wrong_shape.shape)} (expected (B, C, *{shape}))": wrong_shape,
        f"shape {tuple(t[0].shape)} (no batch axis)": t[0],
        f"dtype {wrong_dtype.dtype} (expected {t.dtype})": wrong_dtype,
        f"dtype {realness.dtype} (expected {t.dtype})": realness,
        "an input with NaN": nan,
    }


def _dense(op: LinearOperator) -> Tensor:
    """The operator as a dense ``(out_numel, in_numel)`` matrix, from its action on the unit vectors."""
    n = math.prod(op.in_shape)
    eye = torch.eye(n, dtype=op.in_dtype, device=op.device).reshape(n, 1, *op.in_shape)
    with torch.no_grad():
        return op(eye).reshape(n, -1).T


def check_operator(
    op: LinearOperator,
    *,
    rtol: float | None = None,
    backward: bool = False,
    dense_max: int = 1024,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Every property a ``LinearOperator`` must have; raises AssertionError naming the first that fails.

    The checks (ODL's ``OperatorTest`` and deepinv's ``test_physics`` in one call):

    * **adjoint**: ``|<Ax, y> - <x, A^H y>| / (||Ax|| ||y||) <= rtol`` (:func:`check_adjoint`);
    * **adjoint_of_adjoint**: ``A.H.H`` applies ``A``, and ``A.H`` applies ``A^H``;
    * **linearity**: ``A(a x1 + b x2) = a A x1 + b A x2`` (complex ``a, b`` for complex inputs);
    * **dtype**: float32 and float64 copies (complex64 / complex128 for complex operators) take and
      give their own dtypes and agree to float32 rounding; the operator itself is untouched;
    * **deepcopy**: a deep copy gives the same values and moves independently;
    * **bad_input**: wrong shape, missing axis, wrong dtype or a NaN raise ``OperatorInputError``,
      for ``op(x)`` and ``op.adjoint(y)``;
    * **support**: ``measurement_support()`` is a bool tensor of ``out_shape``, ``n_measurements()``
      counts it (x2 for complex data), ``direct(y)`` gives an image of ``in_shape``;
    * **norm**: when the input has at most ``dense_max`` entries, ``op.norm()`` against the largest
      singular value of the dense matrix (relative 1e-3, or ``rtol`` if larger; power iteration
      approaches it from below);
    * **backward** (with ``backward=True``): ``torch.autograd.gradcheck`` in float64
      (:func:`check_backward`), in gradcheck's fast mode: the operator is linear and the adjoint
      check above already compares A^H with A, so random projections suffice to show that autograd's
      backward is that adjoint.

    ``rtol`` defaults to 1e-10 for float64 operators and 1e-4 for float32 ones; backends that
    compute in float32 whatever the operator's dtype (ASTRA, ODL) need ~1e-5. Returns the
    measured relative errors by check name.
    """
    generator = generator or torch.Generator().manual_seed(0)
    rtol = _DEFAULT_RTOL.get(op.real_dtype, 1e-4) if rtol is None else float(rtol)
    errors: dict[str, float] = {}
    dtype_before = op.real_dtype

    errors["adjoint"] = check_adjoint(op, rtol=rtol, generator=generator)

    x = random_input(op, 2, generator)
    y = random_output(op, 2, generator)
    with torch.no_grad():
        ax, ahy = op(x), op.adjoint(y)
        # A.H.H is A, A.H is A^H: the wrappers call the same kernels, so the values are equal
        hh, h = op.H.H, op.H
        if (hh.in_shape, hh.out_shape, h.in_shape, h.out_shape) != (
            op.in_shape,
            op.out_shape,
            op.out_shape,
            op.in_shape,
        ):
            raise _fail(op, "adjoint_of_adjoint", "A.H / A.H.H have the wrong shapes")
        errors["adjoint_of_adjoint"] = max(
            _relative(hh(x), ax), _relative(h(y), ahy), _relative(hh.adjoint(y), ahy)
        )
        if errors["adjoint_of_adjoint"] > rtol:
            raise _fail(
                op,
                "adjoint_of_adjoint",
                f"A.H.H x != A x or A.H y != A^H y (relative error {errors['adjoint_of_adjoint']:.3e})",
            )

        # linearity
        x2 = random_input(op, 2, generator)
        a, b = (complex(0.7, -1.3), complex(-2.1, 0.4)) if op.in_complex else (0.7, -2.1)
        lhs = op(a * x + b * x2)
        rhs = a * ax + b * op(x2)
        scale = abs(a) * float(ax.norm()) + abs(b) * float(op(x2).norm())
        errors["linearity"] = float((lhs - rhs).norm()) / scale if scale > 0 else float((lhs - rhs).norm())
        if errors["linearity"] > rtol:
            raise _fail(
                op,
                "linearity",
                f"A(a x1 + b x2) != a A x1 + b A x2 (relative error {errors['linearity']:.3e})",
            )

        # deepcopy: same values, independent moves
        clone = copy.deepcopy(op)
        errors["deepcopy"] = max(_relative(clone(x), ax), _relative(clone.adjoint(y), ahy))
        if errors["deepcopy"] > rtol:
            raise _fail(
                op, "deepcopy", f"a deep copy gives other values (relative error {errors['deepcopy']:.3e})"
            )

        # dtype round trip: float32 <-> float64 (complex64 <-> complex128)
        other = torch.float32 if op.real_dtype == torch.float64 else torch.float64
        moved = clone.to(other)
        if op.real_dtype != dtype_before or moved.real_dtype != other:
            raise _fail(op, "dtype", f"moving a deep copy to {other} changed the original, or did not move")
        other_complex = complex_dtype_of(other)
        for name, got, want in (
            ("in_dtype", moved.in_dtype, other_complex if op.in_complex else other),
            ("out_dtype", moved.out_dtype, other_complex if op.out_complex else other),
        ):
            if got != want:
                raise _fail(op, "dtype", f"after .to({other}) {name} is {got}, expected {want}")
        x_other, y_other = x.to(moved.in_dtype), y.to(moved.out_dtype)
        ax_other, ahy_other = moved(x_other), moved.adjoint(y_other)
        if ax_other.dtype != moved.out_dtype or ahy_other.dtype != moved.in_dtype:
            raise _fail(op, "dtype", f"after .to({other}) outputs are {ax_other.dtype} / {ahy_other.dtype}")
        back = moved.to(op.real_dtype)
        errors["dtype"] = max(
            _relative(ax_other.to(ax.dtype), ax),
            _relative(ahy_other.to(ahy.dtype), ahy),
            _relative(back(x), ax),
            _relative(back.adjoint(y), ahy),
        )
        if errors["dtype"] > max(rtol, _FLOAT32_RTOL):
            raise _fail(
                op, "dtype", f"float32 and float64 copies disagree (relative error {errors['dtype']:.3e})"
            )

    # bad input, for the operator and its adjoint
    for what, bad in _bad_inputs(op, x, op.in_shape).items():
        _expect_rejected(op, op, bad, f"op(x) with {what}")
    for what, bad in _bad_inputs(op, y, op.out_shape).items():
        _expect_rejected(op, op.adjoint, bad, f"op.adjoint(y) with {what}")

    # measurement support, its count and the direct reconstruction
    with torch.no_grad():
        support = op.measurement_support()
        if support.dtype != torch.bool or tuple(support.shape) != op.out_shape:
            raise _fail(
                op,
                "support",
                f"measurement_support() is {support.dtype} {tuple(support.shape)}, "
                f"expected torch.bool {op.out_shape}",
            )
        count = int(support.sum()) * (2 if op.out_complex else 1)
        if op.n_measurements() != count:
            raise _fail(
                op, "support", f"n_measurements() is {op.n_measurements()}, the support holds {count}"
            )
        direct = op.direct(y)
        if tuple(direct.shape) != tuple(x.shape) or not bool(torch.isfinite(direct).all()):
            raise _fail(
                op,
                "support",
                f"direct(y) has shape {tuple(direct.shape)} (expected {tuple(x.shape)}) or non-finite values",
            )
    errors["support"] = 0.0

    # norm against the dense matrix, where that is cheap
    if math.prod(op.in_shape) <= dense_max:
        sigma = float(torch.linalg.matrix_norm(_dense(op), 2))
        estimate = op.norm()
        errors["norm"] = abs(estimate - sigma) / sigma if sigma > 0 else estimate
        if errors["norm"] > max(_NORM_RTOL, rtol):  # an inexact adjoint (rtol) also shifts the estimate
            raise _fail(
                op, "norm", f"op.norm() = {estimate:.6g} but the largest singular value is {sigma:.6g}"
            )

    if backward:
        try:
            check_backward(op, generator=generator, fast_mode=True)
        except GradcheckError as exc:
            raise _fail(op, "backward", f"autograd's backward is not the adjoint: {exc}") from exc
        errors["backward"] = 0.0
    return errors
