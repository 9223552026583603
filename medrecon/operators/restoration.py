"""Image-restoration operators (denoising, inpainting, super-resolution, grayscale conversion).

The forward models of the restoration experiments of the Deep Image Prior paper (Ulyanov et al.,
CVPR 2018) and of GAN-prior papers (e.g. Bora et al., "Compressed sensing using generative
models", ICML 2017), as ``LinearOperator`` s like the CT and MRI ones:

* :class:`Denoising`: ``y = x`` (the noise is added to the measurements, not by the operator).
* :class:`Inpainting`: ``y = m * x`` for a 0/1 pixel mask ``m`` (missing pixels are zeros in ``y``);
  masks from :func:`center_block_mask` and :func:`random_pixel_mask`.
* :class:`Downsampling`: ``y = D_H x D_W^T``, separable anti-aliasing filter + decimation by an integer
  factor: ``"box"`` (the mean of each ``factor x factor`` block), ``"gaussian"``
  (sigma = (factor - 1) / 2, the anti-aliasing sigma of ``skimage.transform.resize``) or ``"lanczos"``
  (Lanczos-3 stretched by the factor, as in image resizing libraries). Weights are normalised to sum
  to 1 per output pixel, truncated at the border (so a constant image stays constant).
* :class:`Grayscale`: ``(3, H, W) -> (H, W)``, luma ``Y' = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import LinearOperator
from .generic import Identity

__all__ = [
    "Denoising",
    "Inpainting",
    "Downsampling",
    "Grayscale",
    "center_block_mask",
    "random_pixel_mask",
    "downsampling_matrix",
    "BT601_LUMA",
]

BT601_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights of R, G, B
_LANCZOS_A = 3  # Lanczos-3


class Denoising(Identity):
    """y = x on ``(B, C, *shape)`` (the identity; noise belongs to the data). Real or complex.

    >>> Denoising((4, 5)).out_shape
    (4, 5)
    """


def _as_mask(mask: Tensor) -> Tensor:
    if mask.is_complex():
        raise ValueError("an inpainting mask must be real (0/1 or weights in [0, 1])")
    return mask.detach().clone()


class Inpainting(LinearOperator):
    """y = m * x: keep the pixels where the mask ``m (*shape)`` is 1, zero the others.

    Self-adjoint (``m`` is real). ``complex=True`` for complex images.

    >>> op = Inpainting(center_block_mask((6, 6), 2))
    >>> op(torch.ones(1, 1, 6, 6))[0, 0, 2:4, 2:4].sum().item()
    0.0
    """

    def __init__(self, mask: Tensor, *, complex: bool = False, dtype: torch.dtype | None = None) -> None:
        mask = _as_mask(mask)
        dtype = dtype or (mask.dtype if mask.is_floating_point() else torch.float32)
        super().__init__(mask.shape, mask.shape, in_complex=complex, out_complex=complex, dtype=dtype)
        self.register_buffer("mask", mask.to(dtype))

    def _A(self, x: Tensor) -> Tensor:
        return self.mask * x

    _AH = _A

    def measurement_support(self) -> Tensor:
        """The kept pixels, ``mask != 0`` (bool, ``out_shape``)."""
        return self.mask != 0


def center_block_mask(
    shape: Sequence[int], block: int | Sequence[int], *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """A mask of ones with a missing (zero) ``block`` (int or (h, w)) in the centre of ``shape (H, W)``.

    >>> center_block_mask((4, 5), 2).int().tolist()
    [[1, 1, 1, 1, 1], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1], [1, 1, 1, 1, 1]]
    """
    h, w = (int(s) for s in shape)
    bh, bw = (int(block), int(block)) if isinstance(block, int) else (int(block[0]), int(block[1]))
    if not (0 <= bh <= h and 0 <= bw <= w):
        raise ValueError(f"block {(bh, bw)} does not fit in an image of shape {(h, w)}")
    mask = torch.ones(h, w, dtype=dtype)
    top, left = (h - bh) // 2, (w - bw) // 2
    mask[top : top + bh, left : left + bw] = 0
    return mask


def random_pixel_mask(
    shape: Sequence[int],
    keep_fraction: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A mask keeping each pixel independently with probability ``keep_fraction`` (the DIP paper's
    "inpainting of 50% missing pixels" is ``keep_fraction=0.5``)."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    u = torch.rand(tuple(int(s) for s in shape), generator=generator, dtype=torch.float64)
    return (u < keep_fraction).to(dtype)


def _kernel_weights(kind: str, t: Tensor, factor: int, sigma: float | None) -> Tensor:
    """Filter weights at offsets ``t`` (input pixels from the output pixel's centre, in input pixels)."""
    if kind == "box":
        # |t| <= (factor - 1) / 2 covers exactly the factor input pixels of a block.
        return (t.abs() <= (factor - 1) / 2 + 1e-9).to(t.dtype)
    if kind == "gaussian":
        s = sigma if sigma is not None else max((factor - 1) / 2, 1e-12)
        w = torch.exp(-0.5 * (t / s) ** 2)
        return torch.where(t.abs() <= 4 * s + 0.5, w, torch.zeros_like(w))  # truncated at 4 sigma
    if kind == "lanczos":
        u = t / factor
        w = torch.sinc(u) * torch.sinc(u / _LANCZOS_A)
        return torch.where(u.abs() < _LANCZOS_A, w, torch.zeros_like(w))
    raise ValueError(f"kernel must be 'box', 'gaussian' or 'lanczos', got {kind!r}")


def downsampling_matrix(
    n: int,
    factor: int,
    kernel: str = "box",
    *,
    sigma: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The ``(ceil(n / factor), n)`` 1-D filter-and-decimate matrix of :class:`Downsampling`.

    Output pixel ``i`` is centred at input coordinate ``(i + 1/2) factor - 1/2``; each row sums to 1.

    >>> downsampling_matrix(4, 2).tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    m = -(-n // factor)
    centres = (torch.arange(m, dtype=torch.float64) + 0.5) * factor - 0.5
    t = torch.arange(n, dtype=torch.float64)[None, :] - centres[:, None]  # (m, n)
    w = _kernel_weights(kernel, t, factor, sigma)
    sums = w.sum(1, keepdim=True)
    if bool((sums.abs() < 1e-12).any()):
        raise ValueError(
            f"the {kernel} kernel leaves an output pixel without weight (n={n}, factor={factor})"
        )
    return (w / sums).to(dtype)


class Downsampling(LinearOperator):
    """y = D_H x D_W^T: anti-aliasing filter and decimation, ``(H, W) -> (ceil(H/f), ceil(W/f))``.

    ``kernel``: ``"box"`` (block mean; the default, exact when ``f`` divides the size),
    ``"gaussian"`` (sigma = (f - 1)/2 input pixels unless ``sigma`` is given) or ``"lanczos"``
    (Lanczos-3, support 3f). The two 1-D matrices (:func:`downsampling_matrix`) are stored, so
    A and A^T are two small matmuls; real or complex images (``complex=True``).

    >>> op = Downsampling((4, 4), 2)
    >>> op(torch.arange(16.).reshape(1, 1, 4, 4)).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """

    def __init__(
        self,
        shape: Sequence[int],
        factor: int,
        kernel: str = "box",
        *,
        sigma: float | None = None,
        complex: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        h, w = (int(s) for s in shape)
        dh = downsampling_matrix(h, int(factor), kernel, sigma=sigma)
        dw = downsampling_matrix(w, int(factor), kernel, sigma=sigma)
        super().__init__(
            (h, w), (dh.shape[0], dw.shape[0]), in_complex=complex, out_complex=complex, dtype=dtype
        )
        self.factor = int(factor)
        self.kernel = kernel
        self.register_buffer("_dh", dh.to(self.real_dtype))
        self.register_buffer("_dw", dw.to(self.real_dtype))

    def _A(self, x: Tensor) -> Tensor:  # (N, H, W) -> (N, h, w)
        dh, dw = self._dh.to(x.dtype), self._dw.to(x.dtype)
        return dh @ x @ dw.T

    def _AH(self, y: Tensor) -> Tensor:  # (N, h, w) -> (N, H, W)
        dh, dw = self._dh.to(y.dtype), self._dw.to(y.dtype)
        return dh.T @ y @ dw


class Grayscale(LinearOperator):
    """y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601 luma): ``(3, H, W) -> (H, W)``.

    Colour images are ``(B, 1, 3, H, W)``; the adjoint puts ``w_c * y`` in each channel.

    >>> Grayscale((2, 2))(torch.ones(1, 1, 3, 2, 2)).sum().item()
    4.0
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        weights: Sequence[float] = BT601_LUMA,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        h, w = (int(s) for s in shape)
        if len(weights) != 3:
            raise ValueError(f"need 3 channel weights (R, G, B), got {len(weights)}")
        super().__init__((3, h, w), (h, w), dtype=dtype)
        self.register_buffer("weights", torch.tensor([float(v) for v in weights], dtype=self.real_dtype))

    def _A(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, H, W)
        return torch.einsum("c,nchw->nhw", self.weights.to(x.dtype), x)

    def _AH(self, y: Tensor) -> Tensor:  # (N, H, W) -> (N, 3, H, W)
        return self.weights.to(y.dtype)[None, :, None, None] * y[:, None]
