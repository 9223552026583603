"""GAN-prior methods ``csgm`` and ``gan-d`` for a generator G (``medrecon.priors.gan.DCGANPrior``).

* ``csgm`` (:func:`reconstruct_csgm`): compressed sensing with generative models [Bora, Jalal, Price
  and Dimakis, ICML 2017]: ``z* = argmin_z ||A G(z) - y||^2 / ||A||^2 + lam ||z||^2`` with random
  restarts (the restart with the best data fit wins), ``x = G(z*)``.
* ``gan-d`` (:func:`reconstruct_gan_d`): the restoration objective of Yeh, Lim, Chen, Schwing,
  Hasegawa-Johnson and Do (ICASSP 2018), which adds the discriminator's estimate of the data log-density:
  ``min_z ||y - A G(z)||_p^p / ||A||^p + lam (d_weight (log(1 - D(G(z))) - log D(G(z))) + ||z||^2 / 2)``.
  With the optimal discriminator D* = p_data / (p_data + p_G), ``log(1 - D) - log D = log p_G -
  log p_data``, and ``||z||^2 / 2`` stands for ``-log p_G(G(z))`` up to constants (Jacobian ignored),
  so the bracket estimates ``-log p_data(G(z))``. Since ``D = sigmoid(l)`` for the logit ``l``, the
  discriminator term is exactly ``-l`` (``yeh_prior_term``).

Both methods optionally project z onto the ball ``||z|| <= z_norm_bound`` after each Adam step and
optionally blend the measured data back in (``blend_measured``). ``lam`` may also be ``"noise"`` or
``"discrepancy"`` (with ``noise_std=``) or ``"sweep"`` (with ``x_true=``), see
:mod:`medrecon.solvers.auto_weights`; the weight is chosen on G(z*) before any blending.

Latent search reuses ``medrecon.solvers.latent.range_solve`` (Adam over batched restarts; the GAN's
extra terms enter through its ``penalty`` and ``project`` hooks).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.operators.gradient import FiniteDifference2D
from medrecon.priors.base import load_for_operator
from medrecon.priors.gan import DEFAULT_WEIGHTS, DCGANPrior, yeh_prior_term
from medrecon.solvers.auto_weights import AUTO_RULES, resolve_learned_weight
from medrecon.solvers.latent import range_solve
from medrecon.solvers.variational import conjugate_gradient

from .registry import register_method, weight_or_rule

__all__ = ["blend_measured", "reconstruct_csgm", "reconstruct_gan_d"]

#: Relative tolerance of the partial-isometry probe ||A A^H A v - A v|| <= tol ||A v|| (float32 round-off).
_PARTIAL_ISOMETRY_RTOL = 1e-4


# ---------------------------------------------------------------------------- blending
def _is_partial_isometry(op: LinearOperator) -> bool:
    """A A^H A = A, probed on one fixed random input (relative tolerance ``_PARTIAL_ISOMETRY_RTOL``)."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn((1, 1, *op.in_shape), generator=gen, dtype=op.real_dtype)
    if op.in_complex:
        v = torch.complex(v, torch.randn(v.shape, generator=gen, dtype=v.dtype))
    v = v.to(op.device)
    with torch.no_grad():
        av = op(v)
        err = (op(op.adjoint(av)) - av).abs().norm()
        return bool(err <= _PARTIAL_ISOMETRY_RTOL * av.abs().norm())


def blend_measured(
    op: LinearOperator, x: Tensor, y: Tensor, mode: Literal["copy", "poisson"] = "copy", *, cg_iter: int = 200
) -> Tensor:
    """Put the measured data back into x: ``(B, C, *in_shape) -> (B, C, *in_shape)``.

    ``"copy"``: ``op.blend(x, y)`` when the operator offers it; otherwise
    ``x + A^H (y - A x) = A^H y + (I - A^H A) x``, which replaces the measured component of x by the
    data exactly when A is a partial isometry (``A A^H A = A``, so ``A^H A`` is an orthogonal projector):
    a 0/1 pixel mask or pixel selection (inpainting), a masked orthonormal Fourier transform
    (Cartesian MRI), the identity. Any other operator is an error (checked numerically).

    ``"poisson"`` (Perez, Gangnet and Blake, SIGGRAPH 2003, in projector form): with ``P = A^H A``,
    ``x = A^H y + (I - P) u`` where u minimises ``||grad(A^H y + (I - P) u) - grad(x)||^2``
    (conjugate gradients, start u = x): the unmeasured part keeps x's gradients and meets the data
    without a seam. Needs a partial isometry and 2-D images.
    """
    if mode not in ("copy", "poisson"):
        raise ValueError(f"blend must be False, 'copy' or 'poisson', got {mode!r}")
    x = x.to(op.in_dtype) if op.in_complex and not x.is_complex() else x
    if mode == "copy" and callable(getattr(op, "blend", None)):
        return op.blend(x, y)
    if not _is_partial_isometry(op):
        raise ValueError(
            f"blend={mode!r} needs an operator with a blend(x, y) method or a partial isometry (A A^H A = A, "
            f"e.g. a 0/1 pixel mask); {type(op).__name__} is neither. Use blend=False."
        )
    with torch.no_grad():
        measured = op.adjoint(y)  # (B, C, *in): P x_true when y = A x_true
        if mode == "copy":
            return measured + (x - op.adjoint(op(x)))  # exact on the pixels of a 0/1 mask or selection
        if len(op.in_shape) != 2:
            raise ValueError(
                f"Poisson blending needs 2-D images, the operator's image shape is {op.in_shape}"
            )
        grad = FiniteDifference2D(op.in_shape, complex=op.in_complex, dtype=op.real_dtype).to(op.device)

        def free(v: Tensor) -> Tensor:  # (I - P) v
            return v - op.adjoint(op(v))

        def normal(u: Tensor) -> Tensor:
            return free(grad.adjoint(grad(free(u))))

        rhs = free(grad.adjoint(grad(x) - grad(measured)))
        u = conjugate_gradient(normal, rhs, x, n_iter=cg_iter, tol=1e-6)
        return measured + free(u)


# ---------------------------------------------------------------------------- latent search
def _setup(op: LinearOperator, y: Tensor, weights) -> DCGANPrior:
    gan, _ = load_for_operator(weights, DCGANPrior, op, y, defaults=DEFAULT_WEIGHTS, kind="GAN")
    return gan.to(device=op.device, dtype=op.real_dtype)


def _latent_search(
    op: LinearOperator,
    y: Tensor,
    gan: DCGANPrior,
    *,
    lam: float,
    d_weight: float | None,
    p: float,
    restarts: int,
    n_iter: int,
    lr: float,
    z_norm_bound: float | None,
    callback: Callable | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Best restart by data fit. ``d_weight=None``: CSGM's ``lam ||z||^2``; else Yeh et al.'s bracket.

    Returns x = G(z*) (B, 1, H, W), z* (B, latent), and the data term of each winner (B,).
    """
    b = y.shape[0]
    scale = op.norm() ** p  # ||A||^p: lam does not depend on how the operator is scaled
    if scale == 0:
        raise ValueError(f"{type(op).__name__} is the zero operator")
    y_rep = y.unsqueeze(0).expand(restarts, *y.shape).reshape(restarts * b, *y.shape[1:])  # (R*B, 1, *out)

    def to_op(g: Tensor) -> Tensor:
        return g.to(op.in_dtype) if op.in_complex else g

    def data_term(g: Tensor) -> Tensor:  # ||A g - y||_p^p / ||A||^p: (R*B,)
        r = (op(to_op(g)) - y_rep).abs()
        return r.pow(p).reshape(r.shape[0], -1).sum(1) / scale

    def project(z: Tensor) -> Tensor:
        n = z.reshape(z.shape[0], -1).norm(dim=1).clamp_min(1e-30)
        factor = (z_norm_bound / n).clamp(max=1.0)
        return z * factor.reshape(-1, *([1] * (z.dim() - 1)))

    def penalty(z: Tensor, g: Tensor) -> Tensor:
        out = torch.zeros(z.shape[0], dtype=g.dtype, device=g.device)
        if p != 2:
            out = out + data_term(g)
        if d_weight is not None:
            out = out + lam * yeh_prior_term(gan.discriminate(g), z, d_weight)
        return out

    z0 = gan.sample_latent(restarts * b, generator=generator).to(op.real_dtype)
    if z_norm_bound is not None:
        z0 = project(z0)
    inner_cb = None
    if callback is not None:

        def inner_cb(k: int, x: Tensor, info: dict) -> object:
            with torch.no_grad():
                best = info["objective"].reshape(restarts, b).argmin(0) * b + torch.arange(b, device=x.device)
            return callback(k, x[best], {"objective": info["objective"][best], "z": info["z"][best]})

    res = range_solve(
        op,
        y_rep,
        gan.decode,
        z0.unsqueeze(0),
        lam=0.0 if d_weight is not None else lam,
        n_iter=n_iter,
        lr=lr,
        data_weight=1.0 / scale if p == 2 else 0.0,
        penalty=penalty,
        project=project if z_norm_bound is not None else None,
        callback=inner_cb,
    )
    with torch.no_grad():
        fit = data_term(res.x)  # (R*B,)
        best = fit.reshape(restarts, b).argmin(0) * b + torch.arange(b, device=fit.device)
        return res.x[best], res.z[best], fit[best]


def _search_with_rule(
    op: LinearOperator,
    y: Tensor,
    gan: DCGANPrior,
    name: str,
    rule: str,
    lam,
    *,
    noise_std,
    tau: float,
    x_true: Tensor | None,
    grid: Sequence[float] | None,
    generator: torch.Generator | None,
    **search,
) -> Tensor:
    """G(z*) for the weight ``lam`` names; every solve draws the same restarts (the generator is rewound)."""
    state = generator.get_state() if generator is not None else None

    def run(sel: slice, lam_k: float) -> Tensor:
        if generator is not None:
            generator.set_state(state)
        x, _, _ = _latent_search(op, y[sel], gan, lam=lam_k, generator=generator, **search)
        return x

    return resolve_learned_weight(
        lam, name, rule, run, op, y, noise_std=noise_std, tau=tau, x_true=x_true, grid=grid
    )


def _finish(op: LinearOperator, y: Tensor, x: Tensor, blend) -> Tensor:
    if blend is False or blend is None:
        return x.detach()
    return blend_measured(op, x.detach(), y, blend).detach()


@register_method("csgm", checks={"lam": weight_or_rule(*AUTO_RULES)})
def reconstruct_csgm(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | DCGANPrior | None = None,
    lam: float | str = 1e-3,
    restarts: int = 4,
    n_iter: int = 300,
    lr: float = 5e-2,
    z_norm_bound: float | None = None,
    blend: Literal[False, "copy", "poisson"] = False,
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x = G(z*), z* = argmin_z ||A G(z) - y||^2 / ||A||^2 + lam ||z||^2 (Bora et al., ICML 2017).

    y: (B, 1, *op.out_shape) -> x: (B, 1, H, W), real in [0, 1] (``op.in_dtype`` when blended
    with a complex operator).

    Args:
        weights: a ``DCGANPrior`` file from ``medrecon train`` (or the model itself); default: the
            bundled weights for the operator's image size (``DEFAULT_WEIGHTS``).
        lam: latent prior weight (the data term is divided by ||A||^2); ``"noise"``: the MAP weight
            ``noise_std^2 / ||A||^2``; ``"discrepancy"``: Morozov's principle (``tau``), or the best
            data fit when the range of G cannot reach the noise level; ``"sweep"``: the best of
            ``grid`` against ``x_true``.
        restarts: random starts z ~ N(0, I) (from ``generator``), optimised together; per
            measurement the one with the smallest data term ||A G(z) - y||^2 wins.
        n_iter, lr: Adam iterations and step size on z (each restart keeps its best iterate).
        z_norm_bound: project z onto ``||z|| <= z_norm_bound`` after each step (None: no bound).
        blend: ``"copy"`` / ``"poisson"`` put the measured data back (``blend_measured``).
        callback: ``callback(k, x, info)`` with the current best image of each measurement.
    """
    gan = _setup(op, y, weights)
    x = _search_with_rule(
        op,
        y,
        gan,
        "csgm",
        "csgm",
        lam,
        noise_std=noise_std,
        tau=tau,
        x_true=x_true,
        grid=grid,
        generator=generator,
        d_weight=None,
        p=2.0,
        restarts=restarts,
        n_iter=n_iter,
        lr=lr,
        z_norm_bound=z_norm_bound,
        callback=callback,
    )
    return _finish(op, y, x, blend)


@register_method("gan-d", checks={"lam": weight_or_rule(*AUTO_RULES)})
def reconstruct_gan_d(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | DCGANPrior | None = None,
    lam: float | str = 3e-3,
    d_weight: float = 1.0,
    p: float = 2.0,
    restarts: int = 4,
    n_iter: int = 300,
    lr: float = 5e-2,
    z_norm_bound: float | None = None,
    blend: Literal[False, "copy", "poisson"] = False,
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x = G(z*), z* = argmin ||A G(z) - y||_p^p/||A||^p + lam (d_weight log((1-D(G(z)))/D(G(z))) + ||z||^2/2)

    The restoration objective of Yeh et al. (ICASSP 2018), followed by optional blending.
    y: (B, 1, *op.out_shape) -> x: (B, 1, H, W).

    Args:
        weights: as in ``reconstruct_csgm`` (the file must hold the discriminator too; GAN files do).
        lam: weight of the prior bracket (relative to the data term / ||A||^p); rules as in
            ``reconstruct_csgm`` (``"noise"``: ``2 noise_std^2 / ||A||^2``, the bracket holds ||z||^2 / 2).
        d_weight: weight of the discriminator term inside the bracket (1: the paper; 0: CSGM with
            ``lam / 2`` on ||z||^2).
        p: the data norm's exponent (2: squared error; 1: absolute error).
        restarts, n_iter, lr, z_norm_bound, blend, callback, generator: as in ``reconstruct_csgm``
            (the winner is the restart with the smallest ||A G(z) - y||_p^p).
    """
    gan = _setup(op, y, weights)
    x = _search_with_rule(
        op,
        y,
        gan,
        "gan-d",
        "gan-d",
        lam,
        noise_std=noise_std,
        tau=tau,
        x_true=x_true,
        grid=grid,
        generator=generator,
        d_weight=float(d_weight),
        p=float(p),
        restarts=restarts,
        n_iter=n_iter,
        lr=lr,
        z_norm_bound=z_norm_bound,
        callback=callback,
    )
    return _finish(op, y, x, blend)
