"""Forward operators: every one a batched ``LinearOperator`` with an exact adjoint."""

from .base import (
    AdjointOperator,
    ComposedOperator,
    GramOperator,
    LinearOperator,
    OperatorInputError,
    ScaledOperator,
    SumOperator,
    measurement_support,
    n_measurements,
)
from .coils import coil_maps, estimate_sensitivities, simulate_multicoil
from .ct import ConeBeamCT, FanBeamCT, ParallelBeamCT
from .espirit import espirit_maps
from .generic import DiagonalOperator, Identity, MatrixOperator
from .gradient import FiniteDifference2D
from .masks import make_mask, stable_seed
from .mri import MultiCoilMRI, SingleCoilMRI, fft2c, ifft2c
from .restoration import Denoising, Downsampling, Grayscale, Inpainting, center_block_mask, random_pixel_mask

__all__ = [
    "LinearOperator",
    "OperatorInputError",
    "ComposedOperator",
    "ScaledOperator",
    "SumOperator",
    "AdjointOperator",
    "GramOperator",
    "measurement_support",
    "n_measurements",
    "Identity",
    "DiagonalOperator",
    "MatrixOperator",
    "FiniteDifference2D",
    "ParallelBeamCT",
    "FanBeamCT",
    "ConeBeamCT",
    "SingleCoilMRI",
    "MultiCoilMRI",
    "fft2c",
    "ifft2c",
    "make_mask",
    "stable_seed",
    "simulate_multicoil",
    "estimate_sensitivities",
    "coil_maps",
    "espirit_maps",
    "Denoising",
    "Inpainting",
    "Downsampling",
    "Grayscale",
    "center_block_mask",
    "random_pixel_mask",
]
