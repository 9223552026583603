"""Sparse CSR matrices kept as three plain buffers (row pointers, column indices, values).

Plain tensors survive ``copy.deepcopy`` and ``.to(device, dtype)``, which sparse CSR buffers do not
in torch 2.13; the CSR view is rebuilt per call by wrapping the buffers (no copy).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

_CSR_WARNED = False


def sparse_csr(crow: Tensor, col: Tensor, values: Tensor, shape) -> Tensor:
    """A sparse CSR view of three buffers (no copy, no invariant check)."""
    global _CSR_WARNED
    if not _CSR_WARNED:  # torch warns once per process that sparse CSR is beta: consume it quietly
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
        _CSR_WARNED = True
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def register_csr(
    module: nn.Module, name: str, crow: Tensor, col: Tensor, values: Tensor, *, persistent: bool = True
) -> None:
    """Register ``_{name}_crow``, ``_{name}_col``, ``_{name}_val`` on ``module``."""
    module.register_buffer(f"_{name}_crow", crow, persistent=persistent)
    module.register_buffer(f"_{name}_col", col, persistent=persistent)
    module.register_buffer(f"_{name}_val", values, persistent=persistent)


def csr_of(module: nn.Module, name: str, shape) -> Tensor:
    """The CSR matrix ``(rows, cols) = shape`` registered under ``name`` by :func:`register_csr`."""
    return sparse_csr(
        getattr(module, f"_{name}_crow"),
        getattr(module, f"_{name}_col"),
        getattr(module, f"_{name}_val"),
        shape,
    )
