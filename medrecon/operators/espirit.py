"""ESPIRiT coil sensitivities (Uecker et al., "ESPIRiT: an eigenvalue approach to autocalibrating
parallel MRI: where SENSE meets GRAPPA", MRM 71:990-1001, 2014).

The steps, for k-space ``y`` of shape ``(coils, H, W)`` whose centre (the auto-calibration, ACS,
region) is fully sampled:

1. **Calibration matrix.** Every ``k x k`` block (``k = kernel_size``, 6 as in the paper, smaller
   when the calibration region has fewer than 12 columns) of the
   calibration region, over all coils, is one row of length ``coils * k * k``.
2. **Signal subspace and null space.** Its SVD ``U S V^H`` (computed as the eigen-decomposition of the
   ``coils k^2``-square Gram matrix, in complex128): the right singular vectors with
   ``s > kernel_threshold * s_max`` span the signal subspace ``V_par``; the rest is the null space (the
   GRAPPA-like k-space relations that every block of fully sampled data satisfies). Keeping the
   projector ``P = V_par V_par^H`` and dropping the null space is the same thing.
3. **Per-pixel eigen-decomposition.** In image space the projector becomes, at each pixel ``r``,
   the ``coils x coils`` Hermitian matrix ``G(r) = (1/k^2) sum_j a_j(r) a_j(r)^H`` with ``a_j`` the
   inverse DFT of kernel ``j`` (``(I x e_r)^H P (I x e_r) / k^2`` with ``e_r`` the ``k x k`` Fourier
   vector of pixel ``r``). Sensitivities ``S(r)`` satisfy ``G(r) S(r) = S(r)``: the maps are the
   eigenvector of eigenvalue 1. ``G`` has only ``2k - 1`` frequencies per axis, so it is computed
   exactly from the ``(2k - 1)^2`` cross-correlations of the kernels (not one FFT per kernel) and
   evaluated row block by row block; power iterations (or ``torch.linalg.eigh``) give its top
   eigenpair per pixel.
4. **Crop.** Where the top eigenvalue is below ``crop`` (outside the object, and in signal voids
   inside it: no signal, no sensitivity information) the maps are zero.

Only the first set of maps (the top eigenvector) is returned. Eigenvectors have a free phase per
pixel: ``phase="image"`` (default) fixes it so that the coil combination ``sum_c conj(S_c) x_c`` of the
low-resolution ACS image is real and positive (the maps then carry the smooth low-resolution phase of
the image, as the low-resolution estimator's maps do, and a SENSE image is close to real and
non-negative where the image phase is smooth); ``phase="first-coil"`` makes coil 0 real and positive
(sigpy's convention). Either way the maps are unit-norm per pixel inside the crop.

The defaults (kernel 6, singular-value threshold 0.02, crop 0.95) are those of sigpy's
``sigpy.mri.app.EspiritCalib``, against which ``tests/test_espirit.py`` checks this module.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from .masks import acs_columns

__all__ = [
    "ESPIRIT_CROP",
    "ESPIRIT_KERNEL_SIZE",
    "ESPIRIT_POWER_ITER",
    "ESPIRIT_THRESHOLD",
    "acs_lowres_images",
    "acs_slice",
    "calibration_region",
    "espirit_kernels",
    "espirit_maps",
]

#: kernel width of the calibration blocks (Uecker et al. 2014; sigpy's default).
ESPIRIT_KERNEL_SIZE = 6
#: singular values kept: ``s > 0.02 s_max`` (sigpy ``EspiritCalib(thresh=0.02)``).
ESPIRIT_THRESHOLD = 0.02
#: maps are zero where the top eigenvalue is below 0.95 (sigpy ``EspiritCalib(crop=0.95)``).
ESPIRIT_CROP = 0.95
#: power iterations for the top eigenpair per pixel (sigpy runs up to 100 from a constant vector;
#: starting from a column of G, 10 reach float32 precision when the eigenvalue gap is 3x, as measured
#: inside the object on simulated 15-coil data).
ESPIRIT_POWER_ITER = 10
#: minimum calibration rows along the fully sampled readout (sigpy's default calibration width).
MIN_CALIB_ROWS = 24
#: G(r) is evaluated for this many pixels at a time (about 40 MB of complex64 for 15 coils).
_PIXELS_PER_BLOCK = 1 << 14


def _check_kspace(kspace: Tensor, name: str) -> None:
    if not isinstance(kspace, Tensor) or not kspace.is_complex() or kspace.dim() not in (3, 5):
        shape = tuple(kspace.shape) if isinstance(kspace, Tensor) else type(kspace).__name__
        raise ValueError(f"{name}: kspace must be complex (coils, H, W) or (B, 1, coils, H, W), got {shape}")


def acs_slice(width: int, mask: Tensor | None = None, num_low_frequencies: int | None = None) -> slice:
    """The ACS columns of a k-space of ``width`` columns: the fully sampled centre of ``mask`` (``(H, W)``
    or ``(W,)``), or ``num_low_frequencies`` columns centred as fastMRI centres them. Give exactly one."""
    if (mask is None) == (num_low_frequencies is None):
        raise ValueError("give exactly one of mask or num_low_frequencies (the ACS region)")
    if mask is not None:
        if mask.shape[-1] != width:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit k-space with {width} columns")
        return acs_columns(mask)
    if not 0 < num_low_frequencies <= width:
        raise ValueError(f"num_low_frequencies must be in [1, {width}], got {num_low_frequencies}")
    lo = (width - num_low_frequencies + 1) // 2
    return slice(lo, lo + num_low_frequencies)


def calibration_region(
    kspace: Tensor,
    mask: Tensor | None = None,
    *,
    num_low_frequencies: int | None = None,
    calib_size: tuple[int, int] | None = None,
) -> Tensor:
    """The fully sampled centre block ``(..., coils, rows, cols)`` of ``kspace`` ``(..., coils, H, W)``.

    Columns: the ACS columns of ``mask`` (or ``num_low_frequencies`` columns centred as fastMRI
    centres them), or ``calib_size[1]`` centred columns. Rows (the readout, always fully sampled):
    ``calib_size[0]``, by default ``max(24, round(cols * H / W))`` capped at ``H``, which gives the
    readout the same resolution relative to its (oversampled) field of view as the phase encodes.
    """
    h, w = kspace.shape[-2:]
    if calib_size is not None:
        ch, cw = (int(v) for v in calib_size)
        if not (0 < ch <= h and 0 < cw <= w):
            raise ValueError(f"calib_size must be within the k-space size {(h, w)}, got {tuple(calib_size)}")
        cols = slice(w // 2 - cw // 2, w // 2 - cw // 2 + cw)
        if mask is not None:
            acs = acs_columns(mask)
            if cols.start < acs.start or cols.stop > acs.stop:
                raise ValueError(
                    f"calib_size {tuple(calib_size)} is wider than the mask's fully sampled "
                    f"centre ({acs.stop - acs.start} columns)"
                )
    else:
        cols = acs_slice(w, mask, num_low_frequencies)
        cw = cols.stop - cols.start
        ch = min(h, max(MIN_CALIB_ROWS, round(cw * h / w)))
    r0 = h // 2 - ch // 2
    return kspace[..., r0 : r0 + ch, cols]


def espirit_kernels(
    calib: Tensor, kernel_size: int = ESPIRIT_KERNEL_SIZE, threshold: float = ESPIRIT_THRESHOLD
) -> Tensor:
    """Signal-subspace kernels ``(n_kernels, coils, k, k)`` of a calibration block ``(coils, rows, cols)``.

    The rows of ``V^H`` (SVD of the calibration matrix) whose singular value exceeds
    ``threshold * s_max``; orthonormal as vectors of length ``coils * k * k``. Computed in complex128.
    """
    coils, ch, cw = calib.shape
    k = int(kernel_size)
    if k < 1 or ch < k or cw < k:
        raise ValueError(
            f"ESPIRiT: calibration region {ch}x{cw} is smaller than the kernel {k}x{k}; "
            "sample more centre (ACS) columns or use a smaller kernel_size"
        )
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"ESPIRiT: threshold must be in [0, 1), got {threshold}")
    blocks = calib.to(torch.complex128).unfold(1, k, 1).unfold(2, k, 1)  # (coils, ch-k+1, cw-k+1, k, k)
    mat = blocks.permute(1, 2, 0, 3, 4).reshape(-1, coils * k * k)  # one block per row
    # right singular vectors and s^2 from the Gram matrix (coils k^2 square; cheaper than the SVD
    # of the tall matrix, and exact enough in complex128 for s / s_max down to 1e-6)
    s2, v = torch.linalg.eigh(mat.mH @ mat)  # ascending
    if float(s2[-1]) <= 0.0:
        raise ValueError("ESPIRiT: the calibration region is all zeros")
    keep = s2 > (threshold**2) * s2[-1]
    return v[:, keep].flip(-1).mT.conj().reshape(-1, coils, k, k)  # rows of V^H, largest first


def _kernel_correlations(kernels: Tensor) -> Tensor:
    """``C[c, d, a, b] = sum_j sum_kappa v_jc(kappa) conj(v_jd(kappa - delta))``, delta = (a, b) - (k - 1).

    ``(coils, coils, 2k-1, 2k-1)``: the linear cross-correlations of the kernels, by FFTs of size
    ``2k - 1`` (large enough that the circular correlation does not wrap).
    """
    k = kernels.shape[-1]
    n = 2 * k - 1
    vf = torch.fft.fft2(kernels, s=(n, n))  # (j, coils, n, n)
    cf = torch.einsum("jcuv,jduv->cduv", vf, vf.conj())
    corr = torch.fft.ifft2(cf)  # index delta mod n
    return torch.roll(corr, shifts=(k - 1, k - 1), dims=(-2, -1))  # index a <-> delta = a - (k - 1)


def _fourier_rows(n: int, k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``E[a, m] = exp(2 pi i (a - k + 1)(m - n // 2) / n)``: ``(2k-1, n)``, pixel m at position m - n//2."""
    delta = torch.arange(2 * k - 1, dtype=torch.float64) - (k - 1)
    pos = torch.arange(n, dtype=torch.float64) - n // 2
    angle = 2 * math.pi * torch.remainder(delta[:, None] * pos[None, :], n) / n
    return torch.polar(torch.ones_like(angle), angle).to(device=device, dtype=dtype)


def _top_eigenpairs(
    corr: Tensor, shape: tuple[int, int], k: int, dtype: torch.dtype, n_power_iter: int | None, crop: float
) -> tuple[Tensor, Tensor]:
    """Top eigenvalue ``(H, W)`` and unit eigenvector ``(coils, H, W)`` of ``G(r)`` at every pixel.

    ``n_power_iter=None``: ``torch.linalg.eigh`` (exact). An integer: that many power iterations
    started from the column of ``G`` with the largest diagonal entry (already close to the top
    eigenvector when ``G`` is dominated by it), eigenvalue by the Rayleigh quotient. Inside the
    object the second eigenvalue is typically a third of the first, so 10 iterations leave an error
    near 0.3^20 in the eigenvalue; eigh costs about 5 power iterations' worth more at 15 coils.
    With power iterations, pixels where ``trace G(r) < crop`` (which bounds the top eigenvalue) are
    skipped: their eigenvalue is returned as 0 and their vector as 0.
    """
    h, w = shape
    coils = corr.shape[0]
    ey = _fourier_rows(h, k, dtype, corr.device)  # (2k-1, H)
    ex = _fourier_rows(w, k, dtype, corr.device)  # (2k-1, W)
    half = torch.einsum("cdab,bx->xcda", corr.to(dtype), ex) / (k * k)  # (W, c, d, 2k-1)
    values = torch.empty((h, w), dtype=ey.real.dtype, device=corr.device)
    vectors = torch.empty((h, w, coils), dtype=dtype, device=corr.device)
    rows = max(1, _PIXELS_PER_BLOCK // w)
    for r0 in range(0, h, rows):
        g = torch.einsum("xcda,ay->yxcd", half, ey[:, r0 : r0 + rows])  # (rows, W, coils, coils) Hermitian
        if n_power_iter is None:
            lam, vec = torch.linalg.eigh(g)  # ascending
            values[r0 : r0 + rows], vectors[r0 : r0 + rows] = lam[..., -1], vec[..., -1]
            continue
        g = g.reshape(-1, coils, coils)  # (N, c, d)
        lam = torch.zeros(g.shape[0], dtype=values.dtype, device=g.device)
        vec = torch.zeros((g.shape[0], coils), dtype=dtype, device=g.device)
        # G is positive semi-definite, so lambda_max <= trace(G): where the trace is below the crop the
        # pixel is cropped whatever its eigenvector (about half the pixels of a readout-oversampled FOV)
        diag = torch.diagonal(g, dim1=-2, dim2=-1).real  # (N, c)
        todo = torch.nonzero(diag.sum(-1) >= crop).squeeze(-1)
        gs = g[todo]
        x = torch.gather(
            gs, 2, diag[todo].argmax(-1)[:, None, None].expand(-1, coils, 1)
        )  # (n, c, 1): a column
        for _ in range(n_power_iter):
            x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
            x = torch.bmm(gs, x)
        x = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(torch.finfo(values.dtype).tiny)
        lam[todo] = torch.linalg.vecdot(x, torch.bmm(gs, x), dim=1).real[:, 0]  # Rayleigh quotient
        vec[todo] = x[..., 0]
        values[r0 : r0 + rows] = lam.reshape(-1, w)
        vectors[r0 : r0 + rows] = vec.reshape(-1, w, coils)
    return values, vectors.permute(2, 0, 1)


def acs_lowres_images(kspace: Tensor, cols: slice) -> Tensor:
    """Coil images ``(..., coils, H, W)`` of the ACS columns ``cols`` of ``kspace``, Hann-tapered (low resolution)."""
    from .mri import ifft2c

    w = kspace.shape[-1]
    n_acs = cols.stop - cols.start
    window = torch.zeros(w, dtype=torch.float64)
    # Hann taper over the ACS columns (endpoints excluded so every ACS column has weight > 0)
    window[cols] = torch.hann_window(n_acs + 2, periodic=False, dtype=torch.float64)[1:-1]
    return ifft2c(kspace * window.to(device=kspace.device, dtype=kspace.real.dtype))


def _phase_reference_columns(
    w: int, mask: Tensor | None, num_low_frequencies: int | None, calib_size: tuple[int, int] | None
) -> slice:
    if mask is not None or num_low_frequencies is not None:
        return acs_slice(w, mask, num_low_frequencies)
    cw = int(calib_size[1])
    return slice(w // 2 - cw // 2, w // 2 - cw // 2 + cw)


def espirit_maps(
    kspace: Tensor,
    mask: Tensor | None = None,
    *,
    num_low_frequencies: int | None = None,
    calib_size: tuple[int, int] | None = None,
    kernel_size: int | None = None,
    kernel_threshold: float = ESPIRIT_THRESHOLD,
    crop: float = ESPIRIT_CROP,
    phase: Literal["image", "first-coil"] = "image",
    n_power_iter: int | None = ESPIRIT_POWER_ITER,
    return_eigenvalues: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """ESPIRiT maps ``S (coils, H, W)`` from the fully sampled centre of ``kspace (coils, H, W)``.

    Args:
        kspace: ``(coils, H, W)`` or ``(B, 1, coils, H, W)`` complex k-space, masked or not (only the
            calibration region is read); the last axis holds the phase encodes.
        mask: ``(H, W)`` or ``(W,)``; its fully sampled centre columns are the calibration columns.
        num_low_frequencies: instead of ``mask``: the number of centre columns, centred as fastMRI
            centres them.
        calib_size: ``(rows, cols)`` of a centred calibration block instead (must be fully sampled).
            Without it the rows default as in :func:`calibration_region`.
        kernel_size: the block width ``k``; default ``min(6, cols // 2)`` for a calibration block
            of ``cols`` columns (ESPIRiT needs many shifts of the kernel inside the block: with 8
            ACS columns a 6-wide kernel has 3 and the maps fail, a 4-wide one has 5 and works).
        kernel_threshold, crop: see the module doc (defaults 0.02, 0.95); ``kernel_threshold``
            keeps the singular values above ``kernel_threshold * s_max``.
        phase: ``"image"`` or ``"first-coil"`` (module doc).
        n_power_iter: power iterations per pixel for the top eigenpair; None: exact ``eigh``.
        return_eigenvalues: also return the top eigenvalue per pixel, ``(H, W)`` (``(B, 1, H, W)``);
            with power iterations it is 0 where ``trace G < crop`` guarantees the crop.

    Returns:
        the maps, with the shape and complex dtype of ``kspace``; unit norm over the coils where
        the eigenvalue exceeds ``crop``, zero elsewhere.

    >>> import torch
    >>> from medrecon.operators.coils import simulate_multicoil
    >>> yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    >>> kspace, true_maps = simulate_multicoil(((yy**2 + xx**2) < 0.6).double(), 4)
    >>> maps = espirit_maps(kspace, num_low_frequencies=16)
    >>> match = (maps.conj() * true_maps).sum(0).abs()  # |<S_est, S_true>| per pixel, 1 = equal up to phase
    >>> bool(match[8:24, 8:24].min() > 0.99)
    True
    """
    _check_kspace(kspace, "espirit_maps")
    if phase not in ("image", "first-coil"):
        raise ValueError(f"espirit_maps: phase must be 'image' or 'first-coil', got {phase!r}")
    if not 0.0 <= crop < 1.0:
        raise ValueError(f"espirit_maps: crop must be in [0, 1), got {crop}")
    if n_power_iter is not None and n_power_iter < 1:
        raise ValueError(f"espirit_maps: n_power_iter must be >= 1 or None, got {n_power_iter}")
    if kspace.dim() == 5:
        outs = [
            espirit_maps(
                kspace[b, 0],
                mask,
                num_low_frequencies=num_low_frequencies,
                calib_size=calib_size,
                kernel_size=kernel_size,
                kernel_threshold=kernel_threshold,
                crop=crop,
                phase=phase,
                n_power_iter=n_power_iter,
                return_eigenvalues=True,
            )
            for b in range(kspace.shape[0])
        ]
        maps = torch.stack([m for m, _ in outs])[:, None]  # (B, 1, coils, H, W)
        values = torch.stack([v for _, v in outs])[:, None]  # (B, 1, H, W)
        return (maps, values) if return_eigenvalues else maps
    h, w = kspace.shape[-2:]
    calib = calibration_region(kspace, mask, num_low_frequencies=num_low_frequencies, calib_size=calib_size)
    if kernel_size is None:
        kernel_size = max(1, min(ESPIRIT_KERNEL_SIZE, calib.shape[-1] // 2, calib.shape[-2] // 2))
    kernels = espirit_kernels(calib, kernel_size, kernel_threshold)
    corr = _kernel_correlations(kernels)  # complex128
    values, maps = _top_eigenpairs(corr, (h, w), int(kernel_size), kspace.dtype, n_power_iter, crop)
    if phase == "first-coil":
        ref = maps[0].conj()  # S_0 * ref / |ref| = |S_0|
    else:
        low = acs_lowres_images(kspace, _phase_reference_columns(w, mask, num_low_frequencies, calib_size))
        ref = torch.linalg.vecdot(maps, low, dim=0)  # z = sum_c conj(S_c) x_c; S * z / |z| makes it |z|
    unit = torch.where(
        ref.abs() > 0, ref / ref.abs().clamp_min(torch.finfo(values.dtype).tiny), torch.ones_like(ref)
    )
    maps = maps * unit[None] * (values > crop)[None]
    return (maps, values) if return_eigenvalues else maps
