"""The discrete image gradient (forward differences, Neumann boundary) as a ``LinearOperator``.

``D x = (d_0 x, d_1 x)`` with ``(d_0 x)[i, j] = x[i+1, j] - x[i, j]`` for ``i < H-1`` and ``0`` on the
last row (Neumann: the image is continued by its boundary value), likewise ``d_1`` along columns.
The adjoint is minus the matching backward-difference divergence [Chambolle 2004, J. Math. Imaging
Vis. 20, eq. (2.1)-(2.2)]. ``||D||^2 <= 8`` in 2-D (each ``d_k`` has norm at most 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import LinearOperator

__all__ = ["FiniteDifference2D", "FINITE_DIFFERENCE_2D_NORM_BOUND"]

FINITE_DIFFERENCE_2D_NORM_BOUND = 8.0**0.5
"""sqrt(8): the standard bound on ||D|| for 2-D forward differences (Chambolle 2004, Thm. 3.1)."""


class FiniteDifference2D(LinearOperator):
    """x (B, C, H, W) -> D x (B, C, 2, H, W): forward differences along H (index 0) and W (index 1).

    Real or complex (``complex=True``); the last row / column of each difference is zero.

    >>> import torch
    >>> op = FiniteDifference2D((3, 4), dtype=torch.float64)
    >>> x = torch.arange(12.0, dtype=torch.float64).reshape(1, 1, 3, 4)
    >>> op(x)[0, 0, 1].tolist()[0]
    [1.0, 1.0, 1.0, 0.0]
    """

    def __init__(
        self, shape: Sequence[int], *, complex: bool = False, dtype: torch.dtype = torch.float32
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise ValueError(f"FiniteDifference2D needs an image shape (H, W), got {shape}")
        super().__init__(shape, (2, *shape), in_complex=complex, out_complex=complex, dtype=dtype)

    def _A(self, x: Tensor) -> Tensor:  # (N, H, W) -> (N, 2, H, W)
        y = x.new_zeros((x.shape[0], 2, *x.shape[1:]))
        y[:, 0, :-1, :] = x[:, 1:, :] - x[:, :-1, :]
        y[:, 1, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
        return y

    def _AH(self, y: Tensor) -> Tensor:  # (N, 2, H, W) -> (N, H, W), = -div y
        p, q = y[:, 0], y[:, 1]
        x = y.new_zeros((y.shape[0], *y.shape[2:]))
        x[:, :-1, :] -= p[:, :-1, :]
        x[:, 1:, :] += p[:, :-1, :]
        x[:, :, :-1] -= q[:, :, :-1]
        x[:, :, 1:] += q[:, :, :-1]
        return x
