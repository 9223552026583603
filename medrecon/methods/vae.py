"""VAE-prior methods ``vae-range`` and ``vae-soft`` for a decoder G (``medrecon.priors.vae.ConvVAE``).

The method of Duff, Campbell & Ehrhardt, "Regularising inverse problems with generative machine
learning models" (J. Math. Imaging Vis. 2024, arXiv:2107.11191): a VAE is trained on clean images
and its decoder G regularises a reconstruction by the distance of x to the range of G.

* ``vae-range`` (:func:`reconstruct_range`): ``min_z ||A G(z) - y||^2/||A||^2 + lam ||z||^2``.
* ``vae-soft`` (:func:`reconstruct_soft`):
  ``min_{x,z} ||A x - y||^2/||A||^2 + lam (||G(z) - x||^2 + mu ||z||^2)``.

``lam`` may also be ``"noise"`` or ``"discrepancy"`` (with ``noise_std=``, the std of the measurement
noise) or ``"sweep"`` (with ``x_true=``): weights without a ground truth, see
:mod:`medrecon.solvers.auto_weights`.

Both start from the encoder's mean applied to the operator's direct reconstruction (``op.direct``:
FBP for CT, zero-filled for MRI; magnitude, clipped to [0, 1]) plus ``restarts - 1`` draws from the
latent prior N(0, I).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.priors.base import load_for_operator
from medrecon.priors.vae import DEFAULT_WEIGHTS, ConvVAE
from medrecon.solvers.auto_weights import AUTO_RULES, resolve_learned_weight
from medrecon.solvers.latent import initial_image, range_solve, soft_range_solve

from .registry import Check, number, register_method, weight_or_rule

#: ``lam``: a weight >= 0 or a rule of :mod:`medrecon.solvers.auto_weights`.
_LAM = weight_or_rule(*AUTO_RULES)


def _positive_or_rule(v: object) -> str | None:
    """vae-soft's lam: > 0 (its x-step divides by it) or a rule."""
    if isinstance(v, str):
        return _LAM(v)
    if number(0.0, strict=True)(v) is None:
        return None
    return "a finite number > 0 or " + " or ".join(map(repr, AUTO_RULES))


_SOFT_LAM: Check = _positive_or_rule

__all__ = ["reconstruct_range", "reconstruct_soft"]


def _setup(op: LinearOperator, y: Tensor, weights, restarts: int, generator: torch.Generator | None):
    vae, weights_file = load_for_operator(weights, ConvVAE, op, y, defaults=DEFAULT_WEIGHTS, kind="VAE")
    x_init = initial_image(op, y).to(op.real_dtype if not op.in_complex else torch.float32)
    vae = vae.to(dtype=x_init.dtype)
    with torch.no_grad():
        mu, _ = vae.encode(x_init.clamp(0.0, 1.0))  # (B, latent)
    starts = [mu]
    for _ in range(restarts - 1):
        starts.append(vae.sample_latent(y.shape[0], generator=generator).to(mu.dtype))
    z0 = torch.stack(starts)  # (R, B, latent)
    data_weight = 1.0 / op.norm_squared()
    return vae, z0, data_weight, weights_file


@register_method("vae-range", checks={"lam": _LAM})
def reconstruct_range(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | ConvVAE | None = None,
    lam: float | str = 1e-4,
    n_iter: int = 300,
    lr: float = 5e-2,
    restarts: int = 4,
    tol: float = 1e-5,
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x = G(z*), z* = argmin_z ||A G(z) - y||^2 / ||A||^2 + lam ||z||^2 (Duff et al.'s range method).

    y: (B, 1, *op.out_shape) -> x: (B, 1, H, W) (real, in [0, 1]).

    Args:
        weights: a ``ConvVAE`` file from ``medrecon train`` or the model itself; default: the bundled
            weights for the operator's image size (``medrecon.priors.vae.DEFAULT_WEIGHTS``).
        lam: latent prior weight (the data term is divided by ||A||^2, so lam does not depend on
            the operator's scaling). The default was chosen on training-split images of the bundled
            problems (sparse-angle CT, 2% noise). ``"noise"``: the MAP weight ``noise_std^2 / ||A||^2``;
            ``"discrepancy"``: Morozov's principle (``tau``), or the best data fit when the range of G
            cannot reach the noise level; ``"sweep"``: the best of ``grid`` against ``x_true``.
        n_iter, lr: Adam iterations and step size on z.
        restarts: 1 start from the encoder applied to the direct reconstruction ``op.direct(y)``, plus
            ``restarts - 1`` draws from N(0, I) (drawn from ``generator``); the best is kept.
        tol: stop when no objective improved by more than ``tol`` (relative) over 25 iterations.
    """
    vae, z0, w, weights_file = _setup(op, y, weights, restarts, generator)

    def run(sel: slice, lam_k: float) -> Tensor:
        res = range_solve(
            op,
            y[sel],
            vae.decode,
            z0[:, sel],
            lam=lam_k,
            n_iter=n_iter,
            lr=lr,
            data_weight=w,
            tol=tol,
            callback=callback,
        )
        return res.x.detach()

    return resolve_learned_weight(
        lam,
        "vae-range",
        "vae-range",
        run,
        op,
        y,
        noise_std=noise_std,
        tau=tau,
        x_true=x_true,
        grid=grid,
        weights_file=weights_file,
    )


@register_method("vae-soft", checks={"lam": _SOFT_LAM})
def reconstruct_soft(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | ConvVAE | None = None,
    lam: float | str = 1e-3,
    mu: float = 1e-2,
    n_iter: int = 60,
    z_steps: int = 10,
    z_lr: float = 2e-2,
    cg_iter: int = 30,
    restarts: int = 1,
    tol: float = 1e-4,
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x* of min_{x,z} ||A x - y||^2 / ||A||^2 + lam (||G(z) - x||^2 + mu ||z||^2) (Duff et al.'s soft range).

    y: (B, 1, *op.out_shape) -> x: (B, 1, H, W) (``op.in_dtype``; real for CT).

    Args:
        weights: as in ``reconstruct_range``.
        lam: weight of the distance to the range of G (relative to the data term / ||A||^2); MAP
            reasoning gives lam ~ sigma^2 / (tau^2 ||A||^2) for noise sigma and a range distance of
            tau per pixel. Default chosen on training-split images of the bundled CT problems.
            ``"noise"``: the MAP weight ``noise_std^2 / (mu ||A||^2)`` (``mu`` = the squared range
            distance per pixel); ``"discrepancy"``: Morozov's principle (``tau``); ``"sweep"``: the
            best of ``grid`` against ``x_true`` (see :mod:`medrecon.solvers.auto_weights`).
        mu: latent prior weight inside the bracket.
        n_iter: outer (x-step, z-steps) iterations; stops earlier when x changes by less than ``tol``.
        z_steps, z_lr: Adam steps on z per outer iteration and their step size.
        cg_iter: conjugate-gradient iterations of each exact x-step.
        restarts: as in ``reconstruct_range`` (1: the encoder start only).
    """
    vae, z0, w, weights_file = _setup(op, y, weights, restarts, generator)

    def run(sel: slice, lam_k: float) -> Tensor:
        res = soft_range_solve(
            op,
            y[sel],
            vae.decode,
            z0[:, sel],
            lam=max(lam_k, 1e-30),
            mu=mu,
            n_iter=n_iter,
            z_steps=z_steps,
            z_lr=z_lr,
            cg_iter=cg_iter,
            data_weight=w,
            tol=tol,
            callback=callback,
        )
        return res.x.detach()

    return resolve_learned_weight(
        lam,
        "vae-soft",
        "vae-soft",
        run,
        op,
        y,
        noise_std=noise_std,
        tau=tau,
        x_true=x_true,
        grid=grid,
        mu=mu,
        weights_file=weights_file,
    )
