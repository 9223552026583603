"""Peak signal-to-noise ratio with fastMRI's conventions."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import as_image_pair, resolve_data_range

__all__ = ["psnr"]


def psnr(target: Any, prediction: Any, data_range: float | None = None) -> float:
    """PSNR = 10 log10(data_range^2 / mean((target - prediction)^2)), in dB.

    As ``fastmri.evaluate.psnr`` (skimage's ``peak_signal_noise_ratio``): for a volume
    ``(S, H, W)`` the mean squared error runs over the whole volume (not an average of slice
    PSNRs) and ``data_range`` defaults to the volume's maximum ``target.max()``. For CT pass an
    explicit ``data_range`` (e.g. 1.0 for images in [0, 1]). Returns ``inf`` for identical inputs.

    Args:
        target: reference magnitudes, numpy or torch, ``(H, W)``, ``(S, H, W)`` or ``(S, 1, H, W)``.
        prediction: same shape as ``target``. Complex inputs are an error (pass magnitudes).
        data_range: the peak value; default ``target.max()``.

    >>> import numpy as np
    >>> round(psnr(np.ones((8, 8)), np.full((8, 8), 0.9)), 6)
    20.0
    """
    t, p = as_image_pair(target, prediction)
    dr = resolve_data_range(t, data_range)
    mse = float(np.mean((t - p) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(dr**2 / mse))
