"""Image-quality metrics with fastMRI's conventions: ``psnr``, ``ssim``, ``nmse``.

Every metric takes numpy arrays or torch tensors (any device; detached, computed in float64
numpy), real magnitudes, as a slice ``(H, W)``, a volume ``(S, H, W)`` or ``(S, 1, H, W)``, and
returns a Python float. Complex inputs raise ``ValueError`` (pass ``x.abs()``): taking the
magnitude silently would hide a wrong pipeline. ``data_range`` defaults to ``target.max()`` of
the whole volume, as ``fastmri.evaluate`` does; pass it explicitly for CT (e.g. 1.0).
``per_slice(metric, target, prediction)`` gives the per-slice values with the volume's range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._common import as_image_pair, resolve_data_range
from .nmse import nmse
from .psnr import psnr
from .ssim import ssim

__all__ = ["psnr", "ssim", "nmse", "per_slice", "METRICS"]

#: name -> function, for reports and configs.
METRICS: dict[str, Callable[..., float]] = {"psnr": psnr, "ssim": ssim, "nmse": nmse}


def per_slice(
    metric: str | Callable[..., float], target: Any, prediction: Any, data_range: float | None = None
) -> np.ndarray:
    """The metric of each slice of a volume ``(S, H, W)`` -> ``(S,)`` float64.

    PSNR and SSIM use ONE data range for every slice: ``data_range`` or the volume's
    ``target.max()`` (so slice values agree with fastMRI's volume-level numbers; the mean of
    per-slice SSIMs equals ``ssim(volume)``). NMSE is normalised per slice.
    """
    fn = METRICS[metric] if isinstance(metric, str) else metric
    t, p = as_image_pair(target, prediction)
    if fn is nmse:
        return np.array([nmse(t[s], p[s]) for s in range(t.shape[0])])
    dr = resolve_data_range(t, data_range)
    return np.array([fn(t[s], p[s], data_range=dr) for s in range(t.shape[0])])
