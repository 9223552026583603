"""Normalizing-flow method ``flow`` (Asim et al., ICML 2020) for ``medrecon.priors.flow.MultiScaleFlow``.

A flow's generator ``G = f^{-1}`` is invertible, so it has no representation error: the latent
maximum-likelihood problem ``min_z ||A G(z) - y||^2 + lam ||z||^2`` (or the image-space MAP problem
``min_x ||A x - y||^2 - lam log p(x)``) can reach every image. ``lam`` was called ``gamma`` before
(still accepted, with a ``DeprecationWarning``). ``lam`` may also be ``"noise"`` or ``"discrepancy"``
(with ``noise_std=``) or ``"sweep"`` (with ``x_true=``): see :mod:`medrecon.solvers.auto_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.priors.base import load_for_operator
from medrecon.priors.flow import DEFAULT_WEIGHTS, MultiScaleFlow
from medrecon.solvers.auto_weights import AUTO_RULES, resolve_learned_weight
from medrecon.solvers.latent import initial_image
from medrecon.solvers.variational import minimize

from .registry import number, one_of, optional, register_method, weight_or_rule

__all__ = ["reconstruct_flow"]


@register_method(
    "flow",
    checks={
        "lam": weight_or_rule(*AUTO_RULES),
        "lr": optional(number(0.0, strict=True)),
        "init": one_of("inverse", "zeros", "random"),
        "optimizer": one_of("adam", "lbfgs"),
        "mode": one_of("latent", "map"),
    },
    aliases={"gamma": "lam"},
    value_aliases={"init": {"zero": "zeros"}},
)
def reconstruct_flow(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | MultiScaleFlow | None = None,
    lam: float | str = 0.0,
    init: Literal["inverse", "zeros", "random"] = "inverse",
    optimizer: Literal["adam", "lbfgs"] = "adam",
    n_iter: int = 300,
    lr: float | None = None,
    mode: Literal["latent", "map"] = "latent",
    init_std: float = 0.7,
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Reconstruction with a flow prior G (Asim et al. 2020): ``y (B, 1, *out_shape) -> x (B, 1, H, W)``.

    * ``mode="latent"`` (the paper's formulation): ``z* = argmin_z ||A G(z) - y||^2 / ||A||^2 + lam ||z||^2``,
      ``x = G(z*)``;
    * ``mode="map"``: ``x* = argmin_x ||A x - y||^2 / ||A||^2 - lam log p(x) / D`` (explicit image-space
      MAP), optimised over the logit-space image ``u = logit(alpha + (1 - 2 alpha) x)`` (a bijection,
      so the minimisers are the same and x stays in the flow's domain).

    The data term is divided by ``||A||^2`` (as the VAE methods do) and, in MAP mode, ``log p(x)`` by
    the number of pixels D, so that ``lam`` does not depend on the operator's scaling or the image size.

    Args:
        weights: a ``MultiScaleFlow`` file from ``medrecon train`` or the model itself; default: the
            bundled weights for the operator's image size (``medrecon.priors.flow.DEFAULT_WEIGHTS``).
        lam: prior weight (``lam = 0`` in latent mode relies on the initialisation and early
            stopping, which the paper found to work well). ``"noise"``: the MAP weight (latent:
            ``noise_std^2 / ||A||^2``; map: ``2 D noise_std^2 / ||A||^2``); ``"discrepancy"``: Morozov's
            principle (``tau``); ``"sweep"``: the best of ``grid`` against ``x_true``.
        init: ``"inverse"``: z0 = G^{-1}(x0) with x0 the magnitude of ``op.direct(y)`` (FBP for CT,
            zero-filled for MRI) clipped to [0, 1] (MAP mode: x0 itself); ``"zeros"``: z0 = 0 (MAP: x = G(0));
            ``"random"``: z0 ~ N(0, init_std^2 I) from ``generator`` (MAP: x = G(z0)).
        optimizer: ``"adam"`` (lr default 0.05 latent, 0.05 map) or ``"lbfgs"`` (lr default 1, strong Wolfe).
        n_iter: optimizer iterations.

    MRI (``op.in_complex``): the flow models real magnitude images; G(z) enters the operator as a
    complex image with zero imaginary part and x is returned as ``op.in_dtype`` (zero phase).
    """
    flow, weights_file = load_for_operator(
        weights, MultiScaleFlow, op, y, defaults=DEFAULT_WEIGHTS, kind="flow"
    )
    h, w = op.in_shape
    real = op.real_dtype
    flow = flow.to(dtype=real)
    b = y.shape[0]
    data_weight = 1.0 / op.norm_squared()
    n_pix = h * w

    def to_op(x: Tensor) -> Tensor:
        return x.to(op.in_dtype) if op.in_complex else x

    def data_term(x: Tensor, yy: Tensor) -> Tensor:
        r = op(to_op(x)) - yy
        return data_weight * (r.abs().pow(2) if r.is_complex() else r.pow(2)).reshape(yy.shape[0], -1).sum(1)

    with torch.no_grad():
        if init == "inverse":
            x_init = initial_image(op, y).to(real).clamp(0.0, 1.0)
            z0 = flow.encode(x_init)
        elif init == "zeros":
            z0 = torch.zeros(b, *flow.latent_shape, dtype=real, device=op.device)
            x_init = flow.decode(z0)
        else:
            z0 = flow.sample_latent(b, generator=generator, temperature=init_std).to(real)
            x_init = flow.decode(z0)

    if lr is None:
        lr = 1.0 if optimizer == "lbfgs" else 0.05

    def cb(k: int, v: Tensor, info: dict):
        if callback is None:
            return None
        with torch.no_grad():
            x = flow.decode(v) if mode == "latent" else flow.preprocess.inverse(v) if flow.preprocess else v
        return callback(k, to_op(x), info)

    pre = flow.preprocess

    def run(sel: slice, lam_k: float) -> Tensor:
        yy = y[sel]
        if mode == "latent":

            def objective(z: Tensor) -> Tensor:
                return data_term(flow.decode(z), yy) + lam_k * z.pow(2).sum(1)

            z = minimize(objective, z0[sel].contiguous(), method=optimizer, n_iter=n_iter, lr=lr, callback=cb)
            with torch.no_grad():
                return to_op(flow.decode(z))

        def objective(u: Tensor) -> Tensor:
            x = pre.inverse(u) if pre is not None else u
            return data_term(x, yy) + (lam_k / n_pix) * flow.neg_log_prob_preprocessed(u)

        with torch.no_grad():
            u0 = pre(x_init[sel].clamp(0.0, 1.0))[0] if pre is not None else x_init[sel]
        # contiguous: torch's L-BFGS views the gradient flat (the FBP image may be a strided view)
        u = minimize(objective, u0.contiguous(), method=optimizer, n_iter=n_iter, lr=lr, callback=cb)
        with torch.no_grad():
            return to_op(pre.inverse(u) if pre is not None else u)

    x = resolve_learned_weight(
        lam,
        "flow",
        f"flow-{mode}",
        run,
        op,
        y,
        noise_std=noise_std,
        tau=tau,
        x_true=x_true,
        grid=grid,
        n_pixels=n_pix,
        weights_file=weights_file,
    )
    return x.detach()
