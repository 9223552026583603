"""Forward operators: every one a batched ``LinearOperator`` with an exact adjoint."""
from .base import (
    AdjointOperator,
    ComposedOperator,
    GramOperator,
    LinearOperator,
    OperatorInputError,
    ScaledOperator,
    SumOperator,
)
from .generic import DiagonalOperator, Identity, MatrixOperator

__all__ = [
    "LinearOperator", "OperatorInputError", "ComposedOperator", "ScaledOperator", "SumOperator",
    "AdjointOperator", "GramOperator", "Identity", "DiagonalOperator", "MatrixOperator",
]
