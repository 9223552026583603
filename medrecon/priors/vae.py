"""Convolutional VAE prior (the methods "vae-range", "vae-soft" built on it: :mod:`medrecon.methods.vae`).

The method of Duff, Campbell & Ehrhardt, "Regularising inverse problems with generative machine
learning models" (J. Math. Imaging Vis. 2024, arXiv:2107.11191): a VAE is trained on clean images
and its decoder G regularises a reconstruction by the distance of x to the range of G.

* ``ConvVAE(image_size, latent_dim, channels)``: strided-conv encoder, upsample+conv decoder,
  sigmoid output in [0, 1]; ``image_size`` must be divisible by ``2 ** len(channels)``.
* ``vae_step`` / ``vae_eval``: the ``step_fn`` / ``eval_fn`` that ``medrecon.training.fit`` runs
  (negative ELBO: Bernoulli (BCE) or Gaussian (MSE) likelihood + beta * KL).
* ``load_vae(weights)``: a trained model from its file.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrecon._deprecated import moved
from medrecon.priors.base import load_frozen

__all__ = [
    "ConvVAE",
    "vae_step",
    "vae_eval",
    "load_vae",
    "DEFAULT_WEIGHTS",
]


#: Bundled weights by image size (see data/weights/*.md for how each was made).
DEFAULT_WEIGHTS = {
    28: "data/weights/vae_mnist28.pt",
    64: "data/weights/vae_ellipses64.pt",
    # real CT / brain MRI slices (medrecon.data.real train splits); MRI: for complex operators
    128: {"ct": "data/weights/vae_ct128.pt", "mri": "data/weights/vae_mri128.pt"},
}


class ConvVAE(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))), p(z) = N(0, I), x ~ p(x|z) with mean G(z) in [0, 1].

    Shapes: images ``(B, in_channels, S, S)``, latents ``(B, latent_dim)``.

    Args:
        image_size: S, divisible by ``2 ** len(channels)``.
        latent_dim: size of z.
        channels: channels of the strided-conv stages (each halves the size).
        hidden: width of the fully connected layer between the convolutions and z.
        loss: ``"bce"`` (Bernoulli likelihood on [0, 1] intensities) or ``"mse"`` (Gaussian with
            standard deviation ``sigma``).
        beta: weight of the KL term (beta-VAE; 1 is the ELBO).
        sigma: Gaussian likelihood's standard deviation for ``loss="mse"``.

    >>> vae = ConvVAE(image_size=8, latent_dim=2, channels=(4,), hidden=8)
    >>> tuple(vae.decode(torch.zeros(3, 2)).shape)
    (3, 1, 8, 8)
    """

    def __init__(
        self,
        *,
        image_size: int = 28,
        latent_dim: int = 16,
        channels: tuple[int, ...] | list[int] = (32, 64),
        hidden: int = 256,
        in_channels: int = 1,
        loss: str = "bce",
        beta: float = 1.0,
        sigma: float = 0.1,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        n_down = len(channels)
        if n_down < 1 or image_size % (2**n_down) != 0:
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**len(channels) = {2**n_down} "
                f"(channels={channels})"
            )
        if loss not in ("bce", "mse"):
            raise ValueError(f"loss must be 'bce' or 'mse', got {loss!r}")
        self.hparams = dict(
            image_size=int(image_size),
            latent_dim=int(latent_dim),
            channels=channels,
            hidden=int(hidden),
            in_channels=int(in_channels),
            loss=loss,
            beta=float(beta),
            sigma=float(sigma),
        )
        self.image_size, self.latent_dim = int(image_size), int(latent_dim)
        self.in_channels = int(in_channels)
        self.latent_shape = (self.latent_dim,)
        self.image_shape = (self.in_channels, self.image_size, self.image_size)
        self.loss_kind, self.beta, self.sigma = loss, float(beta), float(sigma)
        s = image_size // 2**n_down
        self._bottom = (channels[-1], s, s)
        enc, prev = [], in_channels
        for c in channels:
            enc += [nn.Conv2d(prev, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            prev = c
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(prev * s * s, hidden), nn.LeakyReLU(0.2))
        self.to_mu = nn.Linear(hidden, latent_dim)
        self.to_logvar = nn.Linear(hidden, latent_dim)
        self.decoder_fc = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, prev * s * s),
            nn.LeakyReLU(0.2),
        )
        dec = []
        for c in reversed(channels[:-1]):
            dec += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(prev, c, 3, padding=1),
                nn.LeakyReLU(0.2),
            ]
            prev = c
        last = max(8, prev // 2)  # the full-resolution stage is the costly one: keep it narrow
        dec += [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(prev, last, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(last, in_channels, 3, padding=1),
        ]
        self.decoder_conv = nn.Sequential(*dec)

    # ---------------------------------------------------------------- GenerativePrior
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, S, S) -> mu, logvar: (B, latent_dim)."""
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h).clamp(-30.0, 20.0)

    def decode_logits(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> pre-sigmoid images (B, C, S, S)."""
        h = self.decoder_fc(z).reshape(z.shape[0], *self._bottom)
        return self.decoder_conv(h)

    def decode(self, z: Tensor) -> Tensor:
        """G(z): (B, latent_dim) -> (B, C, S, S) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws from p(z) = N(0, I), on the model's device."""
        dev = self.to_mu.weight.device
        if generator is not None and generator.device != dev:
            return torch.randn(n, self.latent_dim, generator=generator, device=generator.device).to(dev)
        return torch.randn(n, self.latent_dim, generator=generator, device=dev)

    # ---------------------------------------------------------------- training
    def forward(self, x: Tensor, *, generator: torch.Generator | None = None, sample: bool = True) -> dict:
        """Encode, reparametrise (z = mu + sigma * eps, eps from ``generator``), decode.

        Returns a dict with ``logits`` (B, C, S, S), ``mu``, ``logvar`` and ``z`` (B, latent_dim).
        Training steps call this (not ``encode``/``decode``) so that a DDP wrapper syncs gradients.
        """
        mu, logvar = self.encode(x)
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + torch.exp(0.5 * logvar) * eps
        else:
            z = mu
        return {"logits": self.decode_logits(z), "mu": mu, "logvar": logvar, "z": z}

    def elbo_terms(self, x: Tensor, out: dict) -> tuple[Tensor, Tensor]:
        """Per-sample reconstruction term -log p(x|z) and KL(q(z|x) || p(z)): (B,), (B,)."""
        b = x.shape[0]
        if self.loss_kind == "bce":
            rec = F.binary_cross_entropy_with_logits(out["logits"], x, reduction="none").reshape(b, -1).sum(1)
        else:
            diff = torch.sigmoid(out["logits"]) - x
            rec = diff.pow(2).reshape(b, -1).sum(1) / (2 * self.sigma**2)
        mu, logvar = out["mu"], out["logvar"]
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return rec, kl

    def neg_log_prob(self, x: Tensor) -> Tensor:
        """The negative ELBO (an upper bound of -log p(x), up to constants) at the encoder mean: (B,)."""
        out = self(x, sample=False)
        rec, kl = self.elbo_terms(x, out)
        return rec + kl


def _images(batch) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def vae_step(model: nn.Module, batch, ctx) -> dict[str, float]:
    """One optimizer step on the negative ELBO (mean over the batch); the ``step_fn`` for ``fit``.

    ``ctx.optimizers["model"]`` is the optimizer, ``ctx.generator`` draws the reparametrisation noise
    (so a resumed run repeats the same noise).
    """
    x = _images(batch)
    vae = getattr(model, "module", model)  # for the loss terms (no parameters involved)
    out = model(x, generator=ctx.generator)
    rec, kl = vae.elbo_terms(x, out)
    loss = (rec + vae.beta * kl).mean()
    opt = ctx.optimizers["model"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {
        "loss": float(loss.detach()),
        "recon": float(rec.mean().detach()),
        "kl": float(kl.mean().detach()),
    }


@torch.no_grad()
def vae_eval(model: nn.Module, batch, ctx) -> dict[str, float]:
    """Validation metrics at the encoder mean: negative ELBO, reconstruction term, KL, and the
    mean squared error of G(mu(x)) (the representation error that matters for the range method)."""
    x = _images(batch)
    vae = getattr(model, "module", model)
    out = model(x, sample=False)
    rec, kl = vae.elbo_terms(x, out)
    mse = (torch.sigmoid(out["logits"]) - x).pow(2).reshape(x.shape[0], -1).mean(1)
    return {
        "loss": float((rec + vae.beta * kl).mean()),
        "recon": float(rec.mean()),
        "kl": float(kl.mean()),
        "mse": float(mse.mean()),
    }


# -------------------------------------------------------------------- loading
def load_vae(weights: str | os.PathLike, *, device: torch.device | str = "cpu") -> ConvVAE:
    """The ConvVAE stored in ``weights`` (checked: another model class or shapes is an error)."""
    return load_frozen(weights, ConvVAE, device=device)  # type: ignore[return-value]


_MOVED = {"reconstruct_range": "medrecon.methods.vae", "reconstruct_soft": "medrecon.methods.vae"}


def __getattr__(name: str):  # the methods moved to medrecon.methods.vae
    return moved(__name__, name, _MOVED)
