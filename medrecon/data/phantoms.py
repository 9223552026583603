"""2D phantoms for CT: Shepp-Logan, seeded random ellipses (training data) and ODL's phantoms.

Every phantom is an image ``(size, size)`` (a batch ``(n, 1, size, size)`` for ``random_ellipses``)
in [0, 1], float32, with row 0 at the top and the image spanning [-1, 1]^2: pixel ``(r, c)`` has
its centre at ``x = (2c + 1)/size - 1``, ``y = 1 - (2r + 1)/size`` (the orientation of
``medrecon.operators.ct``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor

__all__ = ["shepp_logan", "random_ellipses", "odl_phantom", "ODL_PHANTOMS", "ellipses_image"]

# Modified Shepp-Logan (Toft, "The Radon Transform: Theory and Implementation", 1996, table 3.1;
# the original is Shepp & Logan, IEEE Trans. Nucl. Sci. 21, 1974, with higher contrast):
# intensity, semi-axis a (x), semi-axis b (y), centre x0, centre y0, rotation (degrees, counter-clockwise).
_MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.8740, 0.0, -0.0184, 0.0),
    (-0.2, 0.1100, 0.3100, 0.22, 0.0, -18.0),
    (-0.2, 0.1600, 0.4100, -0.22, 0.0, 18.0),
    (0.1, 0.2100, 0.2500, 0.0, 0.35, 0.0),
    (0.1, 0.0460, 0.0460, 0.0, 0.1, 0.0),
    (0.1, 0.0460, 0.0460, 0.0, -0.1, 0.0),
    (0.1, 0.0460, 0.0230, -0.08, -0.605, 0.0),
    (0.1, 0.0230, 0.0230, 0.0, -0.606, 0.0),
    (0.1, 0.0230, 0.0460, 0.06, -0.605, 0.0),
)

#: Names accepted by ``odl_phantom``.
ODL_PHANTOMS = (
    "shepp_logan",
    "shepp_logan_original",
    "forbild",
    "derenzo_sources",
    "tgv",
    "smooth_cuboid",
    "cuboid",
)


def _grid(size: int, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    c = (2 * torch.arange(size, dtype=dtype) + 1) / size - 1
    return c[None, :].expand(size, size), (-c)[:, None].expand(size, size)  # x (columns), y (up)


def ellipses_image(params: Tensor, size: int) -> Tensor:
    """Sum of filled ellipses sampled at pixel centres: ``params (n, K, 6) -> (n, size, size)``.

    Each row is (intensity, semi-axis x, semi-axis y, centre x, centre y, rotation in radians), in
    the [-1, 1]^2 frame; rows with intensity 0 contribute nothing.
    """
    x, y = _grid(size, params.dtype)
    x, y = x.reshape(1, 1, -1), y.reshape(1, 1, -1)
    value, a, b, x0, y0, phi = (params[..., i : i + 1] for i in range(6))  # (n, K, 1)
    cos, sin = torch.cos(phi), torch.sin(phi)
    dx, dy = x - x0, y - y0
    u = (dx * cos + dy * sin) / a
    v = (-dx * sin + dy * cos) / b
    inside = (u * u + v * v) <= 1.0
    image = (value * inside).sum(dim=1)  # (n, size*size)
    return image.reshape(-1, size, size)


def shepp_logan(size: int) -> Tensor:
    """The modified Shepp-Logan phantom ``(size, size)``, float32, values in [0, 1] (skull 1, brain 0.2-0.3).

    >>> p = shepp_logan(64)
    >>> p.shape, float(p.min()) >= 0.0, float(p.max())
    (torch.Size([64, 64]), True, 1.0)
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    params = torch.tensor(_MODIFIED_SHEPP_LOGAN, dtype=torch.float64)
    params[:, 5] = params[:, 5] * (math.pi / 180)
    image = ellipses_image(params[None], size)[0]
    # Overlapping ellipses in float arithmetic give 1e-16 excursions outside [0, 1].
    return image.clamp(0.0, 1.0).to(torch.float32)


def random_ellipses(
    n: int,
    size: int,
    *,
    generator: torch.Generator | None = None,
    min_ellipses: int = 3,
    max_ellipses: int = 10,
) -> Tensor:
    """n random-ellipse phantoms ``(n, 1, size, size)``, float32, in [0, 1], zero outside the inscribed circle.

    Distribution (per image, independently, all uniform; lengths in the [-1, 1]^2 frame):
    number of ellipses ``K ~ U{min_ellipses..max_ellipses}`` (3..10); for each ellipse intensity
    ``~ U(0.1, 1)``, semi-axes ``~ U(0.05, 0.4)`` each, centre at radius ``sqrt(U(0, 1)) * 0.6``
    (uniform over the disc of radius 0.6) and angle ``U(0, 2 pi)``, rotation ``~ U(0, pi)``. The
    ellipses add up; the sum is divided by its maximum when that exceeds 1 (so it stays in [0, 1],
    non-negative) and set to 0 outside the inscribed circle ``x^2 + y^2 <= 1``. Draws come from
    ``generator`` only (the global RNG is untouched).

    >>> g = torch.Generator().manual_seed(0)
    >>> x = random_ellipses(4, 32, generator=g)
    >>> x.shape, bool(x.min() >= 0), bool(x.max() <= 1)
    (torch.Size([4, 1, 32, 32]), True, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not 1 <= min_ellipses <= max_ellipses:
        raise ValueError(f"need 1 <= min_ellipses <= max_ellipses, got {min_ellipses}, {max_ellipses}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))

    def uniform(lo, hi, shape):
        return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=torch.float64)

    k_max = max_ellipses
    count = torch.randint(min_ellipses, max_ellipses + 1, (n, 1), generator=generator)
    active = torch.arange(k_max)[None, :] < count  # (n, k_max)
    shape = (n, k_max)
    value = uniform(0.1, 1.0, shape) * active
    axes_x, axes_y = uniform(0.05, 0.4, shape), uniform(0.05, 0.4, shape)
    radius, angle = 0.6 * uniform(0.0, 1.0, shape).sqrt(), uniform(0.0, 2 * math.pi, shape)
    rotation = uniform(0.0, math.pi, shape)
    params = torch.stack(
        [value, axes_x, axes_y, radius * torch.cos(angle), radius * torch.sin(angle), rotation], -1
    )
    images = ellipses_image(params, size)  # (n, size, size)
    peak = images.amax(dim=(1, 2), keepdim=True).clamp(min=1.0)
    images = images / peak
    x, y = _grid(size)
    images = images * ((x * x + y * y) <= 1.0)
    return images.to(torch.float32)[:, None]


def odl_phantom(name: str, size: int) -> Tensor:
    """One of ODL's 2D phantoms ``(size, size)``, float32, rescaled to [0, 1] (divided by its maximum, clipped at 0).

    ``name`` in ``ODL_PHANTOMS``: ``shepp_logan`` (modified), ``shepp_logan_original``, ``forbild``,
    ``derenzo_sources``, ``tgv``, ``smooth_cuboid``, ``cuboid``. Sampled on [-1, 1]^2 and turned into
    this module's orientation (ODL indexes arrays ``[x, y]``). ODL's ``submarine`` does not work in ODL 1.0.
    """
    if name not in ODL_PHANTOMS:
        raise ValueError(f"unknown ODL phantom {name!r}; choose one of {', '.join(ODL_PHANTOMS)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import odl  # noqa: PLC0415
        from odl.core import phantom  # noqa: PLC0415
    space = odl.uniform_discr([-1, -1], [1, 1], (size, size), dtype="float64")
    makers = {
        "shepp_logan": lambda: phantom.shepp_logan(space, modified=True),
        "shepp_logan_original": lambda: phantom.shepp_logan(space, modified=False),
        "forbild": lambda: phantom.forbild(space),
        "derenzo_sources": lambda: phantom.derenzo_sources(space),
        "tgv": lambda: phantom.tgv_phantom(space),
        "smooth_cuboid": lambda: phantom.smooth_cuboid(space),
        "cuboid": lambda: phantom.cuboid(space),
    }
    arr = np.asarray(makers[name]().data, dtype=np.float64)  # [x, y], y growing with the index
    image = np.ascontiguousarray(arr.T[::-1])  # -> [row (top first), column]
    image = np.clip(image, 0.0, None)
    peak = image.max()
    if peak > 0:
        image = image / peak
    return torch.from_numpy(image.astype(np.float32))
