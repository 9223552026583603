"""Structural similarity with fastMRI's conventions (skimage, averaged over slices)."""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from ._common import as_image_pair, resolve_data_range

__all__ = ["ssim", "SSIM_WIN_SIZE"]

#: skimage's default window (7x7 uniform), which ``fastmri.evaluate.ssim`` uses.
SSIM_WIN_SIZE = 7


def ssim(target: Any, prediction: Any, data_range: float | None = None) -> float:
    """Mean SSIM over slices: (1/S) sum_s SSIM(target[s], prediction[s]; data_range).

    As ``fastmri.evaluate.ssim``: skimage's ``structural_similarity`` with its defaults (7x7
    uniform window, K1 = 0.01, K2 = 0.03) on each slice, with ONE data range for all slices,
    by default the volume's maximum ``target.max()``; then the average over slices. For CT pass
    an explicit ``data_range``. Slices must be at least 7x7.

    Args:
        target: reference magnitudes, numpy or torch, ``(H, W)``, ``(S, H, W)`` or ``(S, 1, H, W)``.
        prediction: same shape as ``target``. Complex inputs are an error (pass magnitudes).
        data_range: default ``target.max()``.

    >>> import numpy as np
    >>> ssim(np.eye(8), np.eye(8))
    1.0
    """
    t, p = as_image_pair(target, prediction)
    if min(t.shape[-2:]) < SSIM_WIN_SIZE:
        raise ValueError(f"ssim needs slices of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE}, got {t.shape[-2:]}")
    dr = resolve_data_range(t, data_range)
    values = [structural_similarity(t[s], p[s], data_range=dr) for s in range(t.shape[0])]
    return float(np.mean(values))
