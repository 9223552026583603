"""Solvers: image-space variational methods (``variational``), classical reconstruction methods
(``classical``, registered in ``medrecon.methods``) and latent-space solvers (``latent``)."""
from .variational import conjugate_gradient, least_squares, minimize, pdhg_tv

__all__ = ["conjugate_gradient", "least_squares", "minimize", "pdhg_tv"]
