"""Coil sensitivities: smooth simulated receive coils, and estimation from auto-calibration data.

``simulate_multicoil(image, n_coils)`` turns any image into fully sampled multi-coil k-space
``y_c = F (S_c x) + noise`` with smooth maps normalised to ``sum_c |S_c|^2 = 1``.

``estimate_sensitivities(kspace, mask)`` is the low-resolution ACS method (as in the SENSE
calibration of Pruessmann et al., MRM 42:952, 1999, and the ``SensitivityModel`` input of
fastMRI's E2E-VarNet, Sriram et al. 2020): keep only the fully sampled centre columns, taper them
with a Hann window, inverse-FFT per coil, divide by the root-sum-of-squares and zero the maps where
the RSS is below ``threshold * max``. It recovers ``S_c`` times the phase of the image (a real
positive image gives the maps themselves); ESPIRiT is not implemented.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import complex_dtype_of
from .masks import acs_columns
from .mri import fft2c, ifft2c

__all__ = ["coil_maps", "simulate_multicoil", "estimate_sensitivities", "rss"]

#: coil centres sit on a circle of this radius, in units of half the field of view.
COIL_RADIUS = 1.3
#: width of a coil's magnitude profile (1 + (d / width)^2)^(-3/2), in units of half the FOV:
#: the on-axis field of a circular loop of radius ``width`` at distance d (Biot-Savart).
COIL_WIDTH = 0.9
#: phase variation across the FOV, radians per half-FOV along each coil's tangent.
COIL_PHASE_SLOPE = 0.5 * math.pi


def rss(coil_images: Tensor, dim: int = -3) -> Tensor:
    """Root-sum-of-squares over the coil axis: sqrt(sum_c |x_c|^2) (real)."""
    return torch.linalg.vector_norm(coil_images, dim=dim)


def coil_maps(shape: tuple[int, int], n_coils: int, *, radius: float = COIL_RADIUS, width: float = COIL_WIDTH,
              phase_slope: float = COIL_PHASE_SLOPE, dtype: torch.dtype = torch.complex64) -> Tensor:
    """``(n_coils, H, W)`` smooth coil sensitivities with ``sum_c |S_c|^2 = 1`` at every pixel.

    Coil ``c`` sits at angle ``2 pi c / n_coils`` on a circle of ``radius`` (half-FOV units) around
    the image centre; its magnitude is ``(1 + (d / width)^2)^(-3/2)`` (d: distance to the coil) and
    its phase ``2 pi c / n_coils + phase_slope * <r - r_c, t_c>`` (t_c: the coil's tangent), a
    smooth phase that differs between coils. Deterministic.
    """
    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    h, w = shape
    y = (torch.arange(h, dtype=torch.float64) - (h - 1) / 2) / (h / 2)
    x = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2) / (w / 2)
    yy, xx = torch.meshgrid(y, x, indexing="ij")  # (H, W)
    theta = 2 * math.pi * torch.arange(n_coils, dtype=torch.float64) / n_coils + math.pi / 4
    cy, cx = radius * torch.sin(theta), radius * torch.cos(theta)  # (coils,)
    dy, dx = yy[None] - cy[:, None, None], xx[None] - cx[:, None, None]  # (coils, H, W)
    magnitude = (1 + (dy**2 + dx**2) / width**2) ** -1.5
    tangent = dx * -torch.sin(theta)[:, None, None] + dy * torch.cos(theta)[:, None, None]
    phase = theta[:, None, None] + phase_slope * tangent
    maps = torch.polar(magnitude, phase)
    maps = maps / rss(maps, dim=0)
    return maps.to(dtype)


def simulate_multicoil(image: Tensor, n_coils: int, *, noise: float = 0.0,
                       generator: torch.Generator | None = None, maps: Tensor | None = None,
                       **map_options) -> tuple[Tensor, Tensor]:
    """Fully sampled multi-coil k-space ``y_c = fft2c(S_c x) + n``: returns ``(kspace, maps)``.

    Args:
        image: ``(H, W)`` or ``(B, 1, H, W)``, real or complex (real images become complex).
        n_coils: number of coils.
        noise: standard deviation of the complex white Gaussian noise per k-space sample (real
            and imaginary parts each ``noise / sqrt(2)``). ``fft2c`` is orthonormal, so this is
            also the noise level per pixel of each coil image, in the units of ``image``.
        generator: draws the noise (torch's default generator when None).
        maps: ``(n_coils, H, W)`` to use instead of ``coil_maps(...)``.
        **map_options: passed to ``coil_maps`` (radius, width, phase_slope).

    Returns:
        kspace ``(B, 1, n_coils, H, W)`` (``(n_coils, H, W)`` for a ``(H, W)`` image), and the maps
        ``(n_coils, H, W)``; both of the image's complex dtype (complex64 for float32 images).
    """
    if not isinstance(image, Tensor) or image.dim() not in (2, 4) or (image.dim() == 4 and image.shape[1] != 1):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"simulate_multicoil: image must be (H, W) or (B, 1, H, W), got {shape}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    cdtype = image.dtype if image.is_complex() else complex_dtype_of(
        image.dtype if image.is_floating_point() else torch.float32)
    x = image.to(cdtype)
    h, w = x.shape[-2:]
    if maps is None:
        maps = coil_maps((h, w), n_coils, dtype=cdtype, **map_options)
    elif tuple(maps.shape) != (n_coils, h, w):
        raise ValueError(f"maps must have shape {(n_coils, h, w)}, got {tuple(maps.shape)}")
    maps = maps.to(device=x.device, dtype=cdtype)
    batched = x.dim() == 4
    xb = x if batched else x[None, None]
    kspace = fft2c(xb[:, :, None] * maps)  # (B, 1, coils, H, W)
    if noise > 0:
        rdtype = kspace.real.dtype
        n = torch.randn((*kspace.shape, 2), generator=generator, dtype=rdtype).to(kspace.device)
        kspace = kspace + torch.view_as_complex(n) * (noise / math.sqrt(2))
    return (kspace if batched else kspace[0, 0]), maps


def estimate_sensitivities(kspace: Tensor, mask: Tensor | None = None, *, num_low_frequencies: int | None = None,
                           threshold: float = 0.02) -> Tensor:
    """Coil maps from the auto-calibration (ACS) columns: ``S_c = x_c^low / rss(x^low)``.

    Args:
        kspace: ``(coils, H, W)`` or ``(B, 1, coils, H, W)`` complex k-space (masked or not).
        mask: ``(H, W)`` or ``(W,)``; its fully sampled centre columns are the ACS region.
        num_low_frequencies: instead of ``mask``: the ACS width, centred as fastMRI centres it.
        threshold: maps are zero where the low-resolution RSS is below ``threshold * max``.

    Returns:
        maps with the shape and dtype of ``kspace``; ``sum_c |S_c|^2 = 1`` inside the support.
    """
    if not isinstance(kspace, Tensor) or not kspace.is_complex() or kspace.dim() not in (3, 5):
        shape = tuple(kspace.shape) if isinstance(kspace, Tensor) else type(kspace).__name__
        raise ValueError(f"estimate_sensitivities: kspace must be complex (coils, H, W) or (B, 1, coils, H, W), got {shape}")
    w = kspace.shape[-1]
    if (mask is None) == (num_low_frequencies is None):
        raise ValueError("estimate_sensitivities: give exactly one of mask or num_low_frequencies")
    if mask is not None:
        if mask.shape[-1] != w:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit k-space of shape {tuple(kspace.shape)}")
        cols = acs_columns(mask)
    else:
        if not 0 < num_low_frequencies <= w:
            raise ValueError(f"num_low_frequencies must be in [1, {w}], got {num_low_frequencies}")
        lo = (w - num_low_frequencies + 1) // 2
        cols = slice(lo, lo + num_low_frequencies)
    n_acs = cols.stop - cols.start
    window = torch.zeros(w, dtype=torch.float64)
    # Hann taper over the ACS columns (endpoints excluded so every ACS column has weight > 0)
    window[cols] = torch.hann_window(n_acs + 2, periodic=False, dtype=torch.float64)[1:-1]
    low = ifft2c(kspace * window.to(device=kspace.device, dtype=kspace.real.dtype))
    norm = rss(low, dim=-3).unsqueeze(-3)  # (..., 1, H, W)
    support = norm > threshold * norm.amax(dim=(-2, -1), keepdim=True)
    return torch.where(support, low / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(low))
