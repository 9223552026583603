"""PatchNR: a normalizing flow on small image patches as a regulariser for any image size and operator.

Altekrueger, Denker, Hagemann, Hertrich, Maass and Steidl, "PatchNR: learning from very few images
by patch normalizing flow regularization", Inverse Problems 39 (2023) 064006.

The prior is a small normalizing flow ``f: R^(p p) -> R^(p p)`` on ``p x p`` patches (6x6 by
default) with exact log-likelihood ``log p(q) = log N(f(q); 0, I) + log|det df/dq|``, trained on
patches of a few training images. The regulariser of an image ``x (B, 1, H, W)`` is the mean
negative log-likelihood of its overlapping patches,

    R(x) = 1/N sum_i -log p(P_i x)        (a random subset of N patches per step, or all of them),

which needs no fixed image size: the same weights serve 128 and 256 pixel images, CT and MRI
operators. The method ``"patchnr"`` (:mod:`medrecon.methods.patchnr`) minimises
``1/2 ||A x - y||^2 + lam ||A||^2 H W R(x)``.

Building blocks come from :mod:`medrecon.priors.flow` (``ActNorm``, ``InvConv1x1`` and the affine
coupling of ``AffineCoupling``): a patch is held as a ``(N, p p, 1, 1)`` tensor, so the 1x1
convolution is Glow's learned dense mixing and the channel coupling splits the patch's pixels in
halves; the coupling networks are fully connected (the paper's subnetworks), not convolutions.
Training goes through ``medrecon train`` with the flow's ``flow_step`` / ``flow_eval`` (NLL of
uniformly dequantised patches), on patch datasets from :mod:`medrecon.data.datasets`.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from medrecon.priors.base import load_frozen
from medrecon.priors.flow import ActNorm, AffineCoupling, InvConv1x1, standard_normal_logpdf

__all__ = ["DEFAULT_WEIGHTS", "PatchFlow", "image_patches", "load_patchnr", "patch_nll"]

#: Bundled weights by image kind: ``"ct"`` for real-valued operators, ``"mri"`` for complex ones
#: (see data/weights/patchnr_*.md for how each was made).
DEFAULT_WEIGHTS = {
    "ct": "data/weights/patchnr_ct.pt",
    "mri": "data/weights/patchnr_mri.pt",
}


class _PointwiseMLP(nn.Module):
    """Fully connected coupling network on ``(N, C, 1, 1)``: Linear -> ReLU -> Linear -> ReLU -> Linear
    (the last one zero-initialised, so the coupling starts as the identity)."""

    def __init__(self, in_features: int, out_features: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.out = nn.Linear(hidden, out_features)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        return self.out(self.net(x.reshape(n, -1))).reshape(n, -1, 1, 1)


class _DenseCoupling(AffineCoupling):
    """The channel-split affine coupling of ``AffineCoupling`` with a fully connected network."""

    def __init__(self, channels: int, hidden: int, parity: int) -> None:
        super().__init__(channels, hidden, "channel", parity)
        half = channels // 2
        self.net = _PointwiseMLP(half, 2 * half, hidden)


class PatchFlow(nn.Module):
    """z = f(q): a Glow-type flow on ``p x p`` patches, ``q (N, 1, p, p) -> z (N, p p)`` with exact ``log p(q)``.

    ``n_couplings`` blocks of [actnorm] -> invertible 1x1 mixing of the ``p p`` pixels (LU) ->
    affine coupling with a fully connected network (``hidden`` units, two hidden layers), the
    coupling halves alternating. ``p p`` must be even (the coupling splits it in halves).

    ``image_size`` is the patch size (what ``medrecon train`` reads to build a patch dataset).

    >>> flow = PatchFlow(patch_size=4, n_couplings=2, hidden=8)
    >>> q = torch.rand(3, 1, 4, 4)
    >>> z, logdet = flow(q)
    >>> tuple(z.shape), bool(torch.allclose(flow.decode(z), q, atol=1e-5))
    ((3, 16), True)
    """

    def __init__(
        self,
        *,
        patch_size: int = 6,
        n_couplings: int = 5,
        hidden: int = 128,
        actnorm: bool = True,
        inv_conv: str = "lu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        p = int(patch_size)
        if p < 1 or (p * p) % 2:
            raise ValueError(
                f"patch_size must be a positive even number (p*p is split in halves), got {patch_size}"
            )
        if n_couplings < 1:
            raise ValueError(f"n_couplings must be >= 1, got {n_couplings}")
        if inv_conv not in ("lu", "plain", "none"):
            raise ValueError(f"inv_conv must be 'lu', 'plain' or 'none', got {inv_conv!r}")
        self.hparams = {
            "patch_size": p,
            "n_couplings": int(n_couplings),
            "hidden": int(hidden),
            "actnorm": bool(actnorm),
            "inv_conv": inv_conv,
            "seed": int(seed),
        }
        self.patch_size = self.image_size = p
        d = p * p
        self.latent_shape = (d,)
        gen = torch.Generator().manual_seed(int(seed))
        layers: list[nn.Module] = []
        for i in range(int(n_couplings)):
            if actnorm:
                layers.append(ActNorm(d))
            if inv_conv != "none":
                layers.append(InvConv1x1(d, inv_conv, generator=gen))
            layers.append(_DenseCoupling(d, int(hidden), parity=i))
        self.layers = nn.ModuleList(layers)

    def _check(self, q: Tensor) -> None:
        p = self.patch_size
        if q.dim() != 4 or tuple(q.shape[1:]) != (1, p, p):
            raise ValueError(f"PatchFlow expects patches of shape (N, 1, {p}, {p}), got {tuple(q.shape)}")

    def forward(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """z = f(q) and log|det df/dq|: ``(N, 1, p, p) -> (N, p p), (N,)``."""
        self._check(q)
        h = q.reshape(q.shape[0], -1, 1, 1)  # (N, p p, 1, 1): pixels as channels
        logdet = q.new_zeros(q.shape[0])
        for layer in self.layers:
            h, ld = layer(h)
            logdet = logdet + ld
        return h.reshape(q.shape[0], -1), logdet

    def decode(self, z: Tensor) -> Tensor:
        """q = f^{-1}(z): ``(N, p p) -> (N, 1, p, p)``."""
        if z.dim() != 2 or z.shape[1] != self.latent_shape[0]:
            raise ValueError(
                f"PatchFlow expects latents of shape (N, {self.latent_shape[0]}), got {tuple(z.shape)}"
            )
        h = z.reshape(z.shape[0], -1, 1, 1)
        for layer in reversed(self.layers):
            h = layer.inverse(h)
        return h.reshape(z.shape[0], 1, self.patch_size, self.patch_size)

    def log_prob(self, q: Tensor) -> Tensor:
        """log p(q) in nats: ``(N, 1, p, p) -> (N,)``."""
        z, logdet = self(q)
        return standard_normal_logpdf(z) + logdet

    def neg_log_prob(self, q: Tensor) -> Tensor:
        """-log p(q) in nats: ``(N, 1, p, p) -> (N,)``."""
        return -self.log_prob(q)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """n patches f^{-1}(z), z ~ N(0, temperature^2 I): ``(n, 1, p, p)``."""
        ref = next(self.parameters())
        z = torch.randn(
            n,
            *self.latent_shape,
            generator=generator,
            dtype=ref.dtype,
            device=generator.device if generator is not None else ref.device,
        )
        return self.decode(temperature * z.to(ref.device))


# =========================================================================== patches and regulariser
def image_patches(
    x: Tensor, patch_size: int, *, n_patches: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Overlapping ``p x p`` patches (stride 1): ``(B, 1, H, W) -> (B, N, 1, p, p)``, differentiable in x.

    ``n_patches=None``: all ``N = (H - p + 1)(W - p + 1)``; else a random subset of that many
    positions (without replacement, drawn from ``generator``; the same positions for every image).

    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> image_patches(x, 2).shape, image_patches(x, 2)[0, 0, 0].tolist()
    (torch.Size([1, 9, 1, 2, 2]), [[0.0, 1.0], [4.0, 5.0]])
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"image_patches expects images of shape (B, 1, H, W), got {tuple(x.shape)}")
    p = int(patch_size)
    b, _, h, w = x.shape
    if h < p or w < p:
        raise ValueError(f"images of {h}x{w} pixels are smaller than the {p}x{p} patches")
    nh, nw = h - p + 1, w - p + 1
    total = nh * nw
    dev = x.device
    if n_patches is None or n_patches >= total:
        corners = torch.arange(total, device=dev)
    else:
        if n_patches < 1:
            raise ValueError(f"n_patches must be >= 1 or None, got {n_patches}")
        gdev = generator.device if generator is not None else dev
        corners = torch.randperm(total, generator=generator, device=gdev)[:n_patches].to(dev)
    top_left = (corners // nw) * w + corners % nw  # (N,) flat index
    offsets = (torch.arange(p, device=dev)[:, None] * w + torch.arange(p, device=dev)[None, :]).reshape(-1)
    index = top_left[:, None] + offsets[None, :]  # (N, p p)
    flat = x.reshape(b, h * w)
    return flat[:, index].reshape(b, -1, 1, p, p)


def patch_nll(
    flow: PatchFlow,
    x: Tensor,
    *,
    n_patches: int | None = None,
    generator: torch.Generator | None = None,
    chunk: int = 65536,
) -> Tensor:
    """R(x): the mean -log p of the image's (sampled) patches, per image: ``(B, 1, H, W) -> (B,)``.

    ``chunk`` caps the patches sent through the flow at once (memory), without changing the value.
    """
    q = image_patches(x, flow.patch_size, n_patches=n_patches, generator=generator)  # (B, N, 1, p, p)
    b, n = q.shape[:2]
    flat = q.reshape(b * n, *q.shape[2:])
    nll = torch.cat([flow.neg_log_prob(part) for part in torch.split(flat, chunk)])
    return nll.reshape(b, n).mean(1)


# =========================================================================== loading
def load_patchnr(weights: str | os.PathLike, *, device: torch.device | str = "cpu") -> PatchFlow:
    """The PatchFlow stored in ``weights`` (checked: another model class or shapes is an error); frozen, eval."""
    return load_frozen(weights, PatchFlow, device=device)  # type: ignore[return-value]
