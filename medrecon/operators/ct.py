"""Computed tomography: 2D parallel- and fan-beam ray transforms, FBP, and 3D cone beam (GPU only).

``ParallelBeamCT`` / ``FanBeamCT`` map an image ``(B, C, N, N)`` to a sinogram
``(B, C, n_angles, n_detectors)``; ``op.fbp(y)`` is filtered back-projection in torch.

Geometry and scaling (one convention, shared by every backend)
--------------------------------------------------------------
* **Pixel units.** The ``N x N`` image is centred on the origin and its pixels have side 1. ``x``
  grows with the column index, ``y`` grows *upwards*: pixel ``(row r, column c)`` has its centre at
  ``(c - (N-1)/2, (N-1)/2 - r)``. This is ASTRA's 2D volume convention (``astra.create_vol_geom(N, N)``).
* **Angles** ``theta`` in radians, counter-clockwise. Parallel beam: the ray of angle ``theta`` and
  detector coordinate ``u`` is the line ``x cos(theta) + y sin(theta) = u``; at ``theta = 0`` the
  rays run along the columns (``u = x``), at ``theta = pi/2`` along the rows (``u = y``). For odd
  ``N`` this is exactly ``skimage.transform.radon(image, theta=degrees(angles), circle=False).T``
  up to the interpolation kernel; for even ``N`` scikit-image rotates about pixel ``N//2`` rather
  than the image centre (half a pixel apart).
  Defaults: parallel ``theta_i = i pi / n_angles``; fan ``theta_i = 2 pi i / n_angles``.
* **Detector.** Bin ``k`` (``0 <= k < n_detectors``) has its centre at ``u_k = (k - (n_det-1)/2) * d``.
  Parallel beam: ``d = 1`` pixel. Fan beam: the source sits at ``R_s (sin theta, -cos theta)``, the
  flat detector passes through ``R_d (-sin theta, cos theta)`` along ``(cos theta, sin theta)``, and
  its bins are ``d = (R_s + R_d) / R_s`` (the magnification) wide, i.e. 1 pixel at the rotation
  centre. (ASTRA ``fanflat`` with ``source_origin = R_s``, ``origin_det = R_d``.)
  Default ``n_detectors``: the smallest count with the parity of ``N`` that sees the whole image
  (parallel: ``>= sqrt(2) N``; fan: every ray through the circle circumscribing the image).
* **Values.** A sinogram entry approximates the line integral ``int f dl`` with lengths in pixels:
  an image that is 1 everywhere gives chord lengths in pixels. Every projector kernel
  (``linear`` = Joseph, ``line``, ``strip``; fan ``line_fanflat``, ``strip_fanflat``) has this
  scale, and the ``"astra"``, ``"odl"`` and ``"matrix"`` backends apply the *same* ASTRA kernel,
  so they agree to float32 rounding (tested).
* **Adjoint.** ``op.adjoint`` is the exact transpose of the projector's matrix (ASTRA's CPU
  back-projectors are matched; the ``"matrix"`` backend applies the stored transpose).

Backends (``backend=``)
-----------------------
* ``"matrix"``: the sparse system matrix of the ASTRA projector (``astra.projector.matrix``), built
  once per geometry and cached on disk as ``$MEDRECON_CACHE/ct/<sha256>.npz`` (default
  ``~/.cache/medrecon/ct``; written atomically, loaded without pickle), kept as CSR and CSR
  transpose (float values, int32 indices) and applied as one torch sparse matmul per batch, on
  any device, with ``.to(device, dtype)``.
* ``"astra"``: ASTRA's 2D projectors called directly, one FP/BP algorithm pair and linked buffers
  created once per operator and reused for every image (CPU, single-threaded). ``projector="cuda"``
  uses ASTRA's CUDA FP/BP (GPU only; its back-projection is not an exact transpose).
* ``"odl"``: ``odl.applications.tomo.RayTransform(impl="astra_cpu")`` with the same kernel.
* ``"auto"`` (default): ``"matrix"`` when the estimated matrix memory (CSR + transpose) is at most
  ``MATRIX_AUTO_MAX_BYTES`` (1 GiB, or ``$MEDRECON_CT_MATRIX_MAX_BYTES``), else ``"astra"``.
  128x128/30 angles (Joseph): ~14 MB; 256x256/180: ~340 MB; 512x512/720: ~5.6 GB (-> astra).

FBP
---
``op.fbp(y, filter, frequency_scaling)``: zero-padded FFT filtering along the detector axis (the
band-limited ramp of Kak & Slaney, *Principles of Computerized Tomographic Imaging*, 1988,
eq. 3.61, times a window), then back-projection. Parallel beam uses the operator's own adjoint with
the constant ``d * dtheta`` (``f(x) = sum_i w_i (h * p_i)(x . theta_i)``), so a Shepp-Logan phantom is
recovered in absolute scale. Fan beam is the weighted flat-detector fan-beam FBP (Kak & Slaney
eqs. 3.116-3.118: cosine pre-weighting, ramp filter on the detector scaled to the rotation centre,
distance-weighted ``1/U^2`` back-projection by linear interpolation, written in torch), which
assumes a full ``2 pi`` scan (no Parker weights for short scans). Angle weights ``w_i`` are half
the distance to the neighbouring angles (modulo ``pi`` / ``2 pi``), each gap capped at the median
gap, so limited-angle sets are not over-weighted at their ends. Windows (ODL's ``fbp_op``
definitions, ``f`` the frequency over Nyquist, ``s = frequency_scaling``, zero above ``f > s``):
ramp ``1``; shepp-logan ``sinc(f / 2s)``; cosine ``cos(pi f / 2s)``; hann ``cos^2(pi f / 2s)``.

3D cone beam (``ConeBeamCT``) runs ASTRA's CUDA FP3D/BP3D only; its constructor checks for a GPU
before any ASTRA 3D call (ASTRA 3D terminates the process on a machine without one).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import os
import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ._sparse import sparse_csr as _sparse_csr
from .base import LinearOperator

__all__ = ["ParallelBeamCT", "FanBeamCT", "ConeBeamCT", "MATRIX_AUTO_MAX_BYTES", "FBP_FILTERS", "ct_cache_dir"]

#: "auto" picks the matrix backend while its estimated memory (CSR + transpose) stays below this.
MATRIX_AUTO_MAX_BYTES = 1 << 30
#: FBP windows (multiplying the ramp).
FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hann")
_BACKENDS = ("auto", "astra", "odl", "matrix")
_PARALLEL_PROJECTORS = ("linear", "line", "strip", "cuda")
_FAN_PROJECTORS = ("line_fanflat", "strip_fanflat", "cuda")
# Measured nonzeros per (angle * pixel) of ASTRA's matrices (128x128, 30 angles), for the "auto"
# memory estimate; +5% margin.
_NNZ_PER_ANGLE_PIXEL = {"line": 1.33, "linear": 1.9, "strip": 3.35, "line_fanflat": 1.38, "strip_fanflat": 2.45}
_MATRIX_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------- helpers
def ct_cache_dir() -> Path:
    """Where system matrices are cached: ``$MEDRECON_CACHE/ct`` or ``~/.cache/medrecon/ct``."""
    root = os.environ.get("MEDRECON_CACHE")
    return Path(root) / "ct" if root else Path.home() / ".cache" / "medrecon" / "ct"


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """np.savez to ``path`` atomically (temporary file in the same directory, then os.replace)."""
    from medrecon.utils_io import atomic_write  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or float(value) <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _make_angles(n_angles, angles, period: float) -> np.ndarray:
    n_angles = _positive_int(n_angles, "n_angles")
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


def _angle_weights(angles: np.ndarray, period: float) -> np.ndarray:
    """Quadrature weights for sum_i w_i g(theta_i) ~ int g dtheta over one period (see module doc)."""
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


def _astra():
    try:
        import astra  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - astra is in the pinned stack
        raise ImportError("the CT operators need astra-toolbox (pip install astra-toolbox==2.5.0)") from exc
    return astra


def _astra_cuda_available() -> bool:
    """A GPU usable by ASTRA. torch is asked first; ASTRA only when torch sees a GPU."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(_astra().use_cuda())
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------------------------------- geometry
class _Geometry2D:
    """Plain description of a 2D geometry (see module docstring for the convention)."""

    def __init__(self, kind: str, image_size: int, angles: np.ndarray, n_detectors: int,
                 detector_spacing: float, source_radius: float = 0.0, detector_radius: float = 0.0) -> None:
        self.kind = kind
        self.image_size = image_size
        self.angles = angles
        self.n_detectors = n_detectors
        self.detector_spacing = detector_spacing
        self.source_radius = source_radius
        self.detector_radius = detector_radius

    def vol_geom(self):
        return _astra().create_vol_geom(self.image_size, self.image_size)

    def proj_geom(self):
        astra = _astra()
        if self.kind == "parallel":
            return astra.create_proj_geom("parallel", self.detector_spacing, self.n_detectors, self.angles)
        return astra.create_proj_geom("fanflat", self.detector_spacing, self.n_detectors, self.angles,
                                      self.source_radius, self.detector_radius)

    def key(self, projector: str) -> str:
        desc = {
            "format": _MATRIX_FORMAT_VERSION, "kind": self.kind, "image_size": self.image_size,
            "angles": [float.hex(float(a)) for a in self.angles], "n_detectors": self.n_detectors,
            "detector_spacing": float.hex(self.detector_spacing), "source_radius": float.hex(self.source_radius),
            "detector_radius": float.hex(self.detector_radius), "projector": projector,
            "astra": str(getattr(_astra(), "__version__", "?")),
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------- ASTRA
class _AstraProjector2D:
    """ASTRA FP/BP with data objects linked to two float32 buffers, created once and reused.

    Not picklable state (ASTRA ids) is created lazily, so ``copy.deepcopy`` gives an independent
    projector. A lock serialises use of the shared buffers across threads.
    """

    def __init__(self, geometry: _Geometry2D, projector: str) -> None:
        self.geometry = geometry
        self.projector = projector
        self._ids: dict | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return _AstraProjector2D(self.geometry, self.projector)

    def __getstate__(self):
        return {"geometry": self.geometry, "projector": self.projector}

    def __setstate__(self, state):
        self.__init__(state["geometry"], state["projector"])

    def _setup(self) -> dict:
        if self._ids is not None:
            return self._ids
        astra = _astra()
        g = self.geometry
        vol_geom, proj_geom = g.vol_geom(), g.proj_geom()
        cuda = self.projector == "cuda"
        if cuda and not _astra_cuda_available():
            raise RuntimeError("projector='cuda' needs a CUDA GPU usable by ASTRA; none was found")
        vol = np.zeros((g.image_size, g.image_size), dtype=np.float32)
        sino = np.zeros((g.angles.size, g.n_detectors), dtype=np.float32)
        proj_id = astra.create_projector(self.projector, proj_geom, vol_geom)
        vol_id = astra.data2d.link("-vol", vol_geom, vol)
        sino_id = astra.data2d.link("-sino", proj_geom, sino)
        fp_cfg = astra.astra_dict("FP_CUDA" if cuda else "FP")
        fp_cfg.update(ProjectorId=proj_id, VolumeDataId=vol_id, ProjectionDataId=sino_id)
        bp_cfg = astra.astra_dict("BP_CUDA" if cuda else "BP")
        bp_cfg.update(ProjectorId=proj_id, ReconstructionDataId=vol_id, ProjectionDataId=sino_id)
        self._ids = {
            "vol": vol, "sino": sino, "proj": proj_id, "vol_id": vol_id, "sino_id": sino_id,
            "fp": astra.algorithm.create(fp_cfg), "bp": astra.algorithm.create(bp_cfg),
        }
        return self._ids

    def __del__(self):
        ids = getattr(self, "_ids", None)
        if not ids:
            return
        try:
            astra = _astra()
            astra.algorithm.delete([ids["fp"], ids["bp"]])
            astra.data2d.delete([ids["vol_id"], ids["sino_id"]])
            astra.projector.delete(ids["proj"])
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _run(self, t: Tensor, forward: bool) -> Tensor:
        g = self.geometry
        out_shape = (g.angles.size, g.n_detectors) if forward else (g.image_size, g.image_size)
        src = t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()  # no copy if already so
        out = torch.empty((t.shape[0], *out_shape), dtype=torch.float32)
        dst = out.numpy()
        with self._lock:
            ids = self._setup()
            a_in, a_out = (ids["vol"], ids["sino"]) if forward else (ids["sino"], ids["vol"])
            algo = ids["fp"] if forward else ids["bp"]
            run = _astra().algorithm.run
            for i in range(src.shape[0]):
                np.copyto(a_in, src[i])
                run(algo)
                np.copyto(dst[i], a_out)
        return out.to(device=t.device, dtype=t.dtype)

    def forward(self, x: Tensor) -> Tensor:  # (N, H, W) -> (N, n_angles, n_det)
        return self._run(x, True)

    def adjoint(self, y: Tensor) -> Tensor:  # (N, n_angles, n_det) -> (N, H, W)
        return self._run(y, False)

    def sparse_matrix(self):
        """The projector's system matrix (scipy CSR, float32 values)."""
        astra = _astra()
        g = self.geometry
        proj_id = astra.create_projector(self.projector, g.proj_geom(), g.vol_geom())
        try:
            matrix_id = astra.projector.matrix(proj_id)
            try:
                w = astra.matrix.get(matrix_id)
            finally:
                astra.matrix.delete(matrix_id)
        finally:
            astra.projector.delete(proj_id)
        return w.astype(np.float32)


# ---------------------------------------------------------------------------------------- ODL
class _OdlProjector2D:
    """ODL RayTransform (impl='astra_cpu') on the same geometry and kernel, built lazily.

    ODL's arrays are indexed ``[x, y]`` with ``y`` growing with the second index, so an image of this
    module's layout maps to ``image[::-1].T``; ODL needs increasing angles, so they are sorted
    and the sinogram rows permuted back. ODL weights both spaces by 1 here (pixel and bin sizes
    enter only through the partitions), so its adjoint is the transpose; the dot-product test checks it.
    """

    def __init__(self, geometry: _Geometry2D, projector: str) -> None:
        self.geometry = geometry
        self.projector = projector
        self.order = np.argsort(geometry.angles, kind="stable")
        if np.any(np.diff(geometry.angles[self.order]) <= 0) or geometry.angles.size < 2:
            raise ValueError("backend='odl' needs at least 2 distinct angles (ODL partitions need strictly "
                             "increasing angles); use backend='astra' or 'matrix'")
        self.inverse_order = np.argsort(self.order)
        self._ray = None

    def __deepcopy__(self, memo):
        return _OdlProjector2D(self.geometry, self.projector)

    def _setup(self):
        if self._ray is not None:
            return self._ray
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import odl  # noqa: PLC0415
            from odl.applications import tomo  # noqa: PLC0415
        g = self.geometry
        n = g.image_size
        space = odl.uniform_discr([-n / 2, -n / 2], [n / 2, n / 2], (n, n), dtype="float32")
        apart = odl.nonuniform_partition(g.angles[self.order])
        half = g.n_detectors * g.detector_spacing / 2
        dpart = odl.uniform_partition(-half, half, g.n_detectors)
        if g.kind == "parallel":
            geom = tomo.Parallel2dGeometry(apart, dpart)
        else:
            geom = tomo.FanBeamGeometry(apart, dpart, src_radius=g.source_radius, det_radius=g.detector_radius)
        self._ray = tomo.RayTransform(space, geom, impl="astra_cpu")
        return self._ray

    def forward(self, x: Tensor) -> Tensor:
        ray = self._setup()
        src = x.detach().to(device="cpu", dtype=torch.float32).numpy()
        out = np.empty((src.shape[0], self.geometry.angles.size, self.geometry.n_detectors), dtype=np.float32)
        for i in range(src.shape[0]):
            sino = ray(np.ascontiguousarray(src[i][::-1].T), astra_proj_type=self.projector).data
            out[i] = np.asarray(sino)[self.inverse_order]
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        ray = self._setup()
        src = y.detach().to(device="cpu", dtype=torch.float32).numpy()
        n = self.geometry.image_size
        out = np.empty((src.shape[0], n, n), dtype=np.float32)
        for i in range(src.shape[0]):
            img = ray.adjoint(np.ascontiguousarray(src[i][self.order]), astra_proj_type=self.projector).data
            out[i] = np.asarray(img).T[::-1]
        return torch.from_numpy(out).to(device=y.device, dtype=y.dtype)


# ---------------------------------------------------------------------------------------- operators
class _Tomography2D(LinearOperator):
    """Shared machinery of the 2D CT operators: backends, caching, FBP filtering."""

    _period: float = math.pi
    _default_projector: str = "linear"
    _projectors: tuple[str, ...] = _PARALLEL_PROJECTORS

    def __init__(self, geometry: _Geometry2D, backend: str, projector: str | None, dtype: torch.dtype) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}, got {backend!r}")
        projector = self._default_projector if projector is None else projector
        if projector not in self._projectors:
            raise ValueError(f"projector must be one of {', '.join(self._projectors)} for "
                             f"{type(self).__name__}, got {projector!r}")
        if projector == "cuda":
            if backend == "auto":
                backend = "astra"
            if backend != "astra":
                raise ValueError("projector='cuda' exists only with backend='astra'")
            if not _astra_cuda_available():
                raise RuntimeError("projector='cuda' needs a CUDA GPU usable by ASTRA; none was found")
        n = geometry.image_size
        super().__init__((n, n), (geometry.angles.size, geometry.n_detectors), dtype=dtype)
        self._geometry = geometry
        self.projector = projector
        if backend == "auto":
            backend = "matrix" if self.matrix_nbytes_estimate() <= _matrix_auto_max_bytes() else "astra"
        self.backend = backend
        self._impl = None
        if backend == "astra":
            self._impl = _AstraProjector2D(geometry, projector)
        elif backend == "odl":
            self._impl = _OdlProjector2D(geometry, projector)
        else:
            self._load_matrix(dtype)
        self.register_buffer("_angle_weights", torch.from_numpy(_angle_weights(geometry.angles, self._period))
                             .to(dtype), persistent=False)

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
        return (f"image_size={self.image_size}, n_angles={self.n_angles}, n_detectors={self.n_detectors}, "
                f"backend={self.backend!r}, projector={self.projector!r}, dtype={self.real_dtype}")

    def matrix_nbytes_estimate(self) -> int:
        """Estimated memory of the system matrix and its transpose (float32 values, int32 indices)."""
        nnz = _NNZ_PER_ANGLE_PIXEL.get(self.projector, 3.5) * self.n_angles * self.image_size ** 2
        rows = self.n_angles * self.n_detectors + self.image_size ** 2
        return int(nnz * 2 * (4 + 4) + 8 * rows)

    # ------------------------------------------------------------------ matrix backend
    def _load_matrix(self, dtype: torch.dtype) -> None:
        import scipy.sparse  # noqa: PLC0415

        path = ct_cache_dir() / f"{self._geometry.key(self.projector)}.npz"
        w = None
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as f:
                    w = scipy.sparse.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
                if w.shape != (self.n_angles * self.n_detectors, self.image_size ** 2):
                    w = None
            except (OSError, ValueError, KeyError):
                w = None  # unreadable or stale: rebuild below
        if w is None:
            w = _AstraProjector2D(self._geometry, self.projector).sparse_matrix()
            w.sum_duplicates()
            w.sort_indices()
            _atomic_savez(path, data=w.data.astype(np.float32), indices=w.indices.astype(np.int32),
                          indptr=w.indptr.astype(np.int64), shape=np.asarray(w.shape, dtype=np.int64))
        wt = w.T.tocsr()
        index = torch.int32 if max(w.nnz, *w.shape) < 2 ** 31 - 1 else torch.int64

        def buffers(m, name):
            self.register_buffer(f"_{name}_crow", torch.from_numpy(m.indptr.astype(np.int64)).to(index),
                                 persistent=False)
            self.register_buffer(f"_{name}_col", torch.from_numpy(m.indices.astype(np.int64)).to(index),
                                 persistent=False)
            self.register_buffer(f"_{name}_val", torch.from_numpy(m.data.astype(np.float32)).to(dtype),
                                 persistent=False)

        buffers(w, "w")
        buffers(wt, "wt")
        self._matrix_shape = tuple(int(s) for s in w.shape)

    def _csr(self, name: str, shape) -> Tensor:
        # Built per call from plain buffers (wrapping, no copy): plain tensors survive
        # copy.deepcopy and .to(device, dtype), which sparse CSR buffers do not in torch 2.13.
        return _sparse_csr(getattr(self, f"_{name}_crow"), getattr(self, f"_{name}_col"),
                           getattr(self, f"_{name}_val"), shape)

    def system_matrix(self) -> Tensor:
        """The (n_angles * n_detectors, N * N) system matrix as a torch sparse CSR tensor (matrix backend)."""
        if self.backend != "matrix":
            raise RuntimeError(f"system_matrix() needs backend='matrix', this operator uses {self.backend!r}")
        return self._csr("w", self._matrix_shape)

    # ------------------------------------------------------------------ application
    def _A(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if self.backend == "matrix":
            w = self._csr("w", self._matrix_shape)
            y = w @ x.reshape(n, -1).T.contiguous()  # (n_angles * n_det, N)
            return y.T.reshape(n, *self.out_shape)
        return self._impl.forward(x)

    def _AH(self, y: Tensor) -> Tensor:
        n = y.shape[0]
        if self.backend == "matrix":
            wt = self._csr("wt", self._matrix_shape[::-1])
            x = wt @ y.reshape(n, -1).T.contiguous()  # (N * N, N)
            return x.T.reshape(n, *self.in_shape)
        return self._impl.adjoint(y)

    # ------------------------------------------------------------------ FBP
    def _filter(self, y: Tensor, spacing: float, filter: str, frequency_scaling: float) -> Tensor:
        """Ramp-filter ``y`` (..., n_det) along the last axis: ``spacing * (h * y)`` with zero padding."""
        if filter not in FBP_FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FBP_FILTERS)}, got {filter!r}")
        if isinstance(frequency_scaling, bool) or not isinstance(frequency_scaling, numbers.Real) \
                or not 0 < float(frequency_scaling) <= 1:
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

    Geometry, scaling and backends: see the module docstring. ``angles`` (radians) may be any finite
    set (limited angle, sparse, unordered); by default ``i * pi / n_angles``. ``projector`` is the
    ASTRA kernel: ``"linear"`` (Joseph, default), ``"line"``, ``"strip"`` or ``"cuda"`` (GPU only).

    >>> op = ParallelBeamCT(9, 4, backend="astra")
    >>> y = op(torch.ones(1, 1, 9, 9))   # line integrals in pixels: the central ray crosses 9 pixels
    >>> y.shape, float(y[0, 0, 0, 6])
    (torch.Size([1, 1, 4, 13]), 9.0)
    """

    def __init__(self, image_size: int, n_angles: int, *, angles: Sequence[float] | np.ndarray | Tensor | None = None,
                 n_detectors: int | None = None, backend: str = "auto", projector: str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        image_size = _positive_int(image_size, "image_size")
        theta = _make_angles(n_angles, angles, math.pi)
        if n_detectors is None:
            n_detectors = image_size + 2 * math.ceil((math.sqrt(2) - 1) * image_size / 2)
        n_detectors = _positive_int(n_detectors, "n_detectors")
        geometry = _Geometry2D("parallel", image_size, theta, n_detectors, 1.0)
        super().__init__(geometry, backend, projector, dtype)

    def fbp(self, y: Tensor, filter: str = "ramp", frequency_scaling: float = 1.0) -> Tensor:
        """x = d * A^T (w (h * y)): filtered back-projection, ``(B, C, n_angles, n_det) -> (B, C, N, N)``.

        ``filter`` in ``FBP_FILTERS``; ``frequency_scaling`` in (0, 1] cuts the filter off above that
        fraction of the Nyquist frequency. Uses this operator's adjoint (any backend), so it is
        differentiable wherever the operator is.
        """
        self._check(y, self.out_shape, self.out_dtype, "sinogram y (to fbp)")
        d = self.detector_spacing
        q = self._filter(y, d, filter, frequency_scaling) * self._angle_weights[:, None]
        # A^T spreads a bin over its pixels with weights summing to ~ 1/d per angle (pixel area 1).
        return self.adjoint(q * d)


class FanBeamCT(_Tomography2D):
    """y = A x: 2D fan-beam ray transform (flat detector), ``(B, C, N, N) -> (B, C, n_angles, n_detectors)``.

    ``source_radius`` / ``detector_radius``: distances of the source and of the detector line from
    the rotation centre, in pixels; the source must lie outside the circle circumscribing the image
    (``source_radius > N / sqrt(2)``). Bins are ``(R_s + R_d) / R_s`` pixels wide (1 pixel at the
    centre). ``angles`` default to ``2 pi i / n_angles``. ``projector``: ``"line_fanflat"`` (default),
    ``"strip_fanflat"`` or ``"cuda"`` (GPU only). See the module docstring for the convention.

    >>> op = FanBeamCT(8, 6, source_radius=20.0, detector_radius=10.0, backend="astra")
    >>> op(torch.ones(2, 1, 8, 8)).shape
    torch.Size([2, 1, 6, 12])
    """

    _period = 2 * math.pi
    _default_projector = "line_fanflat"
    _projectors = _FAN_PROJECTORS

    def __init__(self, image_size: int, n_angles: int, *, source_radius: float, detector_radius: float,
                 angles: Sequence[float] | np.ndarray | Tensor | None = None, n_detectors: int | None = None,
                 backend: str = "auto", projector: str | None = None, dtype: torch.dtype = torch.float32) -> None:
        image_size = _positive_int(image_size, "image_size")
        theta = _make_angles(n_angles, angles, 2 * math.pi)
        r_s = _positive_float(source_radius, "source_radius")
        r_d = _positive_float(detector_radius, "detector_radius")
        radius = image_size / math.sqrt(2)  # circle circumscribing the image
        if r_s <= radius:
            raise ValueError(f"source_radius must exceed the radius of the circle circumscribing the image "
                             f"(image_size / sqrt(2) = {radius:.3f} pixels) so the source lies outside the "
                             f"object; got {r_s}")
        magnification = (r_s + r_d) / r_s
        if n_detectors is None:
            # rays through the circumscribed circle hit the centre-scaled detector within R_s tan(asin(r/R_s))
            half = r_s * math.tan(math.asin(radius / r_s))
            n_detectors = 2 * math.ceil(half - (image_size % 2) / 2) + image_size % 2
        n_detectors = _positive_int(n_detectors, "n_detectors")
        geometry = _Geometry2D("fanflat", image_size, theta, n_detectors, magnification, r_s, r_d)
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
        self._check(y, self.out_shape, self.out_dtype, "sinogram y (to fbp)")
        g = self._geometry
        b, c = y.shape[:2]
        r_s = g.source_radius
        a = g.detector_spacing * r_s / (r_s + g.detector_radius)  # bin width at the rotation centre
        dtype, device = y.dtype, y.device
        s = (torch.arange(self.n_detectors, dtype=dtype, device=device) - (self.n_detectors - 1) / 2) * a
        q = y.reshape(b * c, self.n_angles, self.n_detectors) * (r_s / torch.sqrt(r_s ** 2 + s ** 2))
        q = 0.5 * self._filter(q, a, filter, frequency_scaling)  # (M, n_angles, n_det)
        n = self.image_size
        coord = torch.arange(n, dtype=dtype, device=device) - (n - 1) / 2
        px = coord.repeat(n)  # x of pixel (r, c) = c - (N-1)/2, flattened in C order
        py = (-coord).repeat_interleave(n)  # y = (N-1)/2 - r
        theta = torch.as_tensor(g.angles, dtype=dtype, device=device)
        weights = self._angle_weights.to(dtype)
        m = q.shape[0]
        out = torch.zeros(m, n * n, dtype=dtype, device=device)
        chunk = max(1, (1 << 22) // max(1, m * n * n))
        for j0 in range(0, self.n_angles, chunk):
            th = theta[j0:j0 + chunk, None]  # (k, 1)
            cos, sin = torch.cos(th), torch.sin(th)
            along = r_s - px * sin + py * cos  # R_s + <p, e_c>, e_c = (-sin, cos): source -> detector
            pos = r_s * (px * cos + py * sin) / along  # detector coordinate at the centre, (k, N*N)
            idx = pos / a + (self.n_detectors - 1) / 2
            valid = (idx >= 0) & (idx <= self.n_detectors - 1)
            i0 = idx.floor().clamp(0, max(self.n_detectors - 2, 0))
            frac = (idx - i0).clamp(0, 1)
            i0 = i0.long()
            i1 = (i0 + 1).clamp(max=self.n_detectors - 1)
            wgt = torch.where(valid, (r_s / along).pow(2), torch.zeros_like(along)) * weights[j0:j0 + chunk, None]
            k = th.shape[0]
            # flat indices into q[:, j0:j0+k, :] viewed as (M, k * n_det): one contiguous index_select
            base = (torch.arange(k, device=device) * self.n_detectors)[:, None]
            qc = q[:, j0:j0 + k, :].reshape(m, k * self.n_detectors)
            v0 = qc.index_select(1, (base + i0).reshape(-1)).reshape(m, k, n * n)
            v1 = qc.index_select(1, (base + i1).reshape(-1)).reshape(m, k, n * n)
            out = out + (v0 * ((1 - frac) * wgt) + v1 * (frac * wgt)).sum(dim=1)
        return out.reshape(b, c, n, n)


def _matrix_auto_max_bytes() -> int:
    value = os.environ.get("MEDRECON_CT_MATRIX_MAX_BYTES")
    if value is None:
        return MATRIX_AUTO_MAX_BYTES
    try:
        return int(float(value))
    except ValueError as exc:
        raise ValueError(f"MEDRECON_CT_MATRIX_MAX_BYTES must be a number of bytes, got {value!r}") from exc


# ---------------------------------------------------------------------------------------- 3D cone beam
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

    def __init__(self, volume_shape: Sequence[int], n_angles: int, *, source_radius: float,
                 detector_radius: float, angles: Sequence[float] | np.ndarray | Tensor | None = None,
                 detector_shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32) -> None:
        if len(tuple(volume_shape)) != 3:
            raise ValueError(f"volume_shape must be (D, H, W), got {volume_shape!r}")
        d, h, w = (_positive_int(s, "volume_shape entries") for s in volume_shape)
        theta = _make_angles(n_angles, angles, 2 * math.pi)
        r_s = _positive_float(source_radius, "source_radius")
        r_d = _positive_float(detector_radius, "detector_radius")
        radius = 0.5 * math.sqrt(h * h + w * w + d * d)
        if r_s <= radius:
            raise ValueError(f"source_radius must exceed the radius of the sphere around the volume "
                             f"({radius:.3f} voxels); got {r_s}")
        magnification = (r_s + r_d) / r_s
        if detector_shape is None:
            half = r_s * math.tan(math.asin(radius / r_s))
            detector_shape = (2 * math.ceil(half) + 1, 2 * math.ceil(half) + 1)
        rows, cols = (_positive_int(s, "detector_shape entries") for s in detector_shape)
        # The GPU check comes before any ASTRA 3D call (see the class docstring).
        if not _astra_cuda_available():
            raise RuntimeError("ConeBeamCT needs a CUDA GPU and a CUDA build of ASTRA (3D projection runs on "
                               "the GPU only); none was found")
        super().__init__((d, h, w), (theta.size, rows, cols), dtype=dtype)
        self.angles = theta
        self.source_radius, self.detector_radius, self.magnification = r_s, r_d, magnification
        self._ids: dict | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        clone = copy.copy(self)
        clone.__dict__ = {k: copy.deepcopy(v, memo) for k, v in self.__dict__.items() if k not in ("_ids", "_lock")}
        clone._ids, clone._lock = None, threading.Lock()
        return clone

    def _setup(self) -> dict:
        if self._ids is not None:
            return self._ids
        astra = _astra()
        d, h, w = self.in_shape
        n_angles, rows, cols = self.out_shape
        vol_geom = astra.create_vol_geom(h, w, d)
        proj_geom = astra.create_proj_geom("cone", self.magnification, self.magnification, rows, cols,
                                           self.angles, self.source_radius, self.detector_radius)
        vol = np.zeros((d, h, w), dtype=np.float32)
        proj = np.zeros((rows, n_angles, cols), dtype=np.float32)  # ASTRA's 3D projection layout
        vol_id = astra.data3d.link("-vol", vol_geom, vol)
        proj_id = astra.data3d.link("-proj3d", proj_geom, proj)
        fp_cfg = astra.astra_dict("FP3D_CUDA")
        fp_cfg.update(VolumeDataId=vol_id, ProjectionDataId=proj_id)
        bp_cfg = astra.astra_dict("BP3D_CUDA")
        bp_cfg.update(ReconstructionDataId=vol_id, ProjectionDataId=proj_id)
        self._ids = {"vol": vol, "proj": proj, "vol_id": vol_id, "proj_id": proj_id,
                     "fp": astra.algorithm.create(fp_cfg), "bp": astra.algorithm.create(bp_cfg)}
        return self._ids

    def __del__(self):
        ids = getattr(self, "_ids", None)
        if not ids:
            return
        try:
            astra = _astra()
            astra.algorithm.delete([ids["fp"], ids["bp"]])
            astra.data3d.delete([ids["vol_id"], ids["proj_id"]])
        except Exception:  # noqa: BLE001
            pass

    def measurement_support(self) -> Tensor:
        """Every detector pixel carries data: all True, ``out_shape``."""
        return torch.ones(self.out_shape, dtype=torch.bool, device=self.device)

    def _A(self, x: Tensor) -> Tensor:
        src = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        out = torch.empty((x.shape[0], *self.out_shape), dtype=torch.float32)
        with self._lock:
            ids = self._setup()
            for i in range(src.shape[0]):
                np.copyto(ids["vol"], src[i])
                _astra().algorithm.run(ids["fp"])
                out[i] = torch.from_numpy(ids["proj"]).transpose(0, 1)  # (rows, angles, cols) -> (angles, rows, cols)
        return out.to(device=x.device, dtype=x.dtype)

    def _AH(self, y: Tensor) -> Tensor:
        src = y.detach().to(device="cpu", dtype=torch.float32).numpy()
        out = torch.empty((y.shape[0], *self.in_shape), dtype=torch.float32)
        with self._lock:
            ids = self._setup()
            for i in range(src.shape[0]):
                np.copyto(ids["proj"], src[i].transpose(1, 0, 2))
                _astra().algorithm.run(ids["bp"])
                out[i] = torch.from_numpy(ids["vol"])
        return out.to(device=y.device, dtype=y.dtype)
