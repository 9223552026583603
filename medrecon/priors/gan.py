"""DCGAN prior and its two reconstruction methods ("csgm", "gan-d").

* ``DCGANPrior``: a DCGAN-style generator G (fully connected layer, then stride-2 transposed
  convolutions with batch norm and ReLU, sigmoid output in [0, 1]) and discriminator D (stride-2
  convolutions with leaky ReLU, no normalisation, one logit) [Radford, Metz and Chintala, ICLR 2016].
* ``gan_step``: the two-optimizer ``step_fn`` that ``medrecon.training.fit`` runs. Objective: the
  non-saturating GAN loss of Goodfellow et al. (NeurIPS 2014) with the R1 gradient penalty on real
  images, ``gamma/2 E||grad_x D(x)||^2`` [Mescheder, Geiger and Nowozin, ICML 2018].
* ``reconstruct_csgm``: compressed sensing with generative models [Bora, Jalal, Price and Dimakis,
  ICML 2017]: ``z* = argmin_z ||A G(z) - y||^2 / ||A||^2 + lam ||z||^2`` with random restarts (the
  restart with the best data fit wins), ``x = G(z*)``.
* ``reconstruct_gan_d``: the restoration objective of Yeh, Lim, Chen, Schwing, Hasegawa-Johnson and
  Do (ICASSP 2018), which adds the discriminator's estimate of the data log-density:
  ``min_z ||y - A G(z)||_p^p / ||A||^p + lam (d_weight (log(1 - D(G(z))) - log D(G(z))) + ||z||^2 / 2)``.
  With the optimal discriminator D* = p_data / (p_data + p_G), ``log(1 - D) - log D = log p_G -
  log p_data``, and ``||z||^2 / 2`` stands for ``-log p_G(G(z))`` up to constants (Jacobian ignored),
  so the bracket estimates ``-log p_data(G(z))``. Since ``D = sigmoid(l)`` for the logit ``l``, the
  discriminator term is exactly ``-l`` (``yeh_prior_term``).

Both methods optionally project z onto the ball ``||z|| <= z_norm_bound`` after each Adam step and
optionally blend the measured data back in (``blend_measured``).

Latent search reuses ``medrecon.solvers.latent.range_solve`` (Adam over batched restarts; the GAN's
extra terms enter through its ``penalty`` and ``project`` hooks).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrecon.operators.base import LinearOperator
from medrecon.priors.base import image_size_of, load_frozen, resolve_weights
from medrecon.solvers.latent import range_solve

__all__ = [
    "DCGANPrior",
    "gan_step",
    "gan_eval",
    "make_optimizers",
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "yeh_prior_term",
    "blend_measured",
    "load_gan",
    "reconstruct_csgm",
    "reconstruct_gan_d",
    "DEFAULT_WEIGHTS",
]


#: Bundled weights by image size (see data/weights/gan_*.md for how each was made).
DEFAULT_WEIGHTS = {
    28: "data/weights/gan_mnist28.pt",
    64: "data/weights/gan_ellipses64.pt",
}

#: Adam's betas for both nets (Radford, Metz and Chintala, ICLR 2016, sec. 4: beta1 = 0.5).
DCGAN_BETAS = (0.5, 0.999)

#: Relative tolerance of the partial-isometry probe ||A A^H A v - A v|| <= tol ||A v|| (float32 round-off).
_PARTIAL_ISOMETRY_RTOL = 1e-4


# ============================================================================ model
class DCGANPrior(nn.Module):
    """x = G(z) in [0, 1], z ~ N(0, I); discriminator logit l(x) with D(x) = sigmoid(l(x)).

    Shapes: images ``(B, in_channels, S, S)``, latents ``(B, latent_dim)``, logits ``(B,)``.

    Args:
        image_size: S, divisible by ``2 ** len(channels)`` (28 with two stages: 7 -> 14 -> 28).
        latent_dim: size of z.
        channels: generator channels per stage from the full-resolution side (the last is the
            bottom, ``S / 2**len(channels)`` pixels wide).
        d_channels: discriminator channels per stride-2 stage (same count as ``channels``).
        in_channels: image channels.
        r1_gamma: weight of the R1 penalty in ``gan_step`` (a training setting, recorded with the model).
        r1_every: lazy regularisation: the penalty (times ``r1_every``) is added every ``r1_every``
            steps only (Karras et al., StyleGAN2, CVPR 2020, sec. 3.1); 1: every step.

    >>> gan = DCGANPrior(image_size=8, latent_dim=3, channels=(4,), d_channels=(4,))
    >>> tuple(gan.decode(torch.zeros(2, 3)).shape), tuple(gan.discriminate(torch.zeros(2, 1, 8, 8)).shape)
    ((2, 1, 8, 8), (2,))
    """

    def __init__(
        self,
        *,
        image_size: int = 28,
        latent_dim: int = 32,
        channels: tuple[int, ...] | list[int] = (32, 64),
        d_channels: tuple[int, ...] | list[int] = (32, 64),
        in_channels: int = 1,
        r1_gamma: float = 1.0,
        r1_every: int = 1,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        d_channels = [int(c) for c in d_channels]
        n = len(channels)
        if n < 1 or image_size % (2**n) != 0:
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**len(channels) = {2**n} "
                f"(channels={channels})"
            )
        if len(d_channels) != n:
            raise ValueError(f"d_channels must have {n} entries like channels, got {d_channels}")
        if r1_gamma < 0 or r1_every < 1:
            raise ValueError(f"need r1_gamma >= 0 and r1_every >= 1, got {r1_gamma}, {r1_every}")
        self.hparams = dict(
            image_size=int(image_size), latent_dim=int(latent_dim), channels=channels, d_channels=d_channels,
            in_channels=int(in_channels), r1_gamma=float(r1_gamma),
            r1_every=int(r1_every),
        )
        self.image_size, self.latent_dim = int(image_size), int(latent_dim)
        self.in_channels = int(in_channels)
        self.latent_shape = (self.latent_dim,)
        self.r1_gamma, self.r1_every = float(r1_gamma), int(r1_every)
        s = image_size // 2**n
        self._bottom = (channels[-1], s, s)

        # Generator: z -> (C_bottom, s, s) -> ... -> (in_channels, S, S)
        n_fc = channels[-1] * s * s
        self.g_fc = nn.Sequential(nn.Linear(latent_dim, n_fc, bias=False), nn.BatchNorm1d(n_fc), nn.ReLU())
        g, prev = [], channels[-1]
        for c in reversed(channels[:-1]):
            g += [nn.ConvTranspose2d(prev, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                  nn.ReLU()]
            prev = c
        g += [nn.ConvTranspose2d(prev, in_channels, 4, stride=2, padding=1)]
        self.g_conv = nn.Sequential(*g)

        # Discriminator: (in_channels, S, S) -> ... -> (C_last, s, s) -> logit
        d, prev = [], in_channels
        for c in d_channels:
            d += [nn.Conv2d(prev, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            prev = c
        self.d_conv = nn.Sequential(*d, nn.Flatten())
        self.d_fc = nn.Linear(prev * s * s, 1)

    # ---------------------------------------------------------------- parameter groups
    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.g_fc.parameters(), *self.g_conv.parameters()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [*self.d_conv.parameters(), *self.d_fc.parameters()]

    # ---------------------------------------------------------------- GenerativePrior
    def decode(self, z: Tensor) -> Tensor:
        """G(z): (B, latent_dim) -> (B, C, S, S) in [0, 1]."""
        h = self.g_fc(z).reshape(z.shape[0], *self._bottom)
        return torch.sigmoid(self.g_conv(h))

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws from p(z) = N(0, I), on the model's device."""
        dev = self.d_fc.weight.device
        if generator is not None and generator.device != dev:
            return torch.randn(n, self.latent_dim, generator=generator, device=generator.device).to(dev)
        return torch.randn(n, self.latent_dim, generator=generator, device=dev)

    def discriminate(self, x: Tensor) -> Tensor:
        """The discriminator logit l(x): (B, C, S, S) -> (B,); D(x) = sigmoid(l(x))."""
        return self.d_fc(self.d_conv(x)).squeeze(1)

    def forward(self, inputs: Tensor, mode: Literal["generate", "discriminate"] = "generate") -> Tensor:
        """``mode="generate"``: G(z) (``decode``); ``"discriminate"``: the logit l(x) (``discriminate``).

        Training steps call the model this way (not the submodules) so a DDP wrapper syncs gradients.
        """
        if mode == "generate":
            return self.decode(inputs)
        if mode == "discriminate":
            return self.discriminate(inputs)
        raise ValueError(f"mode must be 'generate' or 'discriminate', got {mode!r}")


# ============================================================================ objectives
def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-log D(x) - log(1 - D(G(z))), mean over the batch (logits: (B,))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss -log D(G(z)), mean over the batch."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """E ||grad_x l(x)||^2 over real images (``real`` must require grad); differentiable (R1)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def yeh_prior_term(logits: Tensor, z: Tensor, d_weight: float = 1.0) -> Tensor:
    """d_weight (log(1 - D(G(z))) - log D(G(z))) + ||z||^2 / 2 per sample: (B,), (B, latent) -> (B,).

    ``logits`` is l(G(z)) with D = sigmoid(l); ``log(1 - D) - log D`` is computed as
    ``logsigmoid(-l) - logsigmoid(l)`` (= -l exactly, without overflow).
    """
    log_ratio = F.logsigmoid(-logits) - F.logsigmoid(logits)
    return d_weight * log_ratio + 0.5 * z.pow(2).reshape(z.shape[0], -1).sum(1)


def _images(batch) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def gan_step(model: nn.Module, batch, ctx) -> dict[str, float]:
    """One discriminator step, then one generator step: the ``step_fn`` for ``medrecon.training.fit``.

    D: ``-log D(x) - log(1 - D(G(z))) + r1_gamma/2 E||grad_x l(x)||^2`` with
    ``ctx.optimizers["discriminator"]``
    (the penalty, times ``r1_every``, only on steps ``ctx.step % r1_every == 0``);
    G: ``-log D(G(z'))`` (non-saturating) with ``ctx.optimizers["generator"]``; z, z' are drawn from
    ``ctx.generator`` (so a resumed run repeats the same noise).
    """
    gan = getattr(model, "module", model)
    x = _images(batch)
    b = x.shape[0]
    opt_d, opt_g = ctx.optimizers["discriminator"], ctx.optimizers["generator"]

    # --- discriminator
    with torch.no_grad():
        fake = model(gan.sample_latent(b, generator=ctx.generator).to(x.dtype))
    with_r1 = gan.r1_gamma > 0 and getattr(ctx, "step", 0) % gan.r1_every == 0
    real = x.detach().requires_grad_(with_r1)
    real_logits = model(real, mode="discriminate")
    fake_logits = model(fake, mode="discriminate")
    loss_d = discriminator_loss(real_logits, fake_logits)
    r1 = r1_penalty(real_logits, real) if with_r1 else torch.zeros((), device=x.device)
    opt_d.zero_grad(set_to_none=True)
    (loss_d + 0.5 * gan.r1_gamma * gan.r1_every * r1 if with_r1 else loss_d).backward()
    opt_d.step()

    # --- generator (D's gradients from this pass are discarded by the next zero_grad)
    z = gan.sample_latent(b, generator=ctx.generator).to(x.dtype)
    logits_g = model(model(z), mode="discriminate")
    loss_g = generator_loss(logits_g)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {
        "loss": float(loss_d.detach() + loss_g.detach()),
        "loss_d": float(loss_d.detach()),
        "loss_g": float(loss_g.detach()),
        "r1": float(r1.detach()) * (gan.r1_every if with_r1 else 0),  # window means estimate E||grad||^2
        "d_real": float(torch.sigmoid(real_logits.detach()).mean()),
        "d_fake": float(torch.sigmoid(fake_logits.detach()).mean()),
    }


def make_optimizers(model: nn.Module, cfg) -> dict[str, torch.optim.Optimizer]:
    """Two Adams with ``cfg.lr`` (FitConfig) and DCGAN's betas (0.5, 0.999) (Radford et al. 2016, sec. 4)."""
    gan = getattr(model, "module", model)
    return {
        "generator": torch.optim.Adam(gan.generator_parameters(), lr=cfg.lr, betas=DCGAN_BETAS),
        "discriminator": torch.optim.Adam(gan.discriminator_parameters(), lr=cfg.lr, betas=DCGAN_BETAS),
    }


@torch.no_grad()
def gan_eval(model: nn.Module, batch, ctx) -> dict[str, float]:
    """Validation: D's loss on held-out real images against fresh samples, and D's mean outputs."""
    gan = getattr(model, "module", model)
    x = _images(batch)
    gen = torch.Generator(device="cpu").manual_seed(0)  # the same fake batch at every evaluation
    fake = gan.decode(gan.sample_latent(x.shape[0], generator=gen).to(x.dtype))
    real_logits, fake_logits = gan.discriminate(x), gan.discriminate(fake)
    return {
        "loss": float(discriminator_loss(real_logits, fake_logits)),
        "loss_g": float(generator_loss(fake_logits)),
        "d_real": float(torch.sigmoid(real_logits).mean()),
        "d_fake": float(torch.sigmoid(fake_logits).mean()),
    }


# ============================================================================ blending
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
        from medrecon.operators.gradient import FiniteDifference2D
        from medrecon.solvers.variational import conjugate_gradient

        if len(op.in_shape) != 2:
            raise ValueError(f"Poisson blending needs 2-D images, the operator's image shape is "
                             f"{op.in_shape}")
        grad = FiniteDifference2D(op.in_shape, complex=op.in_complex, dtype=op.real_dtype).to(op.device)

        def free(v: Tensor) -> Tensor:  # (I - P) v
            return v - op.adjoint(op(v))

        def normal(u: Tensor) -> Tensor:
            return free(grad.adjoint(grad(free(u))))

        rhs = free(grad.adjoint(grad(x) - grad(measured)))
        u = conjugate_gradient(normal, rhs, x, n_iter=cg_iter, tol=1e-6)
        return measured + free(u)


# ============================================================================ reconstruction
def _resolve_weights(weights, image_size: int):
    if isinstance(weights, nn.Module):
        return weights
    return resolve_weights(weights, image_size, DEFAULT_WEIGHTS, "GAN")


def load_gan(weights: str | os.PathLike, *, device: torch.device | str = "cpu") -> DCGANPrior:
    """The DCGANPrior stored in ``weights`` (eval mode, frozen; another class or shapes is an error)."""
    return load_frozen(weights, DCGANPrior, device=device)  # type: ignore[return-value]


def _setup(op: LinearOperator, y: Tensor, weights) -> DCGANPrior:
    h, w = image_size_of(op, y, "GAN")
    found = _resolve_weights(weights, h)
    if isinstance(found, nn.Module):
        gan = found.eval()
        source = f"the given {type(found).__name__}"
    else:
        gan = load_gan(found, device=op.device)
        source = str(found)
    s = gan.image_size
    if (h, w) != (s, s) or gan.in_channels != 1:
        raise ValueError(
            f"the GAN in {source} makes {gan.in_channels}x{s}x{s} images but the operator's images are "
            f"1x{h}x{w}; "
            f"use weights trained at {h}x{w} (bundled: {', '.join(f'{k}x{k}' for k in DEFAULT_WEIGHTS)})"
        )
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
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if p <= 0:
        raise ValueError(f"p must be positive, got {p}")
    if z_norm_bound is not None and z_norm_bound <= 0:
        raise ValueError(f"z_norm_bound must be positive or None, got {z_norm_bound}")
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
        def inner_cb(k: int, x: Tensor, info: dict) -> object:  # noqa: E306 - best restart per measurement
            with torch.no_grad():
                best = info["objective"].reshape(restarts, b).argmin(0) * b + torch.arange(b, device=x.device)
            return callback(k, x[best], {"objective": info["objective"][best], "z": info["z"][best]})

    res = range_solve(
        op, y_rep, gan.decode, z0.unsqueeze(0),
        lam=0.0 if d_weight is not None else lam,
        n_iter=n_iter, lr=lr, data_weight=1.0 / scale if p == 2 else 0.0,
        penalty=penalty, project=project if z_norm_bound is not None else None, callback=inner_cb,
    )
    with torch.no_grad():
        fit = data_term(res.x)  # (R*B,)
        best = fit.reshape(restarts, b).argmin(0) * b + torch.arange(b, device=fit.device)
        return res.x[best], res.z[best], fit[best]


def _finish(op: LinearOperator, y: Tensor, x: Tensor, blend) -> Tensor:
    if blend is False or blend is None:
        return x.detach()
    return blend_measured(op, x.detach(), y, blend).detach()


def reconstruct_csgm(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | DCGANPrior | None = None,
    lam: float = 1e-3,
    restarts: int = 4,
    n_iter: int = 300,
    lr: float = 5e-2,
    z_norm_bound: float | None = None,
    blend: Literal[False, "copy", "poisson"] = False,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x = G(z*), z* = argmin_z ||A G(z) - y||^2 / ||A||^2 + lam ||z||^2 (Bora et al., ICML 2017).

    y: (B, 1, *op.out_shape) -> x: (B, 1, H, W), real in [0, 1] (``op.in_dtype`` when blended
    with a complex operator).

    Args:
        weights: a ``DCGANPrior`` file from ``medrecon train`` (or the model itself); default: the
            bundled weights for the operator's image size (``DEFAULT_WEIGHTS``).
        lam: latent prior weight (the data term is divided by ||A||^2).
        restarts: random starts z ~ N(0, I) (from ``generator``), optimised together; per
            measurement the one with the smallest data term ||A G(z) - y||^2 wins.
        n_iter, lr: Adam iterations and step size on z (each restart keeps its best iterate).
        z_norm_bound: project z onto ``||z|| <= z_norm_bound`` after each step (None: no bound).
        blend: ``"copy"`` / ``"poisson"`` put the measured data back (``blend_measured``).
        callback: ``callback(k, x, info)`` with the current best image of each measurement.
    """
    gan = _setup(op, y, weights)
    x, _, _ = _latent_search(op, y, gan, lam=lam, d_weight=None, p=2.0, restarts=restarts, n_iter=n_iter,
                             lr=lr, z_norm_bound=z_norm_bound, callback=callback, generator=generator)
    return _finish(op, y, x, blend)


def reconstruct_gan_d(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | DCGANPrior | None = None,
    lam: float = 3e-3,
    d_weight: float = 1.0,
    p: float = 2.0,
    restarts: int = 4,
    n_iter: int = 300,
    lr: float = 5e-2,
    z_norm_bound: float | None = None,
    blend: Literal[False, "copy", "poisson"] = False,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x = G(z*), z* = argmin ||A G(z) - y||_p^p/||A||^p + lam (d_weight log((1-D(G(z)))/D(G(z))) + ||z||^2/2)

    The restoration objective of Yeh et al. (ICASSP 2018), followed by optional blending.
    y: (B, 1, *op.out_shape) -> x: (B, 1, H, W).

    Args:
        weights: as in ``reconstruct_csgm`` (the file must hold the discriminator too; GAN files do).
        lam: weight of the prior bracket (relative to the data term / ||A||^p).
        d_weight: weight of the discriminator term inside the bracket (1: the paper; 0: CSGM with
            ``lam / 2`` on ||z||^2).
        p: the data norm's exponent (2: squared error; 1: absolute error).
        restarts, n_iter, lr, z_norm_bound, blend, callback, generator: as in ``reconstruct_csgm``
            (the winner is the restart with the smallest ||A G(z) - y||_p^p).
    """
    gan = _setup(op, y, weights)
    x, _, _ = _latent_search(op, y, gan, lam=lam, d_weight=float(d_weight), p=float(p), restarts=restarts,
                             n_iter=n_iter, lr=lr, z_norm_bound=z_norm_bound, callback=callback,
                             generator=generator)
    return _finish(op, y, x, blend)

