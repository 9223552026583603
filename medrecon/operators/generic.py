"""Operators that need no physics: identity, diagonal (pointwise) and explicit matrices."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from ._sparse import csr_of, register_csr
from .base import LinearOperator

__all__ = ["Identity", "DiagonalOperator", "MatrixOperator"]


class Identity(LinearOperator):
    """x -> x on ``(B, C, *shape)``; real or complex."""

    def __init__(
        self, shape: Sequence[int], *, complex: bool = False, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__(shape, shape, in_complex=complex, out_complex=complex, dtype=dtype)

    def _A(self, x: Tensor) -> Tensor:
        return x.clone()

    _AH = _A


class DiagonalOperator(LinearOperator):
    """x -> d * x (pointwise), adjoint conj(d) * y. ``d`` has the image shape; real or complex."""

    def __init__(self, diagonal: Tensor) -> None:
        is_complex = diagonal.is_complex()
        real = torch.view_as_real(diagonal) if is_complex else diagonal
        super().__init__(
            diagonal.shape, diagonal.shape, in_complex=is_complex, out_complex=is_complex, dtype=real.dtype
        )
        self.register_buffer("_diag", real.clone())
        self._is_complex = is_complex

    @property
    def diagonal(self) -> Tensor:
        return torch.view_as_complex(self._diag) if self._is_complex else self._diag

    def _A(self, x: Tensor) -> Tensor:
        return self.diagonal * x

    def _AH(self, y: Tensor) -> Tensor:
        return self.diagonal.conj() * y


class MatrixOperator(LinearOperator):
    """y = M x for an explicit (m, n) matrix, dense (real or complex) or sparse (real).

    ``in_shape`` / ``out_shape`` default to ``(n,)`` / ``(m,)``; images are flattened in C order.
    A sparse matrix is kept in CSR together with its CSR transpose, so both A and A^H are one
    sparse-dense matmul for the whole batch on any device.
    """

    def __init__(
        self, matrix: Tensor, in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None
    ) -> None:
        if matrix.dim() != 2:
            raise ValueError(f"MatrixOperator needs a 2-D matrix, got shape {tuple(matrix.shape)}")
        m, n = matrix.shape
        in_shape = tuple(in_shape) if in_shape is not None else (n,)
        out_shape = tuple(out_shape) if out_shape is not None else (m,)
        if math.prod(in_shape) != n or math.prod(out_shape) != m:
            raise ValueError(f"matrix of shape {(m, n)} does not map {in_shape} to {out_shape}")
        self._sparse = matrix.layout != torch.strided
        is_complex = matrix.is_complex()
        if self._sparse and is_complex:
            raise ValueError("sparse complex matrices are not supported; pass a dense matrix")
        dtype = matrix.dtype if not is_complex else torch.view_as_real(matrix).dtype
        super().__init__(in_shape, out_shape, in_complex=is_complex, out_complex=is_complex, dtype=dtype)
        self._is_complex = is_complex
        if self._sparse:
            coo = matrix.to_sparse_coo().coalesce()
            with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                for name, csr in (("m", coo.to_sparse_csr()), ("mt", coo.t().coalesce().to_sparse_csr())):
                    register_csr(self, name, csr.crow_indices(), csr.col_indices(), csr.values())
        else:
            self.register_buffer("_m", torch.view_as_real(matrix).clone() if is_complex else matrix.clone())

    @property
    def matrix(self) -> Tensor:
        """The matrix (dense, or sparse CSR)."""
        if self._sparse:
            return csr_of(self, "m", (math.prod(self.out_shape), math.prod(self.in_shape)))
        return torch.view_as_complex(self._m) if self._is_complex else self._m

    def _A(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        flat = x.reshape(n, -1)  # (N, n)
        if self._sparse:
            y = (self.matrix @ flat.T).T  # (N, m)
        else:
            y = flat @ self.matrix.T
        return y.reshape(n, *self.out_shape)

    def _AH(self, y: Tensor) -> Tensor:
        n = y.shape[0]
        flat = y.reshape(n, -1)  # (N, m)
        if self._sparse:
            x = (csr_of(self, "mt", (flat.shape[1], math.prod(self.in_shape))) @ flat.T).T  # (N, n)
        else:
            x = flat @ self.matrix.conj()
        return x.reshape(n, *self.in_shape)
