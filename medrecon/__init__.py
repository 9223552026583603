"""medrecon: medical-image reconstruction with classical and generative priors.

Public entry points: ``medrecon.reconstruct(op, y, method, **options)`` and the subpackages
``operators``, ``priors``, ``solvers``, ``data``, ``metrics``, ``training``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["reconstruct", "available_methods", "validate_options", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import medrecon` (and the CLI's --help) does not import torch and every model.
    if name in ("reconstruct", "available_methods", "validate_options"):
        from . import methods

        return getattr(methods, name)
    raise AttributeError(f"module 'medrecon' has no attribute {name!r}")
