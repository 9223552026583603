"""Filtered back-projection in torch: the ramp filter with its windows, parallel-beam and fan-beam FBP.

See ``medrecon.operators.ct`` (section FBP) for the formulas and their sources.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .parallel_fan import FanBeamCT, ParallelBeamCT

#: FBP windows (multiplying the ramp).
FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hann")


def ramp_filter(y: Tensor, spacing: float, filter: str, frequency_scaling: float) -> Tensor:
    """Ramp-filter ``y`` (..., n_det) along the last axis: ``spacing * (h * y)`` with zero padding."""
    if filter not in FBP_FILTERS:
        raise ValueError(f"filter must be one of {', '.join(FBP_FILTERS)}, got {filter!r}")
    if (
        isinstance(frequency_scaling, bool)
        or not isinstance(frequency_scaling, numbers.Real)
        or not 0 < float(frequency_scaling) <= 1
    ):
        raise ValueError(f"frequency_scaling must be in (0, 1], got {frequency_scaling!r}")
    s = float(frequency_scaling)
    n_det = y.shape[-1]
    size = max(64, 1 << math.ceil(math.log2(2 * n_det)))  # zero padding against circular wrap-around
    # Band-limited ramp kernel sampled at unit spacing (Kak & Slaney eq. 3.61):
    # h(0) = 1/4, h(n odd) = -1/(pi n)^2, h(n even) = 0; its DFT is ~|f| without a DC offset.
    k = torch.arange(size, dtype=torch.float64)
    k = torch.where(k <= size // 2, k, k - size)
    h = torch.where(k.remainder(2) == 1, -1.0 / (math.pi * k).pow(2), torch.zeros_like(k))
    h[0] = 0.25
    response = torch.fft.rfft(h).real
    f = torch.arange(response.numel(), dtype=torch.float64) / (size / 2)  # frequency / Nyquist, in [0, 1]
    if filter == "shepp-logan":
        window = torch.sinc(f / (2 * s))
    elif filter == "cosine":
        window = torch.cos(math.pi * f / (2 * s))
    elif filter == "hann":
        window = torch.cos(math.pi * f / (2 * s)).pow(2)
    else:
        window = torch.ones_like(f)
    window = torch.where(f <= s, window, torch.zeros_like(window))
    # spacing * sum_j h_spacing(k - j) y_j with h_spacing = h / spacing^2
    response = (response * window / spacing).to(device=y.device, dtype=y.dtype)
    spectrum = torch.fft.rfft(y, n=size, dim=-1)
    return torch.fft.irfft(spectrum * response, n=size, dim=-1)[..., :n_det]


def parallel_fbp(op: ParallelBeamCT, y: Tensor, filter: str, frequency_scaling: float) -> Tensor:
    """x = d * A^T (w (h * y)) through the operator's own adjoint (any backend, differentiable)."""
    op._check(y, op.out_shape, op.out_dtype, "sinogram y (to fbp)")
    d = op.detector_spacing
    q = ramp_filter(y, d, filter, frequency_scaling) * op._angle_weights[:, None]
    # A^T spreads a bin over its pixels with weights summing to ~ 1/d per angle (pixel area 1).
    return op.adjoint(q * d)


def fan_fbp(op: FanBeamCT, y: Tensor, filter: str, frequency_scaling: float) -> Tensor:
    """Weighted flat-detector fan-beam FBP (Kak & Slaney eqs. 3.116-3.118), pixel-driven, in torch."""
    op._check(y, op.out_shape, op.out_dtype, "sinogram y (to fbp)")
    g = op._geometry
    n_angles, n_det = op.n_angles, op.n_detectors
    b, c = y.shape[:2]
    r_s = g.source_radius
    a = g.detector_spacing * r_s / (r_s + g.detector_radius)  # bin width at the rotation centre
    dtype, device = y.dtype, y.device
    s = (torch.arange(n_det, dtype=dtype, device=device) - (n_det - 1) / 2) * a
    q = y.reshape(b * c, n_angles, n_det) * (r_s / torch.sqrt(r_s**2 + s**2))
    q = 0.5 * ramp_filter(q, a, filter, frequency_scaling)  # (M, n_angles, n_det)
    n = op.image_size
    coord = torch.arange(n, dtype=dtype, device=device) - (n - 1) / 2
    px = coord.repeat(n)  # x of pixel (r, c) = c - (N-1)/2, flattened in C order
    py = (-coord).repeat_interleave(n)  # y = (N-1)/2 - r
    theta = torch.as_tensor(g.angles, dtype=dtype, device=device)
    weights = op._angle_weights.to(dtype)
    m = q.shape[0]
    out = torch.zeros(m, n * n, dtype=dtype, device=device)
    chunk = max(1, (1 << 22) // max(1, m * n * n))
    for j0 in range(0, n_angles, chunk):
        th = theta[j0 : j0 + chunk, None]  # (k, 1)
        cos, sin = torch.cos(th), torch.sin(th)
        along = r_s - px * sin + py * cos  # R_s + <p, e_c>, e_c = (-sin, cos): source -> detector
        pos = r_s * (px * cos + py * sin) / along  # detector coordinate at the centre, (k, N*N)
        idx = pos / a + (n_det - 1) / 2
        valid = (idx >= 0) & (idx <= n_det - 1)
        i0 = idx.floor().clamp(0, max(n_det - 2, 0))
        frac = (idx - i0).clamp(0, 1)
        i0 = i0.long()
        i1 = (i0 + 1).clamp(max=n_det - 1)
        wgt = (
            torch.where(valid, (r_s / along).pow(2), torch.zeros_like(along)) * weights[j0 : j0 + chunk, None]
        )
        k = th.shape[0]
        # flat indices into q[:, j0:j0+k, :] viewed as (M, k * n_det): one contiguous index_select
        base = (torch.arange(k, device=device) * n_det)[:, None]
        qc = q[:, j0 : j0 + k, :].reshape(m, k * n_det)
        v0 = qc.index_select(1, (base + i0).reshape(-1)).reshape(m, k, n * n)
        v1 = qc.index_select(1, (base + i1).reshape(-1)).reshape(m, k, n * n)
        out = out + (v0 * ((1 - frac) * wgt) + v1 * (frac * wgt)).sum(dim=1)
    return out.reshape(b, c, n, n)
