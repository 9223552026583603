"""DCGAN prior (the methods "csgm", "gan-d" built on it: :mod:`medrecon.methods.gan`).

* ``DCGANPrior``: a DCGAN-style generator G (fully connected layer, then stride-2 transposed
  convolutions with batch norm and ReLU, sigmoid output in [0, 1]) and discriminator D (stride-2
  convolutions with leaky ReLU, no normalisation, one logit) [Radford, Metz and Chintala, ICLR 2016].
* ``gan_step``: the two-optimizer ``step_fn`` that ``medrecon.training.fit`` runs. Objective: the
  non-saturating GAN loss of Goodfellow et al. (NeurIPS 2014) with the R1 gradient penalty on real
  images, ``gamma/2 E||grad_x D(x)||^2`` [Mescheder, Geiger and Nowozin, ICML 2018].
* ``yeh_prior_term``: the discriminator's estimate of ``-log p_data`` used by the ``gan-d`` method.
* ``load_gan(weights)``: a trained model from its file.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrecon._deprecated import moved
from medrecon.priors.base import load_frozen

__all__ = [
    "DCGANPrior",
    "gan_step",
    "gan_eval",
    "make_optimizers",
    "discriminator_loss",
    "generator_loss",
    "r1_penalty",
    "yeh_prior_term",
    "load_gan",
    "DEFAULT_WEIGHTS",
]


#: Bundled weights by image size (see data/weights/gan_*.md for how each was made).
DEFAULT_WEIGHTS = {
    28: "data/weights/gan_mnist28.pt",
    64: "data/weights/gan_ellipses64.pt",
}

#: Adam's betas for both nets (Radford, Metz and Chintala, ICLR 2016, sec. 4: beta1 = 0.5).
DCGAN_BETAS = (0.5, 0.999)


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
            image_size=int(image_size),
            latent_dim=int(latent_dim),
            channels=channels,
            d_channels=d_channels,
            in_channels=int(in_channels),
            r1_gamma=float(r1_gamma),
            r1_every=int(r1_every),
        )
        self.image_size, self.latent_dim = int(image_size), int(latent_dim)
        self.in_channels = int(in_channels)
        self.latent_shape = (self.latent_dim,)
        self.image_shape = (self.in_channels, self.image_size, self.image_size)
        self.r1_gamma, self.r1_every = float(r1_gamma), int(r1_every)
        s = image_size // 2**n
        self._bottom = (channels[-1], s, s)

        # Generator: z -> (C_bottom, s, s) -> ... -> (in_channels, S, S)
        n_fc = channels[-1] * s * s
        self.g_fc = nn.Sequential(nn.Linear(latent_dim, n_fc, bias=False), nn.BatchNorm1d(n_fc), nn.ReLU())
        g, prev = [], channels[-1]
        for c in reversed(channels[:-1]):
            g += [
                nn.ConvTranspose2d(prev, c, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
            ]
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


# ============================================================================ loading
def load_gan(weights: str | os.PathLike, *, device: torch.device | str = "cpu") -> DCGANPrior:
    """The DCGANPrior stored in ``weights`` (eval mode, frozen; another class or shapes is an error)."""
    return load_frozen(weights, DCGANPrior, device=device)  # type: ignore[return-value]


_MOVED = {
    name: "medrecon.methods.gan" for name in ("reconstruct_csgm", "reconstruct_gan_d", "blend_measured")
}


def __getattr__(name: str):  # the methods and blending moved to medrecon.methods.gan
    return moved(__name__, name, _MOVED)
