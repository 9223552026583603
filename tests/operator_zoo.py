"""Every operator family, registered once, at tiny odd and even sizes (7x6, 9x8; CT images 7x7, 8x8).

``tests/test_operator_properties.py`` runs :func:`medrecon.testing.check_operator` (adjoint, ``A.H.H``,
linearity, dtype round trip, deepcopy, bad input, norm against the dense matrix, gradcheck) on each
entry, and checks that every public ``LinearOperator`` of ``medrecon.operators`` appears here. A new
operator gets all of that by adding one ``add(...)`` line. The per-file tests keep only what is
specific to an operator: an independent reference (numpy FFT, scikit-image, fastMRI, a dense
matrix) and one physical property.

Factories take a seeded ``torch.Generator`` and build float64 operators where the operator stores
its own numbers (the checks move them to float32 and back themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from medrecon.operators import (
    ConeBeamCT,
    DiagonalOperator,
    FanBeamCT,
    FiniteDifference2D,
    Identity,
    LinearOperator,
    MatrixOperator,
    MultiCoilMRI,
    ParallelBeamCT,
    SingleCoilMRI,
)
from medrecon.operators.restoration import (
    Denoising,
    Downsampling,
    Grayscale,
    Inpainting,
    center_block_mask,
    random_pixel_mask,
)

F64 = torch.float64
C128 = torch.complex128


@dataclass(frozen=True)
class Case:
    """One zoo entry: ``make(rng) -> op`` and how strictly to check it.

    ``rtol``: relative tolerance of the adjoint and linearity checks (``None``: check_operator's
    default for the operator's precision; backends computing in float32, such as ASTRA and ODL,
    need ~1e-5). ``backward``: run ``gradcheck`` in float64 (off for float32 backends, whose
    finite differences are rounding noise). ``gpu``: needs CUDA (the test is marked ``gpu``).
    """

    make: Callable[[torch.Generator], LinearOperator]
    rtol: float | None = None
    backward: bool = True
    gpu: bool = False


ZOO: dict[str, Case] = {}


def add(name: str, make: Callable[[torch.Generator], LinearOperator], **options) -> None:
    """Register ``make`` under ``name`` (unique)."""
    if name in ZOO:
        raise ValueError(f"operator zoo: {name!r} is registered twice")
    ZOO[name] = Case(make, **options)


def randn(shape, rng: torch.Generator, complex: bool = False) -> torch.Tensor:
    """Standard normal float64 (or complex128) tensor from ``rng``."""
    a = torch.randn(shape, dtype=F64, generator=rng)
    return torch.complex(a, torch.randn(shape, dtype=F64, generator=rng)) if complex else a


def _mask(shape, rng: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=rng) > 0.4).double()


@pytest.fixture(autouse=True, scope="module")
def matrix_cache(tmp_path_factory):
    """CT system matrices go to a temporary cache, never to ~/.cache (import it into a test module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDRECON_CACHE", str(tmp_path_factory.mktemp("medrecon_cache")))
        mp.delenv("MEDRECON_CT_MATRIX_MAX_BYTES", raising=False)
        yield


# ----------------------------------------------------------------------------- generic
add("identity-3x4", lambda rng: Identity((3, 4), dtype=F64))
add("identity-complex-3x4", lambda rng: Identity((3, 4), complex=True, dtype=F64))
add("diagonal-7x6", lambda rng: DiagonalOperator(randn((7, 6), rng)))
add("diagonal-complex-9x8", lambda rng: DiagonalOperator(randn((9, 8), rng, complex=True)))
add("matrix-7x5", lambda rng: MatrixOperator(randn((7, 5), rng), in_shape=(5,), out_shape=(7,)))
add("matrix-complex-7x5", lambda rng: MatrixOperator(randn((7, 5), rng, complex=True)))
add("matrix-sparse-2x3", lambda rng: MatrixOperator(randn((6, 6), rng).relu().to_sparse(), (2, 3), (3, 2)))

# ----------------------------------------------------------------------------- finite differences
add("gradient-7x6", lambda rng: FiniteDifference2D((7, 6), dtype=F64))
add("gradient-complex-9x8", lambda rng: FiniteDifference2D((9, 8), complex=True, dtype=F64))

# ----------------------------------------------------------------------------- restoration
add("denoising-7x6", lambda rng: Denoising((7, 6), dtype=F64))
add("denoising-complex-9x8", lambda rng: Denoising((9, 8), complex=True, dtype=F64))
add("inpainting-random-7x6", lambda rng: Inpainting(random_pixel_mask((7, 6), 0.5, generator=rng, dtype=F64)))
add("inpainting-centre-9x8", lambda rng: Inpainting(center_block_mask((9, 8), 3, dtype=F64)))
add("inpainting-complex-7x6", lambda rng: Inpainting(center_block_mask((7, 6), 2, dtype=F64), complex=True))
add("downsampling-box-2-8x6", lambda rng: Downsampling((8, 6), 2, "box", dtype=F64))
add("downsampling-box-3-7x6", lambda rng: Downsampling((7, 6), 3, "box", dtype=F64))
add("downsampling-gaussian-2-9x8", lambda rng: Downsampling((9, 8), 2, "gaussian", dtype=F64))
add("downsampling-lanczos-2-9x8", lambda rng: Downsampling((9, 8), 2, "lanczos", dtype=F64))
add(
    "downsampling-lanczos-complex-7x6",
    lambda rng: Downsampling((7, 6), 2, "lanczos", complex=True, dtype=F64),
)
add("grayscale-7x6", lambda rng: Grayscale((7, 6), dtype=F64))

# ----------------------------------------------------------------------------- MRI
add("mri-single-7x6", lambda rng: SingleCoilMRI(_mask((7, 6), rng)))
add("mri-single-columns-9x8", lambda rng: SingleCoilMRI(_mask((8,), rng), image_shape=(9, 8)))
add("mri-multi-3coils-7x6", lambda rng: MultiCoilMRI(_mask((7, 6), rng), randn((3, 7, 6), rng, complex=True)))
add(
    "mri-multi-1coil-columns-9x8",
    lambda rng: MultiCoilMRI(_mask((8,), rng), randn((1, 9, 8), rng, complex=True)),
)

# ----------------------------------------------------------------------------- CT
# ASTRA computes in float32 whatever the operator's dtype, and so do the astra and odl backends:
# adjoint and linearity hold to float32 rounding, and gradcheck is left to the matrix backend.
_FLOAT32_BACKEND = {"rtol": 1e-5, "backward": False}


def _parallel(n: int, backend: str, n_angles: int = 4, **kw) -> Callable[[torch.Generator], LinearOperator]:
    return lambda rng: ParallelBeamCT(n, n_angles, backend=backend, dtype=F64, **kw)


def _fan(n: int, backend: str, n_angles: int = 5, **kw) -> Callable[[torch.Generator], LinearOperator]:
    return lambda rng: FanBeamCT(
        n, n_angles, source_radius=3.0 * n, detector_radius=1.5 * n, backend=backend, dtype=F64, **kw
    )


for _n in (7, 8):
    for _backend in ("matrix", "astra", "odl"):
        _opts = {} if _backend == "matrix" else _FLOAT32_BACKEND
        add(f"ct-parallel-{_backend}-{_n}", _parallel(_n, _backend), **_opts)
        add(f"ct-fan-{_backend}-{_n}", _fan(_n, _backend), **_opts)
add("ct-parallel-line-matrix-7", _parallel(7, "matrix", projector="line"))
add("ct-parallel-strip-matrix-8", _parallel(8, "matrix", projector="strip"))
add("ct-fan-strip-matrix-7", _fan(7, "matrix", projector="strip_fanflat"))
add("ct-parallel-limited-angles-matrix-7", _parallel(7, "matrix", n_angles=3, angles=[2.0, 0.3, 1.1]))
# ASTRA's GPU back-projectors are close to, not exactly, the transpose.
add(
    "ct-parallel-cuda-8",
    lambda rng: ParallelBeamCT(8, 4, projector="cuda"),
    rtol=0.1,
    backward=False,
    gpu=True,
)
add(
    "ct-cone-6x7x8",
    lambda rng: ConeBeamCT((6, 7, 8), 5, source_radius=40.0, detector_radius=20.0),
    rtol=5e-2,
    backward=False,
    gpu=True,
)

# ----------------------------------------------------------------------------- compositions
add("composed-matrices", lambda rng: MatrixOperator(randn((4, 7), rng)) @ MatrixOperator(randn((7, 5), rng)))
add(
    "scaled-sum-matrices",
    lambda rng: 2.5 * MatrixOperator(randn((7, 5), rng)) - MatrixOperator(randn((7, 5), rng)),
)
add("scaled-complex-mri", lambda rng: (0.5 - 2.0j) * SingleCoilMRI(_mask((7, 6), rng)))
add("adjoint-matrix-complex", lambda rng: MatrixOperator(randn((7, 5), rng, complex=True)).H)
add("adjoint-mri-multi", lambda rng: MultiCoilMRI(_mask((6,), rng), randn((2, 7, 6), rng, complex=True)).H)
add("gram-matrix", lambda rng: MatrixOperator(randn((7, 5), rng)).gram())
add("gram-ct-parallel-matrix-7", lambda rng: ParallelBeamCT(7, 3, backend="matrix", dtype=F64).gram())
add(
    "gradient-of-downsampling",
    lambda rng: FiniteDifference2D((4, 3), dtype=F64) @ Downsampling((8, 6), 2, dtype=F64),
)
add(
    "inpainting-of-mri",
    lambda rng: Inpainting(_mask((9, 8), rng), complex=True) @ SingleCoilMRI(torch.ones(9, 8, dtype=F64)),
)
