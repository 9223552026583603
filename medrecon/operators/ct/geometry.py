"""CT geometries: validated arguments, angles and their quadrature weights, the 2D geometry record.

The convention (pixel units, angles, detector, values) is documented in ``medrecon.operators.ct``.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers

import numpy as np
from torch import Tensor

from ._astra import astra

#: bump when the stored system-matrix format changes (part of every cache key).
MATRIX_FORMAT_VERSION = 1


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def positive_float(value, name: str) -> float:
    """``value`` as a finite float ``> 0``; a ValueError naming ``name`` otherwise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def make_angles(n_angles, angles, period: float) -> np.ndarray:
    """The projection angles (radians, float64): ``angles`` checked against ``n_angles``, or equispaced."""
    n_angles = positive_int(n_angles, "n_angles")
    if angles is None:
        return np.arange(n_angles, dtype=np.float64) * (period / n_angles)
    if isinstance(angles, Tensor):
        angles = angles.detach().cpu().double().numpy()
    a = np.asarray(angles, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"angles must be a 1-D sequence of radians, got shape {a.shape}")
    if a.size != n_angles:
        raise ValueError(f"angles has {a.size} entries but n_angles is {n_angles}; they must agree")
    if not np.all(np.isfinite(a)):
        raise ValueError("angles must be finite (radians)")
    return a.copy()


def angle_weights(angles: np.ndarray, period: float) -> np.ndarray:
    """Quadrature weights for sum_i w_i g(theta_i) ~ int g dtheta over one period (see the FBP doc)."""
    n = angles.size
    if n == 1:
        return np.array([period])
    a = np.mod(angles, period)
    order = np.argsort(a, kind="stable")
    s = a[order]
    gaps = np.diff(np.concatenate([s, s[:1] + period]))  # gap after each sorted angle
    cap = float(np.median(gaps))
    if cap <= 0:
        return np.full(n, period / n)
    g = np.minimum(gaps, cap)
    w_sorted = 0.5 * (g + np.roll(g, 1))
    w = np.empty(n)
    w[order] = w_sorted
    return w


class Geometry2D:
    """Plain description of a 2D parallel (``kind="parallel"``) or flat fan-beam (``"fanflat"``) geometry."""

    three_d = False
    proj_axes = (0, 1)  # ASTRA's sinogram layout is ours: (angles, detectors)

    def __init__(
        self,
        kind: str,
        image_size: int,
        angles: np.ndarray,
        n_detectors: int,
        detector_spacing: float,
        source_radius: float = 0.0,
        detector_radius: float = 0.0,
    ) -> None:
        self.kind = kind
        self.image_size = image_size
        self.angles = angles
        self.n_detectors = n_detectors
        self.detector_spacing = detector_spacing
        self.source_radius = source_radius
        self.detector_radius = detector_radius

    @property
    def vol_shape(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    @property
    def proj_shape(self) -> tuple[int, int]:
        return (int(self.angles.size), self.n_detectors)

    def vol_geom(self):
        return astra().create_vol_geom(self.image_size, self.image_size)

    def proj_geom(self):
        a = astra()
        if self.kind == "parallel":
            return a.create_proj_geom("parallel", self.detector_spacing, self.n_detectors, self.angles)
        return a.create_proj_geom(
            "fanflat",
            self.detector_spacing,
            self.n_detectors,
            self.angles,
            self.source_radius,
            self.detector_radius,
        )

    def key(self, projector: str) -> str:
        """A sha256 naming this geometry, kernel, matrix format and ASTRA version (the cache key)."""
        desc = {
            "format": MATRIX_FORMAT_VERSION,
            "kind": self.kind,
            "image_size": self.image_size,
            "angles": [float.hex(float(a)) for a in self.angles],
            "n_detectors": self.n_detectors,
            "detector_spacing": float.hex(self.detector_spacing),
            "source_radius": float.hex(self.source_radius),
            "detector_radius": float.hex(self.detector_radius),
            "projector": projector,
            "astra": str(getattr(astra(), "__version__", "?")),
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()
