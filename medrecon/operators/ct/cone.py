"""3D circular cone beam through ASTRA's CUDA projectors (GPU only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..base import LinearOperator
from ._astra import AstraFPBP, astra, cuda_available
from .geometry import make_angles, positive_float, positive_int

__all__ = ["ConeBeamCT"]


class _ConeGeometry:
    """ASTRA ``'cone'`` geometry. ASTRA's projections are ``(rows, angles, cols)``; ours are
    ``(angles, rows, cols)``."""

    three_d = True
    proj_axes = (1, 0, 2)

    def __init__(
        self,
        vol_shape: tuple[int, int, int],
        angles: np.ndarray,
        detector_shape: tuple[int, int],
        source_radius: float,
        detector_radius: float,
    ) -> None:
        self.vol_shape = vol_shape
        self.angles = angles
        self.proj_shape = (int(angles.size), *detector_shape)
        self.source_radius, self.detector_radius = source_radius, detector_radius
        self.magnification = (source_radius + detector_radius) / source_radius

    def vol_geom(self):
        d, h, w = self.vol_shape
        return astra().create_vol_geom(h, w, d)

    def proj_geom(self):
        _, rows, cols = self.proj_shape
        return astra().create_proj_geom(
            "cone",
            self.magnification,
            self.magnification,
            rows,
            cols,
            self.angles,
            self.source_radius,
            self.detector_radius,
        )


class ConeBeamCT(LinearOperator):
    """y = A x: circular cone-beam ray transform through ASTRA's CUDA 3D projectors (GPU only).

    ``(B, C, D, H, W) -> (B, C, n_angles, det_rows, det_cols)``. Voxels of side 1 centred on the
    origin (ASTRA ``create_vol_geom(H, W, D)``, data ``(slices, rows, cols)``); source at distance
    ``source_radius`` and a flat detector at ``detector_radius`` from the rotation axis (ASTRA
    ``'cone'``), pixels ``(R_s + R_d) / R_s`` wide (1 voxel at the centre); ``angles`` default to
    ``2 pi i / n_angles``. The default detector sees the whole volume. ASTRA's BP3D_CUDA is
    ASTRA's matched-ish GPU back-projection, not an exact transpose.

    The constructor raises ``RuntimeError`` unless torch sees a CUDA GPU and ASTRA was built with
    CUDA; this check comes before any ASTRA 3D call, because ASTRA 3D terminates a process without
    a GPU (exit 136) instead of raising.
    """

    def __init__(
        self,
        volume_shape: Sequence[int],
        n_angles: int,
        *,
        source_radius: float,
        detector_radius: float,
        angles: Sequence[float] | np.ndarray | Tensor | None = None,
        detector_shape: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if len(tuple(volume_shape)) != 3:
            raise ValueError(f"volume_shape must be (D, H, W), got {volume_shape!r}")
        d, h, w = (positive_int(s, "volume_shape entries") for s in volume_shape)
        theta = make_angles(n_angles, angles, 2 * math.pi)
        r_s = positive_float(source_radius, "source_radius")
        r_d = positive_float(detector_radius, "detector_radius")
        radius = 0.5 * math.sqrt(h * h + w * w + d * d)
        if r_s <= radius:
            raise ValueError(
                f"source_radius must exceed the radius of the sphere around the volume "
                f"({radius:.3f} voxels); got {r_s}"
            )
        if detector_shape is None:
            half = r_s * math.tan(math.asin(radius / r_s))
            detector_shape = (2 * math.ceil(half) + 1, 2 * math.ceil(half) + 1)
        rows, cols = (positive_int(s, "detector_shape entries") for s in detector_shape)
        # The GPU check comes before any ASTRA 3D call (see the class docstring).
        if not cuda_available():
            raise RuntimeError(
                "ConeBeamCT needs a CUDA GPU and a CUDA build of ASTRA (3D projection runs on "
                "the GPU only); none was found"
            )
        super().__init__((d, h, w), (theta.size, rows, cols), dtype=dtype)
        self._geometry = _ConeGeometry((d, h, w), theta, (rows, cols), r_s, r_d)
        self.angles = theta
        self.source_radius, self.detector_radius = r_s, r_d
        self.magnification = self._geometry.magnification
        self._fpbp = AstraFPBP(self._geometry, None)

    def measurement_support(self) -> Tensor:
        """Every detector pixel carries data: all True, ``out_shape``."""
        return torch.ones(self.out_shape, dtype=torch.bool, device=self.device)

    def _A(self, x: Tensor) -> Tensor:  # (N, D, H, W) -> (N, n_angles, rows, cols)
        return self._fpbp.run(x, True)

    def _AH(self, y: Tensor) -> Tensor:  # (N, n_angles, rows, cols) -> (N, D, H, W)
        return self._fpbp.run(y, False)
