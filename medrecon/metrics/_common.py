"""Input handling shared by the metrics: numpy or torch in, validated float64 numpy out."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_image_pair", "resolve_data_range"]


def _to_numpy(a: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(a, torch.Tensor):
            a = a.detach().cpu()
            if a.is_complex():
                raise ValueError(
                    f"{name} is complex ({a.dtype}); metrics compare magnitudes: pass x.abs() "
                    "(fastMRI evaluates magnitude images)"
                )
            a = a.to(torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency of medrecon
        pass
    a = np.asarray(a)
    if np.iscomplexobj(a):
        raise ValueError(
            f"{name} is complex ({a.dtype}); metrics compare magnitudes: pass np.abs(x) "
            "(fastMRI evaluates magnitude images)"
        )
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


def as_image_pair(target: Any, prediction: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (target, prediction) pair and return float64 arrays of shape (S, H, W).

    Accepted shapes: a slice ``(H, W)``, a volume ``(S, H, W)``, or ``(S, 1, H, W)`` (a batch of
    single-channel images, treated as a volume of S slices).
    """
    t = _to_numpy(target, "target")
    p = _to_numpy(prediction, "prediction")
    if t.shape != p.shape:
        raise ValueError(f"target and prediction must have the same shape, got {t.shape} and {p.shape}")
    if t.ndim == 4 and t.shape[1] == 1:
        t, p = t[:, 0], p[:, 0]
    if t.ndim == 2:
        t, p = t[None], p[None]
    if t.ndim != 3:
        raise ValueError(
            f"metrics take a slice (H, W), a volume (S, H, W) or (S, 1, H, W); got shape {tuple(np.shape(target))}"
        )
    if t.size == 0:
        raise ValueError("metrics got empty images")
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("target or prediction contains NaN or inf values")
    return t, p


def resolve_data_range(target: np.ndarray, data_range: float | None) -> float:
    """``data_range`` if given, else ``target.max()`` (fastMRI's convention); must be > 0."""
    value = float(target.max()) if data_range is None else float(data_range)
    if not value > 0 or not np.isfinite(value):
        what = "target.max()" if data_range is None else "data_range"
        raise ValueError(f"the data range must be positive and finite, got {what} = {value}")
    return value
