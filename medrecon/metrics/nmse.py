"""Normalised mean squared error with fastMRI's conventions."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import as_image_pair

__all__ = ["nmse"]


def nmse(target: Any, prediction: Any) -> float:
    """NMSE = ||target - prediction||^2 / ||target||^2 over the whole slice or volume.

    As ``fastmri.evaluate.nmse``. A target that is all zeros is an error.

    >>> import numpy as np
    >>> nmse(np.ones((4, 4)), np.zeros((4, 4)))
    1.0
    """
    t, p = as_image_pair(target, prediction)
    denom = float(np.sum(t**2))
    if denom == 0.0:
        raise ValueError("nmse: the target is all zeros, so the NMSE is undefined")
    return float(np.sum((t - p) ** 2) / denom)
