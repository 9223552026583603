"""Phantoms: ranges, orientation, seeding, ODL's phantoms."""

import pytest
import torch

from medrecon.data.phantoms import ODL_PHANTOMS, odl_phantom, random_ellipses, shepp_logan


@pytest.mark.parametrize("size", [8, 9, 64])
def test_shepp_logan_range_and_orientation(size):
    p = shepp_logan(size)
    assert p.shape == (size, size) and p.dtype == torch.float32
    assert float(p.min()) == 0.0 and float(p.max()) == 1.0
    if size == 64:
        # Modified Shepp-Logan values at known points ([-1, 1]^2, y up): brain 0.2 at the centre,
        # the ellipse of 0.1 at (0, 0.35) is at the top (row ~ 21), the skull rim is 1.
        assert float(p[32, 32]) == pytest.approx(0.2)
        assert float(p[20, 32]) == pytest.approx(0.3)
        assert float(p[44, 32]) == pytest.approx(0.2)
        assert float(p[32, 10]) == pytest.approx(1.0)  # x = -0.67: inside the skull ring (0.6624..0.69)


def test_shepp_logan_matches_odl():
    ours, odl_version = shepp_logan(64), odl_phantom("shepp_logan", 64)
    # Same ellipses and orientation; pixels on ellipse boundaries may differ (ODL samples its own way).
    assert float((ours - odl_version).abs().gt(1e-6).float().mean()) < 0.05


def test_random_ellipses_distribution_and_support(rng):
    x = random_ellipses(16, 33, generator=rng)
    assert x.shape == (16, 1, 33, 33) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    c = (2 * torch.arange(33, dtype=torch.float64) + 1) / 33 - 1
    outside = (c[None, :] ** 2 + c[:, None] ** 2) > 1.0
    assert float(x[..., outside].abs().max()) == 0.0  # zero outside the inscribed circle
    assert bool((x.flatten(1).amax(1) > 0.05).all())  # every image has content
    assert len({tuple(img.flatten()[::37].tolist()) for img in x}) == 16  # all different


def test_random_ellipses_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = random_ellipses(3, 16, generator=torch.Generator().manual_seed(7))
    b = random_ellipses(3, 16, generator=torch.Generator().manual_seed(7))
    c = random_ellipses(3, 16, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=0, size=8),
        dict(n=2, size=0),
        dict(n=2, size=8, min_ellipses=0),
        dict(n=2, size=8, min_ellipses=4, max_ellipses=3),
    ],
)
def test_random_ellipses_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        random_ellipses(**kwargs)


@pytest.mark.parametrize("name", ODL_PHANTOMS)
def test_odl_phantoms(name):
    p = odl_phantom(name, 17)
    assert p.shape == (17, 17) and p.dtype == torch.float32
    assert float(p.min()) >= 0.0 and float(p.max()) == pytest.approx(1.0)


def test_bad_phantom_arguments():
    with pytest.raises(ValueError, match="unknown ODL phantom"):
        odl_phantom("submarine", 16)
    with pytest.raises(ValueError, match="size"):
        shepp_logan(0)
