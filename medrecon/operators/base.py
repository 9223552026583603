"""The linear-operator abstraction shared by every modality.

Conventions (one for all modalities):

* A ``LinearOperator`` maps a batch ``(B, C, *in_shape)`` to ``(B, C, *out_shape)``. ``B`` is the
  batch, ``C`` a channel axis that the operator treats like the batch (CT and MRI images use
  ``C = 1``). Subclasses only see the flattened batch ``(N, *in_shape)`` with ``N = B * C``.
* Real operators take real tensors of the operator's dtype (``float32`` unless moved with
  ``.to(dtype)``). Complex operators (``in_complex`` / ``out_complex``) take the complex dtype of
  the same precision (``complex64`` for ``float32``). Complex buffers are stored as real views
  (``torch.view_as_real``) so that ``op.to(torch.float64)`` sets the precision of a complex
  operator without ever dropping an imaginary part.
* Calling ``op(x)`` applies A through one ``torch.autograd.Function`` whose backward is the
  operator's own adjoint ``A^H`` (and the adjoint's backward is ``A``), so backends outside torch
  (ASTRA, ODL) join autograd, no intermediate of the forward pass is kept, and
  ``torch.autograd.gradcheck`` tests the adjoint.

Subclasses implement ``_A`` and ``_AH`` on ``(N, *in_shape)`` / ``(N, *out_shape)`` tensors.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "LinearOperator",
    "ComposedOperator",
    "ScaledOperator",
    "SumOperator",
    "AdjointOperator",
    "GramOperator",
    "OperatorInputError",
    "complex_dtype_of",
    "real_dtype_of",
    "measurement_support",
    "n_measurements",
]

_COMPLEX_OF = {
    torch.float16: torch.complex32,
    torch.float32: torch.complex64,
    torch.float64: torch.complex128,
}
_REAL_OF = {v: k for k, v in _COMPLEX_OF.items()}


def complex_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """complex64 for float32, complex128 for float64 (identity on complex dtypes)."""
    return dtype if dtype.is_complex else _COMPLEX_OF[dtype]


def real_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64, float64 for complex128 (identity on real dtypes)."""
    return _REAL_OF[dtype] if dtype.is_complex else dtype


def _all_finite(t: Tensor) -> bool:
    """Whether every entry is finite, in one reduction: a sum is finite unless an entry is NaN or
    inf (or the sum overflows, which the exact elementwise check then rules out)."""
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


#: relative threshold of the default measurement_support(): |A A^H 1| above it counts as sampled
#: (float32 rounding of entries outside the range stays far below it).
_SUPPORT_RTOL = 1e-6


class OperatorInputError(ValueError):
    """An input does not fit an operator: wrong shape, dtype, device, or non-finite values."""


class _ApplyA(torch.autograd.Function):
    """y = A x, with backward A^H."""

    @staticmethod
    def forward(ctx, x: Tensor, op: LinearOperator) -> Tensor:  # type: ignore[override]
        ctx.op = op
        return op._A(x)

    @staticmethod
    def backward(ctx, grad_y: Tensor):  # type: ignore[override]
        return _ApplyAH.apply(grad_y, ctx.op), None


class _ApplyAH(torch.autograd.Function):
    """x = A^H y, with backward A (so double backward works too)."""

    @staticmethod
    def forward(ctx, y: Tensor, op: LinearOperator) -> Tensor:  # type: ignore[override]
        ctx.op = op
        return op._AH(y)

    @staticmethod
    def backward(ctx, grad_x: Tensor):  # type: ignore[override]
        return _ApplyA.apply(grad_x, ctx.op), None


class LinearOperator(nn.Module):
    """A batched linear map ``(B, C, *in_shape) -> (B, C, *out_shape)`` with an exact adjoint.

    Args:
        in_shape: shape of one input image, without batch and channel axes.
        out_shape: shape of one measurement, without batch and channel axes.
        in_complex: whether inputs are complex.
        out_complex: whether outputs are complex.
        dtype: the real precision of the operator (its buffers); ``.to(dtype)`` changes it.

    Subclasses implement ``_A`` (``(N, *in_shape) -> (N, *out_shape)``) and ``_AH``.
    """

    #: whether ``forward`` / ``adjoint`` reject NaN and inf. It costs one reduction per call
    #: (a device sync on GPU); solvers that call an operator thousands of times on tensors it
    #: produced itself may switch it off on their own copy.
    check_finite: bool = True

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        *,
        in_complex: bool = False,
        out_complex: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        if any(s <= 0 for s in self.in_shape + self.out_shape):
            raise ValueError(
                f"operator shapes must be positive, got in {self.in_shape}, out {self.out_shape}"
            )
        self.in_complex = bool(in_complex)
        self.out_complex = bool(out_complex)
        if dtype.is_complex:
            dtype = real_dtype_of(dtype)
        # An empty buffer that records the operator's device and precision and moves with .to().
        self.register_buffer("_anchor", torch.empty(0, dtype=dtype), persistent=False)
        self._norm_cache: dict[tuple[str, torch.dtype], float] = {}

    # ------------------------------------------------------------------ metadata
    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def real_dtype(self) -> torch.dtype:
        return self._anchor.dtype

    @property
    def in_dtype(self) -> torch.dtype:
        return complex_dtype_of(self.real_dtype) if self.in_complex else self.real_dtype

    @property
    def out_dtype(self) -> torch.dtype:
        return complex_dtype_of(self.real_dtype) if self.out_complex else self.real_dtype

    def extra_repr(self) -> str:
        return (
            f"in_shape={self.in_shape}, out_shape={self.out_shape}, in_dtype={self.in_dtype}, "
            f"out_dtype={self.out_dtype}"
        )

    # ------------------------------------------------------------------ to implement
    def _A(self, x: Tensor) -> Tensor:  # (N, *in_shape) -> (N, *out_shape)
        raise NotImplementedError

    def _AH(self, y: Tensor) -> Tensor:  # (N, *out_shape) -> (N, *in_shape)
        raise NotImplementedError

    # ------------------------------------------------------------------ application
    def _check(self, t: Tensor, shape: tuple[int, ...], dtype: torch.dtype, what: str) -> None:
        name = type(self).__name__
        if not isinstance(t, Tensor):
            raise OperatorInputError(f"{name}: {what} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != len(shape) + 2 or tuple(t.shape[2:]) != shape:
            raise OperatorInputError(
                f"{name}: {what} must have shape (B, C, {', '.join(map(str, shape))}), got {tuple(t.shape)}"
            )
        if t.dtype != dtype and (
            t.is_complex() != dtype.is_complex or not (t.is_floating_point() or t.is_complex())
        ):
            kind = "complex" if dtype.is_complex else "real"
            got = "complex" if t.is_complex() else ("real" if t.is_floating_point() else "non-floating")
            raise OperatorInputError(
                f"{name}: {what} has the wrong kind of dtype for this operator: it takes {kind} tensors "
                f"({dtype}), got a {got} {t.dtype} tensor"
                + (f"; convert the input with .to({dtype})" if kind == "complex" and got == "real" else "")
            )
        if t.dtype != dtype:
            target = real_dtype_of(t.dtype) if t.is_floating_point() or t.is_complex() else "dtype"
            raise OperatorInputError(
                f"{name}: {what} must have dtype {dtype}, got {t.dtype} "
                f"(move the operator with .to({target}) or convert the input)"
            )
        if t.device != self.device and not (t.device.type == self.device.type and self.device.index is None):
            raise OperatorInputError(
                f"{name}: {what} is on {t.device} but the operator is on {self.device}; use op.to(device)"
            )
        if self.check_finite and t.numel() and not _all_finite(t):
            raise OperatorInputError(f"{name}: {what} contains NaN or inf values")

    def forward(self, x: Tensor) -> Tensor:
        """y = A x, ``(B, C, *in_shape) -> (B, C, *out_shape)``."""
        self._check(x, self.in_shape, self.in_dtype, "input x")
        b, c = x.shape[:2]
        y = _ApplyA.apply(x.reshape(b * c, *self.in_shape), self)
        return y.reshape(b, c, *self.out_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        """x = A^H y, ``(B, C, *out_shape) -> (B, C, *in_shape)``."""
        self._check(y, self.out_shape, self.out_dtype, "input y (to the adjoint)")
        b, c = y.shape[:2]
        x = _ApplyAH.apply(y.reshape(b * c, *self.out_shape), self)
        return x.reshape(b, c, *self.in_shape)

    def normal(self, x: Tensor) -> Tensor:
        """A^H A x."""
        return self.adjoint(self(x))

    # ------------------------------------------------------------------ norm
    def norm(
        self, *, n_iter: int = 100, rtol: float = 1e-6, generator: torch.Generator | None = None
    ) -> float:
        """Spectral norm ||A||_2 by power iteration on A^H A, cached per device and dtype.

        Stops when the estimate changes by less than ``rtol`` (relative) between iterations.
        The start vector is drawn from ``generator`` (a fixed seed if none is given, so the
        value is reproducible).
        """
        key = (str(self.device), self.real_dtype)
        if key in self._norm_cache:
            return self._norm_cache[key]
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn((1, 1, *self.in_shape), generator=generator, dtype=real_dtype_of(self.in_dtype))
        if self.in_complex:
            x = torch.complex(x, torch.randn(x.shape, generator=generator, dtype=x.dtype))
        x = x.to(self.device)
        x = x / x.norm()
        estimate = 0.0
        with torch.no_grad():
            for _ in range(n_iter):
                z = self.normal(x)
                new = float(z.norm())  # ||A^H A x|| -> sigma_max^2
                if new == 0.0:
                    estimate = 0.0
                    break
                x = z / new
                if abs(new - estimate) <= rtol * new:
                    estimate = new
                    break
                estimate = new
        value = math.sqrt(estimate)
        self._norm_cache[key] = value
        return value

    def norm_squared(self, **kwargs) -> float:
        """||A||_2^2 (the Lipschitz constant of the gradient of 1/2||Ax - y||^2)."""
        return self.norm(**kwargs) ** 2

    # ------------------------------------------------------------------ direct inverse and support
    def direct(self, y: Tensor) -> Tensor:
        """x = A^H y / ||A||^2: a quick image from the data, ``(B, C, *out_shape) -> (B, C, *in_shape)``.

        The one direct reconstruction every operator has; subclasses override it with their
        modality's own (FBP for CT, the zero-filled image for MRI). Differentiable like the adjoint.
        """
        x = self.adjoint(y)
        n2 = self.norm_squared()
        return x / n2 if n2 > 0 else x

    def measurement_support(self) -> Tensor:
        """Which measurement entries carry data: a bool tensor of ``out_shape`` on the operator's device.

        Default: the entries in the range of A, ``|A A^H 1| > 1e-6 max |A A^H 1|`` (the sampled
        k-space of a masked operator, the kept pixels of an inpainting mask). Operators that know
        their sampling override it (MRI: the mask; CT: every detector bin).
        """
        with torch.no_grad():
            ones = torch.ones((1, 1, *self.out_shape), dtype=self.out_dtype, device=self.device)
            aah = self(self.adjoint(ones)).abs()[0, 0]
            peak = float(aah.max())
            if peak <= 0:
                return torch.zeros(self.out_shape, dtype=torch.bool, device=self.device)
            return aah > _SUPPORT_RTOL * peak

    def n_measurements(self) -> int:
        """Real measurement values carrying data, per image and channel: the support's size, x2 if complex."""
        return int(self.measurement_support().sum()) * (2 if self.out_complex else 1)

    def _apply(self, fn, recurse: bool = True):  # called by .to(), .cuda(), .double() ...
        self._norm_cache = {}
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------ algebra
    @property
    def H(self) -> LinearOperator:
        """The adjoint as an operator of its own."""
        return AdjointOperator(self)

    def gram(self) -> LinearOperator:
        """A^H A as an operator."""
        return GramOperator(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ComposedOperator(self, other)

    def __mul__(self, scalar) -> LinearOperator:
        if not isinstance(scalar, numbers.Number):
            return NotImplemented
        return ScaledOperator(self, scalar)

    __rmul__ = __mul__

    def __neg__(self) -> LinearOperator:
        return ScaledOperator(self, -1.0)

    def __add__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, other)

    def __sub__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return SumOperator(self, ScaledOperator(other, -1.0))

    # nn.Module defines __call__ -> forward; keep hashing by identity for the norm cache users.
    __hash__ = nn.Module.__hash__


def measurement_support(op: LinearOperator) -> Tensor:
    """``op.measurement_support()``: which entries of a measurement ``(*op.out_shape)`` carry data (bool)."""
    return op.measurement_support()


def n_measurements(op: LinearOperator) -> int:
    """``op.n_measurements()``: real measurement values per image and channel (the ``m`` of Morozov's
    discrepancy principle ``||A x - y||^2 ~ m sigma^2``)."""
    return op.n_measurements()


class ComposedOperator(LinearOperator):
    """(A @ B) x = A (B x); adjoint B^H A^H."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        if inner.out_shape != outer.in_shape or inner.out_complex != outer.in_complex:
            raise ValueError(
                f"cannot compose: inner output {inner.out_shape} "
                f"({'complex' if inner.out_complex else 'real'}) does not match outer input "
                f"{outer.in_shape} ({'complex' if outer.in_complex else 'real'})"
            )
        super().__init__(
            inner.in_shape,
            outer.out_shape,
            in_complex=inner.in_complex,
            out_complex=outer.out_complex,
            dtype=outer.real_dtype,
        )
        self.outer = outer
        self.inner = inner

    def _A(self, x: Tensor) -> Tensor:
        return self.outer._A(self.inner._A(x))

    def _AH(self, y: Tensor) -> Tensor:
        return self.inner._AH(self.outer._AH(y))


class ScaledOperator(LinearOperator):
    """(s A) x; adjoint conj(s) A^H."""

    def __init__(self, op: LinearOperator, scalar: complex) -> None:
        if isinstance(scalar, complex) and not (op.in_complex or op.out_complex):
            raise ValueError("a complex scale needs a complex operator")
        super().__init__(
            op.in_shape,
            op.out_shape,
            in_complex=op.in_complex,
            out_complex=op.out_complex,
            dtype=op.real_dtype,
        )
        self.op = op
        self.scalar = scalar

    def _A(self, x: Tensor) -> Tensor:
        return self.scalar * self.op._A(x)

    def _AH(self, y: Tensor) -> Tensor:
        s = self.scalar.conjugate() if isinstance(self.scalar, complex) else self.scalar
        return s * self.op._AH(y)


class SumOperator(LinearOperator):
    """(A + B) x; adjoint A^H + B^H."""

    def __init__(self, a: LinearOperator, b: LinearOperator) -> None:
        if (a.in_shape, a.out_shape, a.in_complex, a.out_complex) != (
            b.in_shape,
            b.out_shape,
            b.in_complex,
            b.out_complex,
        ):
            raise ValueError(
                f"cannot add operators {a.in_shape}->{a.out_shape} and {b.in_shape}->{b.out_shape}"
            )
        super().__init__(
            a.in_shape, a.out_shape, in_complex=a.in_complex, out_complex=a.out_complex, dtype=a.real_dtype
        )
        self.a = a
        self.b = b

    def _A(self, x: Tensor) -> Tensor:
        return self.a._A(x) + self.b._A(x)

    def _AH(self, y: Tensor) -> Tensor:
        return self.a._AH(y) + self.b._AH(y)


class AdjointOperator(LinearOperator):
    """A^H as an operator; its adjoint is A."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(
            op.out_shape,
            op.in_shape,
            in_complex=op.out_complex,
            out_complex=op.in_complex,
            dtype=op.real_dtype,
        )
        self.op = op

    def _A(self, x: Tensor) -> Tensor:
        return self.op._AH(x)

    def _AH(self, y: Tensor) -> Tensor:
        return self.op._A(y)


class GramOperator(LinearOperator):
    """A^H A (self-adjoint)."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(
            op.in_shape, op.in_shape, in_complex=op.in_complex, out_complex=op.in_complex, dtype=op.real_dtype
        )
        self.op = op

    def _A(self, x: Tensor) -> Tensor:
        return self.op._AH(self.op._A(x))

    _AH = _A


Callback = Callable[..., object]
