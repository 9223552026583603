"""Cartesian MRI: masked, centred, orthonormal 2-D Fourier transforms, single- and multi-coil.

Shapes (the channel-axis convention of ``medrecon``: ``C = 1`` is carried through):

* image ``x``: ``(B, 1, H, W)`` complex (complex64 for a float32 operator, complex128 after
  ``op.to(torch.float64)``);
* single-coil k-space ``y = M F x``: ``(B, 1, H, W)``;
* multi-coil k-space ``y_c = M F (S_c x)``: ``(B, 1, coils, H, W)`` (the coil axis sits after the
  channel axis, so ``op.out_shape == (coils, H, W)``).

``F`` is fastMRI's ``fft2c``: ``fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two
axes (Zbontar et al., "fastMRI", arXiv:1811.08839, ``fastmri/fftc.py``), so the DC sample sits at
index ``(H // 2, W // 2)`` and ``||F x|| = ||x||``. ``M`` is the sampling mask, real (0/1), given
as ``(H, W)`` or as a column mask ``(W,)`` (fastMRI's masks select phase-encoding columns); any
shape that broadcasts to ``(H, W)`` works. The adjoint is ``A^H y = sum_c conj(S_c) F^H (M y_c)``.

Implementation: the shifts are folded into unit-modulus phase factors,
``fft2c(x) = D_out * fft2(D_in * x)`` with ``D_in[n] = exp(2 pi i h n / N)`` and
``D_out[k] = exp(2 pi i (k - h) h / N)``, ``h = N // 2`` (the shift theorem; for even ``N`` these
are ``+-1`` checkerboards). ``D_in`` is folded into the coil maps and ``D_out`` into the mask, so a
forward pass is one pointwise product, one in-place FFT and one in-place masking, with no
``roll`` copies. The fused factors are cached per device/dtype and rebuilt when a buffer changes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import LinearOperator, complex_dtype_of

__all__ = ["SingleCoilMRI", "MultiCoilMRI", "fft2c", "ifft2c"]

_FFT_DIMS = (-2, -1)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two axes (as ``fastmri.fft2c`` on complex tensors)."""
    x = torch.fft.ifftshift(x, dim=_FFT_DIMS)
    x = torch.fft.fft2(x, dim=_FFT_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_FFT_DIMS)


def ifft2c(y: Tensor) -> Tensor:
    """Centred orthonormal inverse 2-D FFT over the last two axes (as ``fastmri.ifft2c``)."""
    y = torch.fft.ifftshift(y, dim=_FFT_DIMS)
    y = torch.fft.ifft2(y, dim=_FFT_DIMS, norm="ortho")
    return torch.fft.fftshift(y, dim=_FFT_DIMS)


def _shift_phases(n: int) -> tuple[Tensor, Tensor]:
    """(D_in, D_out) of length n in complex128: fftshift(fft(ifftshift(x))) = D_out * fft(D_in * x)."""
    h = n // 2
    idx = torch.arange(n, dtype=torch.float64)
    d_in = torch.polar(torch.ones(n, dtype=torch.float64), 2 * math.pi * ((h * idx) % n) / n)
    d_out = torch.polar(torch.ones(n, dtype=torch.float64), 2 * math.pi * ((h * (idx - h)) % n) / n)
    if n % 2 == 0:  # exactly +-1: no rounding at all
        d_in, d_out = d_in.real.round().to(torch.complex128), d_out.real.round().to(torch.complex128)
    return d_in, d_out


def _as_mask(mask: Tensor, shape: tuple[int, int] | None, name: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name}: the mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_complex():
        raise ValueError(f"{name}: the mask must be real (0/1 sampling pattern), got {mask.dtype}")
    if mask.dim() not in (1, 2):
        raise ValueError(
            f"{name}: the mask must have shape (H, W) or (W,) (columns), got {tuple(mask.shape)}"
        )
    if shape is None:
        if mask.dim() != 2:
            raise ValueError(f"{name}: a column mask (W,) needs image_shape=(H, W)")
        shape = tuple(mask.shape)
    try:
        full = torch.broadcast_to(mask, shape)
    except RuntimeError:
        raise ValueError(
            f"{name}: mask of shape {tuple(mask.shape)} does not fit images of shape {shape}"
        ) from None
    full = full.to(torch.float64 if mask.dtype == torch.float64 else torch.float32)
    if not bool(torch.isfinite(full).all()):
        raise ValueError(f"{name}: the mask contains NaN or inf")
    return full.clone()


class _CartesianMRI(LinearOperator):
    """Shared machinery: the mask buffer and the cached fused phase factors."""

    def __init__(
        self, mask: Tensor, image_shape: tuple[int, int], out_shape: tuple[int, ...], dtype: torch.dtype
    ) -> None:
        super().__init__(image_shape, out_shape, in_complex=True, out_complex=True, dtype=dtype)
        self.register_buffer("mask", mask.to(dtype))  # (H, W) real, moves with .to()
        self._fused: dict = {}

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.in_shape[-2], self.in_shape[-1]

    def _apply(self, fn, recurse: bool = True):
        self._fused = {}
        return super()._apply(fn, recurse)

    def _buffers_key(self) -> tuple:
        bufs = [b for b in (self.mask, getattr(self, "_maps", None)) if b is not None]
        return tuple((b.data_ptr(), b._version) for b in bufs)

    def _factors(self) -> tuple[Tensor, Tensor]:
        """(in_factor, out_factor): image-side (maps * D_in, or D_in) and k-space side (mask * D_out)."""
        key = self._buffers_key()
        if self._fused.get("key") != key:
            h, w = self.image_shape
            din_h, dout_h = _shift_phases(h)
            din_w, dout_w = _shift_phases(w)
            cdtype = complex_dtype_of(self.real_dtype)
            d_in = (din_h[:, None] * din_w[None, :]).to(self.device)  # (H, W) complex128
            d_out = (dout_h[:, None] * dout_w[None, :]).to(self.device)
            in_factor = self._image_factor(d_in).to(cdtype).contiguous()
            out_factor = (self.mask.to(torch.float64) * d_out).to(cdtype).contiguous()
            self._fused = {"key": key, "in": in_factor, "out": out_factor}
        return self._fused["in"], self._fused["out"]

    def _image_factor(self, d_in: Tensor) -> Tensor:
        return d_in

    def _check_y(self, y: Tensor) -> None:
        self._check(y, self.out_shape, self.out_dtype, "k-space y")

    def measurement_support(self) -> Tensor:
        """The sampled k-space: ``mask != 0`` broadcast to ``out_shape`` (every coil), bool."""
        return (self.mask != 0).expand(self.out_shape).clone()

    def direct(self, y: Tensor) -> Tensor:
        """x = the zero-filled image (:meth:`zero_filled`)."""
        return self.zero_filled(y)

    def zero_filled(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class SingleCoilMRI(_CartesianMRI):
    """y = M F x.  x: (B, 1, H, W) complex image -> y: (B, 1, H, W) complex k-space.

    ``F`` is fastMRI's centred orthonormal ``fft2c``; ``M`` the real sampling mask (``(H, W)``, or
    a column mask ``(W,)`` together with ``image_shape=(H, W)``). The operator's precision follows
    the mask's dtype (float32 unless the mask is float64); ``.to(torch.float64)`` makes it
    complex128. With a full mask ``||A|| = 1``.

    >>> import torch
    >>> op = SingleCoilMRI(torch.ones(4, 6))
    >>> x = torch.randn(2, 1, 4, 6, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(op.adjoint(op(x)), x, atol=1e-6))
    True
    """

    def __init__(self, mask: Tensor, *, image_shape: tuple[int, int] | None = None) -> None:
        full = _as_mask(mask, None if image_shape is None else tuple(image_shape), "SingleCoilMRI")
        shape = tuple(full.shape)
        super().__init__(full, shape, shape, full.dtype)

    def _A(self, x: Tensor) -> Tensor:  # (N, H, W) -> (N, H, W)
        d_in, m_out = self._factors()
        y = torch.fft.fft2(x * d_in, dim=_FFT_DIMS, norm="ortho")
        return y.mul_(m_out)

    def _AH(self, y: Tensor) -> Tensor:  # (N, H, W) -> (N, H, W)
        d_in, m_out = self._factors()
        x = torch.fft.ifft2(y * m_out.conj(), dim=_FFT_DIMS, norm="ortho")
        return x.mul_(d_in.conj())

    def zero_filled(self, y: Tensor) -> Tensor:
        """x_zf = A^H y (fastMRI's single-coil zero-filled image, complex): (B, 1, H, W) -> (B, 1, H, W)."""
        return self.adjoint(y)


class MultiCoilMRI(_CartesianMRI):
    """y_c = M F (S_c x).  x: (B, 1, H, W) complex -> y: (B, 1, coils, H, W) complex k-space.

    Args:
        mask: real sampling mask ``(H, W)`` or column mask ``(W,)``, shared by all coils.
        sensitivity_maps: ``(coils, H, W)`` complex coil sensitivities ``S_c``, shared by the batch
            (one operator per slice when slices have their own maps). Stored as a real view, so
            ``.to(torch.float64)`` gives a complex128 operator; the precision follows the maps.

    With a full mask and maps normalised to ``sum_c |S_c|^2 = 1`` (as ``simulate_multicoil``
    returns them), ``A^H A = I`` and ``||A|| = 1``.
    """

    def __init__(self, mask: Tensor, sensitivity_maps: Tensor) -> None:
        if not isinstance(sensitivity_maps, Tensor) or sensitivity_maps.dim() != 3:
            shape = (
                tuple(sensitivity_maps.shape)
                if isinstance(sensitivity_maps, Tensor)
                else type(sensitivity_maps)
            )
            raise ValueError(f"MultiCoilMRI: sensitivity_maps must have shape (coils, H, W), got {shape}")
        real_dtype = sensitivity_maps.dtype if sensitivity_maps.is_floating_point() else torch.float32
        maps = (
            sensitivity_maps
            if sensitivity_maps.is_complex()
            else sensitivity_maps.to(complex_dtype_of(real_dtype))
        )
        if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
            raise ValueError("MultiCoilMRI: sensitivity_maps contain NaN or inf")
        coils, h, w = maps.shape
        full = _as_mask(mask, (h, w), "MultiCoilMRI")
        real = torch.view_as_real(maps).clone()  # (coils, H, W, 2)
        super().__init__(full, (h, w), (coils, h, w), real.dtype)
        self.register_buffer("_maps", real)

    @property
    def sensitivity_maps(self) -> Tensor:
        """``(coils, H, W)`` complex view of the stored maps."""
        return torch.view_as_complex(self._maps)

    @property
    def n_coils(self) -> int:
        return self.out_shape[0]

    def _image_factor(self, d_in: Tensor) -> Tensor:
        return self.sensitivity_maps.to(torch.complex128) * d_in  # (coils, H, W)

    def _A(self, x: Tensor) -> Tensor:  # (N, H, W) -> (N, coils, H, W)
        s_in, m_out = self._factors()
        y = torch.fft.fft2(x[:, None] * s_in, dim=_FFT_DIMS, norm="ortho")
        return y.mul_(m_out)

    def _AH(self, y: Tensor) -> Tensor:  # (N, coils, H, W) -> (N, H, W)
        s_in, m_out = self._factors()
        z = torch.fft.ifft2(y * m_out.conj(), dim=_FFT_DIMS, norm="ortho")  # (N, coils, H, W)
        return torch.linalg.vecdot(s_in, z, dim=1)  # sum_c conj(S_c D_in) z_c

    def zero_filled(self, y: Tensor) -> Tensor:
        """fastMRI's zero-filled image: sqrt(sum_c |F^H M y_c|^2), ``(B, 1, coils, H, W) -> (B, 1, H, W)``.

        Root-sum-of-squares of the coil images of the masked k-space (what ``fastmri.rss`` of
        ``fastmri.ifft2c`` gives for masked k-space), returned as a complex tensor with zero
        phase. Differentiable through ordinary autograd.
        """
        self._check_y(y)
        _, m_out = self._factors()
        z = torch.fft.ifft2(y * m_out.conj(), dim=_FFT_DIMS, norm="ortho")  # |D_in| = 1: RSS needs no shift
        rss = torch.linalg.vector_norm(z, dim=2)  # (B, 1, H, W) real
        return rss.to(y.dtype)

    def extra_repr(self) -> str:
        return f"coils={self.n_coils}, " + super().extra_repr()
