"""Deep Image Prior methods ``dip`` and ``dip-tv``: thin wrappers over :func:`medrecon.priors.dip.fit_dip`.

Their options are ``fit_dip``'s keyword arguments (listed once, there), with the TV weight spelled
``lam`` as in every other method (``tv_weight`` is its deprecated alias).
"""

from __future__ import annotations

from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.priors.dip import fit_dip

from .registry import register_method

__all__ = ["reconstruct_dip", "reconstruct_dip_tv"]


@register_method("dip", options_from=fit_dip, exclude=("lam", "tv_weight"), aliases={"tv_weight": "lam"})
def reconstruct_dip(op: LinearOperator, y: Tensor, *, lam: float = 0.0, **options) -> Tensor:
    """x = f_theta*(z), theta* = argmin 1/2 ||A f_theta(z) - y||^2 (+ lam ||A||^2 TV): Deep Image Prior.

    ``y (B, C, *out) -> x (B, C, *in)``; the options are :func:`medrecon.priors.dip.fit_dip`'s. The trace (loss, iterate variance, PSNR when ``x_true`` is given, where and
    why it stopped) goes to ``trace_path``.

    >>> import torch
    >>> from medrecon.operators import Identity
    >>> y = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> reconstruct_dip(Identity((8, 8)), y, n_iter=3, depth=2, channels=4).shape
    torch.Size([1, 1, 8, 8])
    """
    return fit_dip(op, y, lam=lam, **options).x


@register_method("dip-tv", options_from=fit_dip, exclude=("lam", "tv_weight"), aliases={"tv_weight": "lam"})
def reconstruct_dip_tv(op: LinearOperator, y: Tensor, *, lam: float = 1e-3, **options) -> Tensor:
    """theta* = argmin 1/2 ||A f_theta(z) - y||^2 + lam ||A||^2 TV(f_theta(z)): DIP-TV (Liu et al. 2019).

    ``lam`` is relative like the ``tv`` method's (isotropic TV of :func:`medrecon.priors.tv.total_variation`,
    times ``||A||^2``); the DIP already regularises, so a smaller weight than TV alone needs is usual.
    Other options as :func:`medrecon.priors.dip.fit_dip`.
    """
    return fit_dip(op, y, lam=lam, **options).x
