"""The 2D projector backends, each an object behind one interface (:class:`Backend`).

A backend applies the ray transform of one :class:`~.geometry.Geometry2D` and kernel to a flat
batch: ``forward (N, N_img, N_img) -> (N, n_angles, n_detectors)`` and ``adjoint`` back. Backends
are ``nn.Module`` s so that what they hold in torch (the matrix backend's CSR buffers) moves with
the operator's ``.to(device, dtype)``; ASTRA and ODL state is created lazily and never copied.

* :class:`MatrixBackend` (``"matrix"``): ASTRA's sparse system matrix from the on-disk cache, CSR and
  CSR transpose as plain buffers, one torch sparse matmul per batch on any device.
* :class:`AstraBackend` (``"astra"``): ASTRA's 2D CPU projectors (or CUDA with ``projector="cuda"``).
* :class:`OdlBackend` (``"odl"``): ``odl.applications.tomo.RayTransform(impl="astra_cpu")``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from .._sparse import csr_of, register_csr
from ._astra import AstraFPBP
from .geometry import Geometry2D
from .matrix_cache import load_system_matrix

__all__ = ["Backend", "MatrixBackend", "AstraBackend", "OdlBackend", "BACKENDS"]


class Backend(nn.Module):
    """One way to apply a 2D ray transform: ``forward`` = A, ``adjoint`` = A^T on ``(N, *shape)`` tensors."""

    name: str = ""

    def __init__(self, geometry: Geometry2D, projector: str) -> None:
        super().__init__()
        self.geometry = geometry
        self.projector = projector

    def forward(self, x: Tensor) -> Tensor:  # (N, H, W) -> (N, n_angles, n_det)
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:  # (N, n_angles, n_det) -> (N, H, W)
        raise NotImplementedError


class MatrixBackend(Backend):
    """A = W, A^T = W^T with W the cached ASTRA system matrix (float values of the operator's dtype)."""

    name = "matrix"

    def __init__(self, geometry: Geometry2D, projector: str, dtype: torch.dtype) -> None:
        super().__init__(geometry, projector)
        w = load_system_matrix(geometry, projector)
        wt = w.T.tocsr()
        index = torch.int32 if max(w.nnz, *w.shape) < 2**31 - 1 else torch.int64
        for name, m in (("w", w), ("wt", wt)):
            register_csr(
                self,
                name,
                torch.from_numpy(m.indptr.astype(np.int64)).to(index),
                torch.from_numpy(m.indices.astype(np.int64)).to(index),
                torch.from_numpy(m.data.astype(np.float32)).to(dtype),
                persistent=False,
            )
        self.matrix_shape = tuple(int(s) for s in w.shape)

    def system_matrix(self) -> Tensor:
        """W as a torch sparse CSR tensor ``(n_angles * n_detectors, N * N)``."""
        return csr_of(self, "w", self.matrix_shape)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        y = self.system_matrix() @ x.reshape(n, -1).T.contiguous()  # (n_angles * n_det, N)
        return y.T.reshape(n, *self.geometry.proj_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        n = y.shape[0]
        x = csr_of(self, "wt", self.matrix_shape[::-1]) @ y.reshape(n, -1).T.contiguous()  # (N * N, N)
        return x.T.reshape(n, *self.geometry.vol_shape)


class AstraBackend(Backend):
    """ASTRA FP/BP with one algorithm pair and linked buffers per operator (CPU, single-threaded)."""

    name = "astra"

    def __init__(self, geometry: Geometry2D, projector: str, dtype: torch.dtype | None = None) -> None:
        super().__init__(geometry, projector)
        self._fpbp = AstraFPBP(geometry, projector)

    def forward(self, x: Tensor) -> Tensor:
        return self._fpbp.run(x, True)

    def adjoint(self, y: Tensor) -> Tensor:
        return self._fpbp.run(y, False)


class OdlBackend(Backend):
    """ODL RayTransform (impl='astra_cpu') on the same geometry and kernel, built lazily.

    ODL's arrays are indexed ``[x, y]`` with ``y`` growing with the second index, so an image of this
    package's layout maps to ``image[::-1].T``; ODL needs increasing angles, so they are sorted
    and the sinogram rows permuted back. ODL weights both spaces by 1 here (pixel and bin sizes
    enter only through the partitions), so its adjoint is the transpose; the dot-product test checks it.
    """

    name = "odl"

    def __init__(self, geometry: Geometry2D, projector: str, dtype: torch.dtype | None = None) -> None:
        super().__init__(geometry, projector)
        self.order = np.argsort(geometry.angles, kind="stable")
        if np.any(np.diff(geometry.angles[self.order]) <= 0) or geometry.angles.size < 2:
            raise ValueError(
                "backend='odl' needs at least 2 distinct angles (ODL partitions need strictly "
                "increasing angles); use backend='astra' or 'matrix'"
            )
        self.inverse_order = np.argsort(self.order)
        self._ray = None

    def __deepcopy__(self, memo):
        return OdlBackend(self.geometry, self.projector)

    def __getstate__(self):  # the ODL operator is rebuilt on first use after unpickling
        return {**self.__dict__, "_ray": None}

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
            geom = tomo.FanBeamGeometry(
                apart, dpart, src_radius=g.source_radius, det_radius=g.detector_radius
            )
        self._ray = tomo.RayTransform(space, geom, impl="astra_cpu")
        return self._ray

    def forward(self, x: Tensor) -> Tensor:
        ray = self._setup()
        src = x.detach().to(device="cpu", dtype=torch.float32).numpy()
        out = np.empty((src.shape[0], *self.geometry.proj_shape), dtype=np.float32)
        for i in range(src.shape[0]):
            sino = ray(np.ascontiguousarray(src[i][::-1].T), astra_proj_type=self.projector).data
            out[i] = np.asarray(sino)[self.inverse_order]
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        ray = self._setup()
        src = y.detach().to(device="cpu", dtype=torch.float32).numpy()
        out = np.empty((src.shape[0], *self.geometry.vol_shape), dtype=np.float32)
        for i in range(src.shape[0]):
            img = ray.adjoint(np.ascontiguousarray(src[i][self.order]), astra_proj_type=self.projector).data
            out[i] = np.asarray(img).T[::-1]
        return torch.from_numpy(out).to(device=y.device, dtype=y.dtype)


#: backend name -> class; every class takes ``(geometry, projector, dtype)``.
BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (MatrixBackend, AstraBackend, OdlBackend)}
