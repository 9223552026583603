"""Multi-scale normalizing flow prior (RealNVP / Glow); the method "flow" is :mod:`medrecon.methods.flow`.

The flow is an invertible map ``f: x -> z`` from an image ``x`` in [0, 1] to a Gaussian latent
``z ~ N(0, I)`` with exact log-likelihood

    log p(x) = log N(f(x); 0, I) + log |det df/dx|,

built from

* affine coupling layers with checkerboard and channel masks, squeeze and factor-out (multi-scale
  architecture of Dinh, Sohl-Dickstein and Bengio, "Density estimation using Real NVP", ICLR 2017);
* optional actnorm (data-dependent initialisation) and invertible 1x1 convolutions, plain
  (log-determinant by ``slogdet``) or LU-parametrised (Kingma and Dhariwal, "Glow", NeurIPS 2018);
* a fixed preprocessing [0, 1] -> R whose log-determinant is part of ``log p(x)``: the logit
  transform ``logit(alpha + (1 - 2 alpha) x)`` of RealNVP (section 4.1, with alpha = 0.05), or
  ``"none"`` (identity).

The generator is the inverse, ``x = G(z) = f^{-1}(z)``; being invertible it has no representation
error, which is the point of Asim, Daniels, Leong, Hand and Ahmed, "Invertible generative models
for inverse problems: mitigating representation error and dataset bias" (ICML 2020).
The method ``flow`` implements their latent maximum-likelihood formulation
``min_z ||A G(z) - y||^2 + lam ||z||^2`` and the image-space MAP ``min_x ||A x - y||^2 - lam log p(x)``.

Training runs through the one training loop, ``medrecon.training.fit``, with ``flow_step`` /
``flow_eval`` (uniform dequantisation, negative log-likelihood in bits per dimension).

Multi-scale sizes: every one of ``n_levels`` levels squeezes once, so the image height and width
must be divisible by ``2 ** n_levels`` (28x28 MNIST works unpadded with 2 levels: 28 = 4 * 7).

Complex images (MRI): the flow models real images (magnitudes); the ``flow`` method feeds
``G(z)`` to a complex operator as a complex image with zero imaginary part (``op.in_complex``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medrecon._deprecated import moved
from medrecon.priors.base import load_frozen

__all__ = [
    "MultiScaleFlow",
    "AffineCoupling",
    "ActNorm",
    "InvConv1x1",
    "Squeeze",
    "LogitTransform",
    "checkerboard_mask",
    "flow_step",
    "flow_eval",
    "bits_per_dim",
    "dequantize",
    "load_flow",
    "DEFAULT_WEIGHTS",
]

_LOG_2PI = math.log(2 * math.pi)

#: Bundled weights by image size (see data/weights/flow_*.md for how each was made).
DEFAULT_WEIGHTS = {
    28: "data/weights/flow_mnist28.pt",
    64: "data/weights/flow_ellipses64.pt",
    # real CT / brain MRI slices (medrecon.data.real train splits); MRI: for complex operators
    128: {"ct": "data/weights/flow_ct128.pt", "mri": "data/weights/flow_mri128.pt"},
}

#: Number of quantisation levels assumed by dequantisation and bits/dim (8-bit images).
N_BINS = 256


def _sum_per_sample(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1).sum(dim=1)


def standard_normal_logpdf(z: Tensor) -> Tensor:
    """log N(z; 0, I) per sample: ``(B, ...) -> (B,)``."""
    return -0.5 * _sum_per_sample(z.pow(2) + _LOG_2PI)


# =========================================================================== layers
# Every layer maps (B, C, H, W) -> (B, C', H', W') with ``forward(x) -> (y, logdet (B,))`` and
# ``inverse(y) -> x``.


def checkerboard_mask(height: int, width: int, parity: int, *, dtype=torch.float32, device=None) -> Tensor:
    """(1, 1, H, W) mask, 1 where ``(i + j) % 2 == parity``."""
    i = torch.arange(height, device=device).reshape(-1, 1)
    j = torch.arange(width, device=device).reshape(1, -1)
    return ((i + j) % 2 == parity).to(dtype).reshape(1, 1, height, width)


class _CouplingNet(nn.Module):
    """conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3 (zero-initialised: the coupling starts as the
    identity)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
        )
        self.out = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.net(x))


class AffineCoupling(nn.Module):
    """y_b = x_b * exp(s(x_a)) + t(x_a), y_a = x_a (RealNVP); log|det| = sum s.

    ``mask="checkerboard"``: x_a are the pixels with ``(i + j) % 2 == parity`` (the network sees
    ``x * mask`` and the mask). ``mask="channel"``: x_a is the first half of the channels
    (``parity=1``: the second half). ``s = scale * tanh(raw)`` with a learned per-channel ``scale``
    (RealNVP's bounded scale). Identity at initialisation.
    """

    def __init__(
        self, channels: int, hidden: int, mask: Literal["checkerboard", "channel"], parity: int
    ) -> None:
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise ValueError(f"mask must be 'checkerboard' or 'channel', got {mask!r}")
        if mask == "channel" and channels % 2:
            raise ValueError(f"a channel-mask coupling needs an even number of channels, got {channels}")
        self.mask_kind, self.parity, self.channels = mask, int(parity) % 2, channels
        if mask == "checkerboard":
            n_in, n_out = channels + 1, channels
        else:
            n_in = n_out = channels // 2
        self.net = _CouplingNet(n_in, 2 * n_out, hidden)
        self.scale = nn.Parameter(torch.ones(1, n_out, 1, 1))

    def _st(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, t = self.net(cond).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t

    def _mask(self, x: Tensor) -> Tensor:
        return checkerboard_mask(x.shape[2], x.shape[3], self.parity, dtype=x.dtype, device=x.device)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mask_kind == "checkerboard":
            m = self._mask(x)
            xa = x * m
            s, t = self._st(torch.cat([xa, m.expand(x.shape[0], 1, -1, -1)], dim=1))
            s, t = s * (1 - m), t * (1 - m)
            return xa + (1 - m) * (x * torch.exp(s) + t), _sum_per_sample(s)
        xa, xb = x.chunk(2, dim=1)
        if self.parity:
            xa, xb = xb, xa
        s, t = self._st(xa)
        yb = xb * torch.exp(s) + t
        y = torch.cat([yb, xa] if self.parity else [xa, yb], dim=1)
        return y, _sum_per_sample(s)

    def inverse(self, y: Tensor) -> Tensor:
        if self.mask_kind == "checkerboard":
            m = self._mask(y)
            ya = y * m
            s, t = self._st(torch.cat([ya, m.expand(y.shape[0], 1, -1, -1)], dim=1))
            s, t = s * (1 - m), t * (1 - m)
            return ya + (1 - m) * (y - t) * torch.exp(-s)
        ya, yb = y.chunk(2, dim=1)
        if self.parity:
            ya, yb = yb, ya
        s, t = self._st(ya)
        xb = (yb - t) * torch.exp(-s)
        return torch.cat([xb, ya] if self.parity else [ya, xb], dim=1)


class ActNorm(nn.Module):
    """y = exp(logs) * (x + bias) per channel (Glow); log|det| = H W sum(logs).

    Data-dependent initialisation: the first forward pass in training mode sets bias and logs so
    that that batch has zero mean and unit variance per channel (the ``initialized`` buffer is saved
    in checkpoints, so a loaded model is never re-initialised). Before that it is the identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _data_init(self, x: Tensor) -> None:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-2)  # no blow-up on constant channels
        self.bias.copy_(-mean)
        self.logs.copy_(-torch.log(std))
        self.initialized.fill_(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized) and x.shape[0] > 1:
            self._data_init(x)
        y = (x + self.bias) * torch.exp(self.logs)
        logdet = x.shape[2] * x.shape[3] * self.logs.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    """y = W x at every pixel (Glow's invertible 1x1 convolution); log|det| = H W log|det W|.

    ``parametrization="lu"``: W = P L (U + diag(sign_s exp(log_s))), log|det W| = sum(log_s);
    ``"plain"``: W is a free matrix and log|det W| comes from ``torch.linalg.slogdet``.
    Initialised with a random rotation (from ``generator``; the global RNG when None).
    """

    def __init__(
        self,
        channels: int,
        parametrization: Literal["lu", "plain"] = "lu",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if parametrization not in ("lu", "plain"):
            raise ValueError(f"parametrization must be 'lu' or 'plain', got {parametrization!r}")
        self.parametrization = parametrization
        w = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))[0]
        if parametrization == "plain":
            self.weight = nn.Parameter(w.float())
        else:
            p, lower, upper = torch.linalg.lu(w)
            s = torch.diagonal(upper)
            self.register_buffer("perm", p.float())
            self.register_buffer("sign_s", torch.sign(s).float())
            self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
            self.lower = nn.Parameter(lower.float())
            self.upper = nn.Parameter(torch.triu(upper, 1).float())
            self.log_s = nn.Parameter(torch.log(s.abs()).float())

    def matrix(self) -> Tensor:
        """W, (C, C)."""
        if self.parametrization == "plain":
            return self.weight
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def _log_abs_det(self) -> Tensor:
        if self.parametrization == "plain":
            return torch.linalg.slogdet(self.weight)[1]
        return self.log_s.sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.matrix()
        y = torch.einsum("ij,bjhw->bihw", w, x)
        logdet = x.shape[2] * x.shape[3] * self._log_abs_det()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.matrix()), y)


class Squeeze(nn.Module):
    """(B, C, H, W) -> (B, 4C, H/2, W/2), each 2x2 block into channels (RealNVP); log|det| = 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width, got {h}x{w}")
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h, w = y.shape
        c = c4 // 4
        return y.reshape(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


class LogitTransform(nn.Module):
    """y = logit(alpha + (1 - 2 alpha) x): [0, 1] -> R (RealNVP, section 4.1); log|det| accounted.

    The inverse, ``(sigmoid(y) - alpha) / (1 - 2 alpha)``, maps R onto (-alpha', 1 + alpha') with
    ``alpha' = alpha / (1 - 2 alpha)``. ``alpha = 0``: the plain logit (inputs strictly inside (0, 1)).
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        # dy/dx = (1 - 2 alpha) / (s (1 - s))
        logdet = _sum_per_sample(math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s))
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)

    def logdet_at_output(self, y: Tensor) -> Tensor:
        """log|det dy/dx| evaluated at the output y (stable for large |y|): (B,)."""
        return _sum_per_sample(math.log(1 - 2 * self.alpha) - F.logsigmoid(y) - F.logsigmoid(-y))


# =========================================================================== the flow
class MultiScaleFlow(nn.Module):
    """z = f(x), x = G(z) = f^{-1}(z): a multi-scale RealNVP/Glow flow, ``(B, C, H, W)`` <-> ``z (B, C H W)``.

    Level ``l`` (of ``n_levels``): ``n_checker`` checkerboard couplings (alternating parity), squeeze,
    ``n_channel`` channel couplings (alternating halves); every level but the last factors out half
    of its channels (they go to z directly, N(0, I)). With ``actnorm`` each coupling is preceded by an
    actnorm; with ``inv_conv`` each channel coupling is preceded by an invertible 1x1 convolution
    (replacing the fixed alternation by a learned mixing, Glow). Before all that, ``preprocess``
    maps [0, 1] to R (its log-determinant is included, so ``log_prob`` is the density of x in [0, 1]).

    ``latent_shape = (C H W,)``: z is the concatenation of the factored-out parts (flattened, in
    level order) and the last level's output.

    Args:
        image_size: H = W, or ``[H, W]``; divisible by ``2 ** n_levels``.
        hidden: channels of each coupling network (conv3x3, conv1x1, conv3x3).
        inv_conv: ``"lu"``, ``"plain"`` or ``"none"``.
        preprocess: ``"logit"`` (with ``alpha``) or ``"none"``.
        seed: seed of the 1x1 convolutions' random-rotation initialisation (recorded in ``hparams``).

    >>> flow = MultiScaleFlow(image_size=8, n_levels=2, hidden=8)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> z, logdet = flow(x)
    >>> tuple(z.shape), bool(torch.allclose(flow.decode(z), x, atol=1e-5))
    ((2, 64), True)
    """

    def __init__(
        self,
        *,
        image_size: int | Sequence[int] = 28,
        in_channels: int = 1,
        n_levels: int = 2,
        n_checker: int = 3,
        n_channel: int = 3,
        hidden: int = 32,
        actnorm: bool = True,
        inv_conv: str = "lu",
        preprocess: str = "logit",
        alpha: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(image_size, int):
            h = w = int(image_size)
        else:
            h, w = (int(s) for s in image_size)
        if n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {n_levels}")
        if h % 2**n_levels or w % 2**n_levels:
            raise ValueError(
                f"image size {h}x{w} must be divisible by 2**n_levels = {2**n_levels} "
                "(each level squeezes once); "
                "pad the images or use fewer levels"
            )
        if inv_conv not in ("lu", "plain", "none"):
            raise ValueError(f"inv_conv must be 'lu', 'plain' or 'none', got {inv_conv!r}")
        if preprocess not in ("logit", "none"):
            raise ValueError(f"preprocess must be 'logit' or 'none', got {preprocess!r}")
        self.hparams = dict(
            image_size=list(image_size) if not isinstance(image_size, int) else int(image_size),
            in_channels=int(in_channels),
            n_levels=int(n_levels),
            n_checker=int(n_checker),
            n_channel=int(n_channel),
            hidden=int(hidden),
            actnorm=bool(actnorm),
            inv_conv=inv_conv,
            preprocess=preprocess,
            alpha=float(alpha),
            seed=int(seed),
        )
        self.image_shape = (int(in_channels), h, w)
        self.image_size = h  # the height (what ``medrecon train`` reads to build the dataset)
        self.latent_shape = (int(in_channels) * h * w,)
        self.preprocess = LogitTransform(alpha) if preprocess == "logit" else None
        gen = torch.Generator().manual_seed(int(seed))
        self.levels = nn.ModuleList()
        self._z_shapes: list[tuple[int, int, int]] = []  # factored-out parts, then the final output
        c = int(in_channels)
        for level in range(n_levels):
            layers: list[nn.Module] = []
            for i in range(n_checker):
                if actnorm:
                    layers.append(ActNorm(c))
                layers.append(AffineCoupling(c, hidden, "checkerboard", parity=i))
            layers.append(Squeeze())
            c, h, w = 4 * c, h // 2, w // 2
            for i in range(n_channel):
                if actnorm:
                    layers.append(ActNorm(c))
                if inv_conv != "none":
                    layers.append(InvConv1x1(c, inv_conv, generator=gen))
                layers.append(AffineCoupling(c, hidden, "channel", parity=i))
            self.levels.append(nn.ModuleList(layers))
            if level < n_levels - 1:
                self._z_shapes.append((c // 2, h, w))
                c = c - c // 2
        self._z_shapes.append((c, h, w))

    # ----------------------------------------------------------------- core maps
    def _check_image(self, x: Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"MultiScaleFlow expects images of shape (B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def _flow_forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """The flow after preprocessing: u (B, C, H, W) -> z (B, D), log|det| (B,)."""
        logdet = u.new_zeros(u.shape[0])
        parts = []
        h = u
        for li, layers in enumerate(self.levels):
            for layer in layers:
                h, ld = layer(h)
                logdet = logdet + ld
            if li < len(self.levels) - 1:
                k = self._z_shapes[li][0]
                parts.append(h[:, :k].reshape(h.shape[0], -1))
                h = h[:, k:]
        parts.append(h.reshape(h.shape[0], -1))
        return torch.cat(parts, dim=1), logdet

    def _flow_inverse(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_shape[0]:
            raise ValueError(
                f"MultiScaleFlow expects latents of shape (B, {self.latent_shape[0]}), got {tuple(z.shape)}"
            )
        sizes = [math.prod(s) for s in self._z_shapes]
        pieces = list(torch.split(z, sizes, dim=1))
        h = pieces[-1].reshape(z.shape[0], *self._z_shapes[-1])
        for li in reversed(range(len(self.levels))):
            if li < len(self.levels) - 1:
                h = torch.cat([pieces[li].reshape(z.shape[0], *self._z_shapes[li]), h], dim=1)
            for layer in reversed(self.levels[li]):
                h = layer.inverse(h)
        return h

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """z = f(x) and log|det df/dx| (preprocessing included): ``(B, C, H, W) -> (B, D), (B,)``."""
        self._check_image(x)
        logdet = x.new_zeros(x.shape[0])
        if self.preprocess is not None:
            x, logdet = self.preprocess(x)
        z, ld = self._flow_forward(x)
        return z, logdet + ld

    def encode(self, x: Tensor) -> Tensor:
        """z = G^{-1}(x): ``(B, C, H, W) -> (B, D)``."""
        return self(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """x = G(z) = f^{-1}(z): ``(B, D) -> (B, C, H, W)`` (in (-alpha', 1 + alpha') with the logit)."""
        u = self._flow_inverse(z)
        return self.preprocess.inverse(u) if self.preprocess is not None else u

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = log N(f(x)) + log|det df/dx| (nats): ``(B, C, H, W) -> (B,)``."""
        z, logdet = self(x)
        return standard_normal_logpdf(z) + logdet

    def neg_log_prob(self, x: Tensor) -> Tensor:
        """-log p(x) in nats: ``(B, C, H, W) -> (B,)`` (the ``DensityPrior`` protocol)."""
        return -self.log_prob(x)

    def neg_log_prob_preprocessed(self, u: Tensor) -> Tensor:
        """-log p_x(x) evaluated at ``u = preprocess(x)`` (avoids a logit(sigmoid()) round trip): (B,)."""
        z, logdet = self._flow_forward(u)
        nll = -(standard_normal_logpdf(z) + logdet)
        if self.preprocess is not None:
            nll = nll - self.preprocess.logdet_at_output(u)
        return nll

    def sample_latent(
        self, n: int, *, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """n draws from N(0, temperature^2 I): ``(n, D)`` on the model's device."""
        p = next(self.parameters())
        z = torch.randn(
            n,
            *self.latent_shape,
            generator=generator,
            dtype=p.dtype,
            device=generator.device if generator is not None else p.device,
        )
        return (temperature * z).to(p.device)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None, temperature: float = 0.7) -> Tensor:
        """n images G(z), z ~ N(0, temperature^2 I) (Glow's reduced temperature): ``(n, C, H, W)``."""
        return self.decode(self.sample_latent(n, generator=generator, temperature=temperature))


# =========================================================================== training
def dequantize(x: Tensor, *, generator: torch.Generator | None = None, n_bins: int = N_BINS) -> Tensor:
    """Uniform dequantisation: ``(round(x (n_bins - 1)) + u) / n_bins``, u ~ U[0, 1) (Theis et al. 2016).

    Maps [0, 1] images onto the continuous (0, 1) so that the flow's density cannot collapse onto
    the quantised values; then ``-log p(x) + D log n_bins`` bounds the discrete NLL.
    """
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=device)
    return (torch.round(x.clamp(0, 1) * (n_bins - 1)) + u.to(x.device)) / n_bins


def bits_per_dim(nll_nats: Tensor, n_dims: int, n_bins: int = N_BINS) -> Tensor:
    """(-log p(x) + D log n_bins) / (D log 2): the NLL of the discrete data in bits per dimension."""
    return (nll_nats + n_dims * math.log(n_bins)) / (n_dims * math.log(2.0))


def _images(batch) -> Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def flow_step(model: nn.Module, batch, ctx) -> dict[str, float]:
    """One optimizer step on the mean negative log-likelihood of dequantised images; ``fit``'s step_fn.

    ``ctx.optimizers["model"]`` is the optimizer, ``ctx.generator`` draws the dequantisation noise.
    Reports ``loss`` (nats per image), ``bpd`` (bits per dimension) and ``grad_norm`` (before clipping
    to ``train.grad_clip``, if set).
    """
    x = dequantize(_images(batch), generator=getattr(ctx, "generator", None))
    z, logdet = model(x)  # through the (possibly DDP-wrapped) module's forward
    nll = -(standard_normal_logpdf(z) + logdet)
    loss = nll.mean()
    opt = ctx.optimizers["model"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    from medrecon.training.fit import clip_gradients  # lazy: medrecon.training imports the priors

    grad_norm = clip_gradients(model, ctx)  # train.grad_clip (none by default)
    opt.step()
    d = x[0].numel()
    return {
        "loss": float(loss.detach()),
        "bpd": float(bits_per_dim(loss.detach(), d)),
        "grad_norm": grad_norm,
    }


@torch.no_grad()
def flow_eval(model: nn.Module, batch, ctx) -> dict[str, float]:
    """Validation NLL (nats per image) and bits/dim on dequantised images (noise from ``ctx.generator``)."""
    x = dequantize(_images(batch), generator=getattr(ctx, "generator", None))
    z, logdet = model(x)
    nll = -(standard_normal_logpdf(z) + logdet)
    loss = nll.mean()
    return {"loss": float(loss), "bpd": float(bits_per_dim(loss, x[0].numel()))}


# =========================================================================== loading
def load_flow(weights: str | os.PathLike, *, device: torch.device | str = "cpu") -> MultiScaleFlow:
    """The MultiScaleFlow stored in ``weights`` (checked: another model class or shapes is an error);
    frozen, eval."""
    return load_frozen(weights, MultiScaleFlow, device=device)  # type: ignore[return-value]


_MOVED = {"reconstruct_flow": "medrecon.methods.flow"}


def __getattr__(name: str):  # the method moved to medrecon.methods.flow
    return moved(__name__, name, _MOVED)
