"""2D parallel- and fan-beam ray transforms: ``(B, C, N, N) -> (B, C, n_angles, n_detectors)``.

Geometry, scaling, backends and FBP: see ``medrecon.operators.ct``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..base import LinearOperator
from ._astra import cuda_available
from .backends import BACKENDS, MatrixBackend
from .fbp import fan_fbp, parallel_fbp
from .geometry import Geometry2D, angle_weights, make_angles, positive_float, positive_int
from .matrix_cache import matrix_auto_max_bytes, matrix_nbytes_estimate

__all__ = ["ParallelBeamCT", "FanBeamCT"]

_BACKEND_NAMES = ("auto", *BACKENDS)
_PARALLEL_PROJECTORS = ("linear", "line", "strip", "cuda")
_FAN_PROJECTORS = ("line_fanflat", "strip_fanflat", "cuda")


class _Tomography2D(LinearOperator):
    """Shared machinery of the 2D CT operators: backend choice, metadata, direct reconstruction."""

    _period: float = math.pi
    _default_projector: str = "linear"
    _projectors: tuple[str, ...] = _PARALLEL_PROJECTORS

    def __init__(self, geometry: Geometry2D, backend: str, projector: str | None, dtype: torch.dtype) -> None:
        if backend not in _BACKEND_NAMES:
            raise ValueError(f"backend must be one of {', '.join(_BACKEND_NAMES)}, got {backend!r}")
        projector = self._default_projector if projector is None else projector
        if projector not in self._projectors:
            raise ValueError(
                f"projector must be one of {', '.join(self._projectors)} for "
                f"{type(self).__name__}, got {projector!r}"
            )
        if projector == "cuda":
            if backend == "auto":
                backend = "astra"
            if backend != "astra":
                raise ValueError("projector='cuda' exists only with backend='astra'")
            if not cuda_available():
                raise RuntimeError("projector='cuda' needs a CUDA GPU usable by ASTRA; none was found")
        n = geometry.image_size
        super().__init__((n, n), geometry.proj_shape, dtype=dtype)
        self._geometry = geometry
        self.projector = projector
        if backend == "auto":
            backend = "matrix" if self.matrix_nbytes_estimate() <= matrix_auto_max_bytes() else "astra"
        self.backend = backend
        self._backend = BACKENDS[backend](geometry, projector, dtype)
        self.register_buffer(
            "_angle_weights",
            torch.from_numpy(angle_weights(geometry.angles, self._period)).to(dtype),
            persistent=False,
        )

    # ------------------------------------------------------------------ metadata
    @property
    def image_size(self) -> int:
        return self._geometry.image_size

    @property
    def n_angles(self) -> int:
        return int(self._geometry.angles.size)

    @property
    def n_detectors(self) -> int:
        return self._geometry.n_detectors

    @property
    def angles(self) -> np.ndarray:
        """The projection angles in radians (a copy)."""
        return self._geometry.angles.copy()

    @property
    def detector_spacing(self) -> float:
        """Width of one detector bin in pixels (on the detector)."""
        return self._geometry.detector_spacing

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, n_angles={self.n_angles}, n_detectors={self.n_detectors}, "
            f"backend={self.backend!r}, projector={self.projector!r}, dtype={self.real_dtype}"
        )

    def matrix_nbytes_estimate(self) -> int:
        """Estimated memory of the system matrix and its transpose (float32 values, int32 indices)."""
        return matrix_nbytes_estimate(self._geometry, self.projector)

    def system_matrix(self) -> Tensor:
        """The (n_angles * n_detectors, N * N) system matrix as a torch sparse CSR tensor (matrix backend)."""
        if not isinstance(self._backend, MatrixBackend):
            raise RuntimeError(f"system_matrix() needs backend='matrix', this operator uses {self.backend!r}")
        return self._backend.system_matrix()

    # ------------------------------------------------------------------ application
    def _A(self, x: Tensor) -> Tensor:  # (N, H, W) -> (N, n_angles, n_det)
        return self._backend(x)

    def _AH(self, y: Tensor) -> Tensor:  # (N, n_angles, n_det) -> (N, H, W)
        return self._backend.adjoint(y)

    # ------------------------------------------------------------------ direct reconstruction
    def fbp(self, y: Tensor, filter: str = "ramp", frequency_scaling: float = 1.0) -> Tensor:
        """x = FBP(y), ``(B, C, n_angles, n_detectors) -> (B, C, N, N)``; batched, differentiable, torch."""
        raise NotImplementedError

    def direct(self, y: Tensor, filter: str = "ramp", frequency_scaling: float = 1.0) -> Tensor:
        """x = FBP(y): the direct reconstruction of CT (see :meth:`fbp` for the options)."""
        return self.fbp(y, filter=filter, frequency_scaling=frequency_scaling)

    def measurement_support(self) -> Tensor:
        """Every detector bin carries data (also bins whose rays miss the image): all True, ``out_shape``."""
        return torch.ones(self.out_shape, dtype=torch.bool, device=self.device)


class ParallelBeamCT(_Tomography2D):
    """y = A x: 2D parallel-beam ray transform, ``(B, C, N, N) -> (B, C, n_angles, n_detectors)``.

    Geometry, scaling and backends: see ``medrecon.operators.ct``. ``angles`` (radians) may be any
    finite set (limited angle, sparse, unordered); by default ``i * pi / n_angles``. ``projector`` is
    the ASTRA kernel: ``"linear"`` (Joseph, default), ``"line"``, ``"strip"`` or ``"cuda"`` (GPU only).

    >>> op = ParallelBeamCT(9, 4, backend="astra")
    >>> y = op(torch.ones(1, 1, 9, 9))   # line integrals in pixels: the central ray crosses 9 pixels
    >>> y.shape, float(y[0, 0, 0, 6])
    (torch.Size([1, 1, 4, 13]), 9.0)
    """

    def __init__(
        self,
        image_size: int,
        n_angles: int,
        *,
        angles: Sequence[float] | np.ndarray | Tensor | None = None,
        n_detectors: int | None = None,
        backend: str = "auto",
        projector: str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        image_size = positive_int(image_size, "image_size")
        theta = make_angles(n_angles, angles, math.pi)
        if n_detectors is None:
            n_detectors = image_size + 2 * math.ceil((math.sqrt(2) - 1) * image_size / 2)
        n_detectors = positive_int(n_detectors, "n_detectors")
        geometry = Geometry2D("parallel", image_size, theta, n_detectors, 1.0)
        super().__init__(geometry, backend, projector, dtype)

    def fbp(self, y: Tensor, filter: str = "ramp", frequency_scaling: float = 1.0) -> Tensor:
        """x = d * A^T (w (h * y)): filtered back-projection, ``(B, C, n_angles, n_det) -> (B, C, N, N)``.

        ``filter`` in ``FBP_FILTERS``; ``frequency_scaling`` in (0, 1] cuts the filter off above that
        fraction of the Nyquist frequency. Uses this operator's adjoint (any backend), so it is
        differentiable wherever the operator is.
        """
        return parallel_fbp(self, y, filter, frequency_scaling)


class FanBeamCT(_Tomography2D):
    """y = A x: 2D fan-beam ray transform (flat detector), ``(B, C, N, N) -> (B, C, n_angles, n_detectors)``.

    ``source_radius`` / ``detector_radius``: distances of the source and of the detector line from
    the rotation centre, in pixels; the source must lie outside the circle circumscribing the image
    (``source_radius > N / sqrt(2)``). Bins are ``(R_s + R_d) / R_s`` pixels wide (1 pixel at the
    centre). ``angles`` default to ``2 pi i / n_angles``. ``projector``: ``"line_fanflat"`` (default),
    ``"strip_fanflat"`` or ``"cuda"`` (GPU only). See ``medrecon.operators.ct`` for the convention.

    >>> op = FanBeamCT(8, 6, source_radius=20.0, detector_radius=10.0, backend="astra")
    >>> op(torch.ones(2, 1, 8, 8)).shape
    torch.Size([2, 1, 6, 12])
    """

    _period = 2 * math.pi
    _default_projector = "line_fanflat"
    _projectors = _FAN_PROJECTORS

    def __init__(
        self,
        image_size: int,
        n_angles: int,
        *,
        source_radius: float,
        detector_radius: float,
        angles: Sequence[float] | np.ndarray | Tensor | None = None,
        n_detectors: int | None = None,
        backend: str = "auto",
        projector: str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        image_size = positive_int(image_size, "image_size")
        theta = make_angles(n_angles, angles, 2 * math.pi)
        r_s = positive_float(source_radius, "source_radius")
        r_d = positive_float(detector_radius, "detector_radius")
        radius = image_size / math.sqrt(2)  # circle circumscribing the image
        if r_s <= radius:
            raise ValueError(
                f"source_radius must exceed the radius of the circle circumscribing the image "
                f"(image_size / sqrt(2) = {radius:.3f} pixels) so the source lies outside the "
                f"object; got {r_s}"
            )
        magnification = (r_s + r_d) / r_s
        if n_detectors is None:
            # rays through the circumscribed circle hit the centre-scaled detector within R_s tan(asin(r/R_s))
            half = r_s * math.tan(math.asin(radius / r_s))
            n_detectors = 2 * math.ceil(half - (image_size % 2) / 2) + image_size % 2
        n_detectors = positive_int(n_detectors, "n_detectors")
        geometry = Geometry2D("fanflat", image_size, theta, n_detectors, magnification, r_s, r_d)
        super().__init__(geometry, backend, projector, dtype)

    @property
    def source_radius(self) -> float:
        return self._geometry.source_radius

    @property
    def detector_radius(self) -> float:
        return self._geometry.detector_radius

    def fbp(self, y: Tensor, filter: str = "ramp", frequency_scaling: float = 1.0) -> Tensor:
        """x = weighted fan-beam FBP of y, ``(B, C, n_angles, n_det) -> (B, C, N, N)``; torch, differentiable.

        Flat-detector fan-beam FBP (Kak & Slaney eqs. 3.116-3.118): the detector is scaled to the
        rotation centre (spacing ``a = d R_s / (R_s + R_d)``), projections are pre-weighted by
        ``R_s / sqrt(R_s^2 + s^2)``, ramp-filtered (times 1/2: a full scan sees every ray twice),
        and back-projected with weight ``w_i / U^2``, ``U = (R_s + <p, e_c>) / R_s``, by linear
        interpolation on the detector (pixel-driven; this is not the operator's adjoint). Assumes a
        full 2 pi scan: short scans get no Parker weighting and come out biased.
        """
        return fan_fbp(self, y, filter, frequency_scaling)
