"""ASTRA, imported lazily, and one FP/BP pair on linked buffers shared by the 2D and 3D operators."""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


def astra():
    """The ``astra`` module (a clear error when astra-toolbox is missing)."""
    try:
        import astra as _astra  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - astra is in the pinned stack
        raise ImportError("the CT operators need astra-toolbox (pip install astra-toolbox==2.5.0)") from exc
    return _astra


def cuda_available() -> bool:
    """A GPU usable by ASTRA. torch is asked first; ASTRA only when torch sees a GPU."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(astra().use_cuda())
    except Exception:  # noqa: BLE001
        return False


class AstraGeometry(Protocol):
    """What :class:`AstraFPBP` needs from a geometry."""

    three_d: bool
    vol_shape: tuple[int, ...]  # the image as the operator sees it
    proj_shape: tuple[int, ...]  # the measurement as the operator sees it
    proj_axes: tuple[int, ...]  # ASTRA's projection buffer = measurement.transpose(proj_axes)

    def vol_geom(self): ...

    def proj_geom(self): ...


class AstraFPBP:
    """ASTRA's forward and back projection on two float32 buffers linked once and reused.

    ``projector`` is the 2D kernel (``"linear"``, ``"line_fanflat"``, ...; ``"cuda"`` for the GPU
    algorithms); 3D geometries run ``FP3D_CUDA`` / ``BP3D_CUDA`` and take ``projector=None``.
    ASTRA ids are created on first use, so ``copy.deepcopy`` and pickling give an independent,
    not yet created pair; a lock serialises use of the shared buffers across threads.
    """

    def __init__(self, geometry: AstraGeometry, projector: str | None) -> None:
        self.geometry = geometry
        self.projector = projector
        self._ids: dict | None = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return AstraFPBP(self.geometry, self.projector)

    def __getstate__(self):
        return {"geometry": self.geometry, "projector": self.projector}

    def __setstate__(self, state):
        self.__init__(state["geometry"], state["projector"])

    def _setup(self) -> dict:
        if self._ids is not None:
            return self._ids
        a = astra()
        g = self.geometry
        vol_geom, proj_geom = g.vol_geom(), g.proj_geom()
        vol = np.zeros(g.vol_shape, dtype=np.float32)
        proj = np.zeros(tuple(g.proj_shape[i] for i in g.proj_axes), dtype=np.float32)
        ids: dict = {"vol": vol, "proj": proj}
        if g.three_d:
            data = a.data3d
            ids["vol_id"] = data.link("-vol", vol_geom, vol)
            ids["proj_id"] = data.link("-proj3d", proj_geom, proj)
            fp_cfg, bp_cfg = a.astra_dict("FP3D_CUDA"), a.astra_dict("BP3D_CUDA")
        else:
            cuda = self.projector == "cuda"
            if cuda and not cuda_available():
                raise RuntimeError("projector='cuda' needs a CUDA GPU usable by ASTRA; none was found")
            data = a.data2d
            ids["projector_id"] = a.create_projector(self.projector, proj_geom, vol_geom)
            ids["vol_id"] = data.link("-vol", vol_geom, vol)
            ids["proj_id"] = data.link("-sino", proj_geom, proj)
            fp_cfg = a.astra_dict("FP_CUDA" if cuda else "FP")
            bp_cfg = a.astra_dict("BP_CUDA" if cuda else "BP")
            fp_cfg["ProjectorId"] = bp_cfg["ProjectorId"] = ids["projector_id"]
        fp_cfg.update(VolumeDataId=ids["vol_id"], ProjectionDataId=ids["proj_id"])
        bp_cfg.update(ReconstructionDataId=ids["vol_id"], ProjectionDataId=ids["proj_id"])
        ids["fp"], ids["bp"] = a.algorithm.create(fp_cfg), a.algorithm.create(bp_cfg)
        self._ids = ids
        return ids

    def __del__(self):
        ids = getattr(self, "_ids", None)
        if not ids:
            return
        try:
            a = astra()
            a.algorithm.delete([ids["fp"], ids["bp"]])
            (a.data3d if self.geometry.three_d else a.data2d).delete([ids["vol_id"], ids["proj_id"]])
            if "projector_id" in ids:
                a.projector.delete(ids["projector_id"])
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def run(self, t: Tensor, forward: bool) -> Tensor:
        """``(N, *vol_shape) -> (N, *proj_shape)`` (forward) or back, in float32 on the CPU."""
        g = self.geometry
        axes = g.proj_axes
        out_shape = g.proj_shape if forward else g.vol_shape
        src = t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()  # no copy if already so
        out = torch.empty((t.shape[0], *out_shape), dtype=torch.float32)
        dst = out.numpy()
        with self._lock:
            ids = self._setup()
            algo = ids["fp"] if forward else ids["bp"]
            run = astra().algorithm.run
            for i in range(src.shape[0]):
                if forward:
                    np.copyto(ids["vol"], src[i])
                    run(algo)
                    np.copyto(dst[i], ids["proj"].transpose(axes))  # proj_axes is its own inverse
                else:
                    np.copyto(ids["proj"], src[i].transpose(axes))
                    run(algo)
                    np.copyto(dst[i], ids["vol"])
        return out.to(device=t.device, dtype=t.dtype)
