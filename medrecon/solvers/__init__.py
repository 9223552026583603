"""Solvers: image-space variational solvers (``variational``), the choice of a regularisation weight
(``weights``) and latent-space solvers (``latent``). The reconstruction methods built on them are in
:mod:`medrecon.methods`."""

from .variational import conjugate_gradient, least_squares, minimize, pdhg_tv

__all__ = ["conjugate_gradient", "least_squares", "minimize", "pdhg_tv"]
