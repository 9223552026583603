"""Latent-space solvers for generator priors x = G(z) (VAE decoders, GAN generators).

Both solvers of Duff, Campbell & Ehrhardt, "Regularising inverse problems with generative machine
learning models" (J. Math. Imaging Vis., 2024; arXiv:2107.11191):

* ``range_solve``: ``min_z  w ||A G(z) - y||^2 + lam ||z||^2``, then ``x = G(z)`` (the hard range
  constraint; "range" in the paper's tables).
* ``soft_range_solve``: ``min_{x,z}  w ||A x - y||^2 + lam (||G(z) - x||^2 + mu ||z||^2)`` (the
  soft constraint, x may leave the range of G), by alternating an exact x-step
  ``(w A^H A + lam I) x = w A^H y + lam G(z)`` (conjugate gradients) with a few Adam steps on z,
  PALM-style (block-coordinate descent, each block decreasing the same objective), until the
  relative change of x falls below ``tol``.

``w`` is ``data_weight`` (the methods in ``medrecon.methods.vae`` pass ``1 / ||A||^2`` so that ``lam``
does not depend on how an operator is scaled).

Only the ``GenerativePrior`` part of a model is used: a ``decode`` callable and latent start points
``z0`` of shape ``(R, B, *latent_shape)`` (R restarts for each of the B measurements). Restarts run
together as one batch (Adam is elementwise, so they do not interact) and the restart with the lowest
final objective is returned for each measurement. A GAN prior passes its generator's forward as
``decode`` and its own ``z0`` (random draws, ``medrecon.methods.gan``); nothing here knows the
model's class. Real generators work with complex operators (MRI): G(z) is cast to ``op.in_dtype``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.solvers.variational import conjugate_gradient

__all__ = ["LatentResult", "range_solve", "soft_range_solve", "sum_sq", "initial_image"]

Decoder = Callable[[Tensor], Tensor]


@dataclass
class LatentResult:
    """x: (B, C, *img), z: (B, *latent), objective: (B,) final objective, info: iteration counts etc."""

    x: Tensor
    z: Tensor
    objective: Tensor
    info: dict = field(default_factory=dict)


def sum_sq(t: Tensor) -> Tensor:
    """||t_b||^2 for each batch element: ``(B, ...) -> (B,)`` (real or complex)."""
    return (t.abs() if t.is_complex() else t).pow(2).reshape(t.shape[0], -1).sum(dim=1)


def initial_image(op: LinearOperator, y: Tensor) -> Tensor:
    """A quick real image from the data: the magnitude of ``op.direct(y)`` (FBP for CT, zero-filled for
    MRI, ``A^H y / ||A||^2`` by default). ``(B, C, *out) -> (B, C, *in)`` real."""
    with torch.no_grad():
        x = op.direct(y)
    return x.abs() if x.is_complex() else x


def _to_op(op: LinearOperator, g: Tensor) -> Tensor:
    return g.to(op.in_dtype) if op.in_complex and not g.is_complex() else g


def _stack_restarts(y: Tensor, z0: Tensor) -> tuple[Tensor, int, int]:
    if z0.dim() < 2:
        raise ValueError(f"z0 must have shape (R, B, *latent_shape), got {tuple(z0.shape)}")
    r, b = z0.shape[:2]
    if b != y.shape[0]:
        raise ValueError(f"z0 has {b} starts per restart but y has batch size {y.shape[0]}")
    y_rep = y.unsqueeze(0).expand(r, *y.shape).reshape(r * b, *y.shape[1:])
    return y_rep, r, b


def _pick_best(objective: Tensor, r: int, b: int, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Per measurement, the restart with the lowest objective. objective: (R*B,)."""
    best = objective.reshape(r, b).argmin(dim=0)  # (B,)
    idx = best * b + torch.arange(b, device=best.device)
    return tuple(t[idx] for t in (objective, *tensors))


def range_solve(
    op: LinearOperator,
    y: Tensor,
    decode: Decoder,
    z0: Tensor,
    *,
    lam: float,
    n_iter: int = 300,
    lr: float = 5e-2,
    data_weight: float = 1.0,
    tol: float = 0.0,
    callback: Callable | None = None,
    penalty: Callable[[Tensor, Tensor], Tensor] | None = None,
    project: Callable[[Tensor], Tensor] | None = None,
) -> LatentResult:
    """z* = argmin_z  w||A G(z) - y||^2 + lam||z||^2 (+ penalty(z, G(z))) (Adam), x = G(z*).

    y: (B, C, *op.out_shape), z0: (R, B, *latent) -> x: (B, C, *op.in_shape), z: (B, *latent).
    The best iterate (lowest objective) of each restart is kept; Adam stops early when no
    objective improved by more than ``tol`` (relative) over 25 iterations (``tol=0``: run all).
    ``callback(k, x, info)`` gets the current best image of each measurement.
    Extension points (GAN priors): ``penalty(z, G(z)) -> (N,)`` is added to the objective;
    ``project(z) -> z`` is applied after each Adam step (and must be applied to z0 by the caller).
    """
    y_rep, r, b = _stack_restarts(y, z0)
    z = z0.reshape(r * b, *z0.shape[2:]).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best_obj = torch.full((r * b,), float("inf"), device=z.device)
    best_z = z.detach().clone()
    last_improve_check = best_obj.clone()
    k_done = 0
    for k in range(n_iter):
        opt.zero_grad(set_to_none=True)
        g = decode(z)
        obj = data_weight * sum_sq(op(_to_op(op, g)) - y_rep) + lam * sum_sq(z)  # (R*B,)
        if penalty is not None:
            obj = obj + penalty(z, g)
        with torch.no_grad():
            improved = obj < best_obj
            best_obj = torch.where(improved, obj.detach(), best_obj)
            best_z[improved] = z.detach()[improved]
        obj.sum().backward()
        opt.step()
        if project is not None:
            with torch.no_grad():
                z.copy_(project(z))
        k_done = k + 1
        if callback is not None:
            with torch.no_grad():
                o, zb = _pick_best(best_obj, r, b, best_z)
                callback(k, decode(zb), {"objective": o, "z": zb})
        if tol > 0 and (k + 1) % 25 == 0:
            rel = (last_improve_check - best_obj) / best_obj.abs().clamp_min(1e-30)
            if bool((rel <= tol).all()):
                break
            last_improve_check = best_obj.clone()
    with torch.no_grad():  # the objective of the final best iterate (Adam's last step is not evaluated)
        g = decode(best_z)
        obj = data_weight * sum_sq(op(_to_op(op, g)) - y_rep) + lam * sum_sq(best_z)
        if penalty is not None:
            obj = obj + penalty(best_z, g)
        best_obj = torch.minimum(best_obj, obj)
        o, zb = _pick_best(best_obj, r, b, best_z)
        x = decode(zb)
    return LatentResult(x=x, z=zb, objective=o, info={"n_iter": k_done, "restarts": r})


def soft_range_solve(
    op: LinearOperator,
    y: Tensor,
    decode: Decoder,
    z0: Tensor,
    *,
    lam: float,
    mu: float,
    n_iter: int = 50,
    z_steps: int = 10,
    z_lr: float = 2e-2,
    cg_iter: int = 30,
    cg_tol: float = 1e-6,
    data_weight: float = 1.0,
    tol: float = 1e-4,
    callback: Callable | None = None,
) -> LatentResult:
    """(x*, z*) = argmin_{x,z}  w||A x - y||^2 + lam(||G(z) - x||^2 + mu||z||^2), returns x*.

    Alternates (PALM-style block descent) an exact x-step by conjugate gradients,
    ``(w A^H A + lam I) x = w A^H y + lam G(z)``, with ``z_steps`` Adam steps on
    ``||G(z) - x||^2 + mu||z||^2`` (Adam's state persists across outer iterations). Stops when
    ``||x_k - x_{k-1}|| <= tol ||x_k||`` for every measurement, or after ``n_iter`` outer iterations.
    y: (B, C, *op.out_shape), z0: (R, B, *latent) -> x: (B, C, *op.in_shape) (op.in_dtype).
    """
    if lam <= 0:
        raise ValueError(f"lam must be positive for the soft-range x-step, got {lam}")
    y_rep, r, b = _stack_restarts(y, z0)
    z = z0.reshape(r * b, *z0.shape[2:]).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=z_lr)
    with torch.no_grad():
        rhs_data = data_weight * op.adjoint(y_rep)
        x = _to_op(op, decode(z))

    def normal(v: Tensor) -> Tensor:
        return data_weight * op.normal(v) + lam * v

    converged_at = None
    obj = None
    for k in range(n_iter):
        with torch.no_grad():
            g = _to_op(op, decode(z))
            x_new = conjugate_gradient(normal, rhs_data + lam * g, x, n_iter=cg_iter, tol=cg_tol)
            change = sum_sq(x_new - x).sqrt() / sum_sq(x_new).sqrt().clamp_min(1e-30)
            x = x_new
        for _ in range(z_steps):
            opt.zero_grad(set_to_none=True)
            loss = sum_sq(_to_op(op, decode(z)) - x) + mu * sum_sq(z)
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            range_term = sum_sq(_to_op(op, decode(z)) - x) + mu * sum_sq(z)
            obj = data_weight * sum_sq(op(x) - y_rep) + lam * range_term
        if callback is not None:
            o, xb = _pick_best(obj, r, b, x)
            callback(k, xb, {"objective": o, "change": float(change.max())})
        if k > 0 and bool((change <= tol).all()):
            converged_at = k + 1
            break
    if obj is None:
        raise ValueError("n_iter must be at least 1")
    o, xb, zb = _pick_best(obj, r, b, x, z.detach())
    return LatentResult(
        x=xb,
        z=zb,
        objective=o,
        info={"n_iter": converged_at or n_iter, "converged": converged_at is not None, "restarts": r},
    )
