"""The on-disk cache of CT system matrices: ``$MEDRECON_CACHE/ct/<sha256>.npz``.

A matrix is ASTRA's own (``astra.projector.matrix``) for one geometry and kernel, stored as CSR
(float32 values, int32 indices, int64 row pointers), written atomically and loaded without pickle.
An unreadable or stale file is rebuilt, never trusted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._astra import astra
from .geometry import Geometry2D

#: "auto" picks the matrix backend while its estimated memory (CSR + transpose) stays below this.
MATRIX_AUTO_MAX_BYTES = 1 << 30
# Measured nonzeros per (angle * pixel) of ASTRA's matrices (128x128, 30 angles), for the "auto"
# memory estimate; +5% margin.
_NNZ_PER_ANGLE_PIXEL = {
    "line": 1.33,
    "linear": 1.9,
    "strip": 3.35,
    "line_fanflat": 1.38,
    "strip_fanflat": 2.45,
}


def ct_cache_dir() -> Path:
    """Where system matrices are cached: ``$MEDRECON_CACHE/ct`` or ``~/.cache/medrecon/ct``."""
    root = os.environ.get("MEDRECON_CACHE")
    return Path(root) / "ct" if root else Path.home() / ".cache" / "medrecon" / "ct"


def matrix_auto_max_bytes() -> int:
    """``$MEDRECON_CT_MATRIX_MAX_BYTES`` if set, else :data:`MATRIX_AUTO_MAX_BYTES`."""
    value = os.environ.get("MEDRECON_CT_MATRIX_MAX_BYTES")
    if value is None:
        return MATRIX_AUTO_MAX_BYTES
    try:
        return int(float(value))
    except ValueError as exc:
        raise ValueError(f"MEDRECON_CT_MATRIX_MAX_BYTES must be a number of bytes, got {value!r}") from exc


def matrix_nbytes_estimate(geometry: Geometry2D, projector: str) -> int:
    """Estimated memory of the system matrix and its transpose (float32 values, int32 indices)."""
    n_angles, n = int(geometry.angles.size), geometry.image_size
    nnz = _NNZ_PER_ANGLE_PIXEL.get(projector, 3.5) * n_angles * n**2
    rows = n_angles * geometry.n_detectors + n**2
    return int(nnz * 2 * (4 + 4) + 8 * rows)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """np.savez to ``path`` atomically (temporary file in the same directory, then os.replace)."""
    from medrecon.utils_io import atomic_write  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def build_system_matrix(geometry: Geometry2D, projector: str):
    """ASTRA's system matrix of the projector (scipy CSR, float32 values)."""
    a = astra()
    proj_id = a.create_projector(projector, geometry.proj_geom(), geometry.vol_geom())
    try:
        matrix_id = a.projector.matrix(proj_id)
        try:
            w = a.matrix.get(matrix_id)
        finally:
            a.matrix.delete(matrix_id)
    finally:
        a.projector.delete(proj_id)
    return w.astype(np.float32)


def load_system_matrix(geometry: Geometry2D, projector: str):
    """The cached system matrix (scipy CSR, sorted, no duplicates), built and stored on a miss."""
    import scipy.sparse  # noqa: PLC0415

    path = ct_cache_dir() / f"{geometry.key(projector)}.npz"
    shape = (int(geometry.angles.size) * geometry.n_detectors, geometry.image_size**2)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                w = scipy.sparse.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
            if w.shape == shape:
                return w
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale: rebuild below
    w = build_system_matrix(geometry, projector)
    w.sum_duplicates()
    w.sort_indices()
    _atomic_savez(
        path,
        data=w.data.astype(np.float32),
        indices=w.indices.astype(np.int32),
        indptr=w.indptr.astype(np.int64),
        shape=np.asarray(w.shape, dtype=np.int64),
    )
    return w
