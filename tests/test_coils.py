"""Coil-sensitivity estimation: ESPIRiT as the default, the low-resolution method as the cheap option."""

import pytest
import torch

from medrecon.operators.coils import estimate_sensitivities, simulate_multicoil
from medrecon.operators.espirit import espirit_maps
from medrecon.operators.masks import make_mask
from medrecon.operators.mri import MultiCoilMRI


def _head(shape=(48, 40)):
    """An ellipse 'head' with a dark ventricle (1 % of the tissue signal) inside; zero background."""
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, shape[0], dtype=torch.float64),
        torch.linspace(-1, 1, shape[1], dtype=torch.float64),
        indexing="ij",
    )
    head = ((yy / 0.85) ** 2 + (xx / 0.75) ** 2) < 1
    ventricle = ((yy / 0.4) ** 2 + (xx / 0.35) ** 2) < 1
    image = head.double() * (1 + 0.3 * xx)
    image[ventricle] = 0.01
    return image, head, ventricle


def test_maps_are_not_zeroed_inside_dark_regions_of_the_object():
    image, head, ventricle = _head()
    kspace, maps = simulate_multicoil(image, 8)
    mask = make_mask("equispaced", image.shape, 4, 0.3, seed=1)
    y = kspace * mask
    low = estimate_sensitivities(y, mask, method="lowres")  # threshold 0: unit norm everywhere
    torch.testing.assert_close(low.abs().pow(2).sum(0)[head], torch.ones_like(image[head]))
    esp = estimate_sensitivities(y, mask)
    norm = esp.abs().pow(2).sum(0)
    # ESPIRiT's crop removes only pixels without signal: some of the 1 % ventricle (no coil information
    # there), never tissue; the image lost to the crop is at most that 1 %
    tissue = head & (image > 0.5)
    torch.testing.assert_close(norm[tissue], torch.ones_like(image[tissue]))
    assert float(image[head & (norm == 0)].max()) <= 0.01
    for est in (low, esp):
        match = torch.linalg.vecdot(est, maps, dim=0).abs()
        assert float(match[tissue].min()) > 0.98
    # the old default threshold (2 % of the maximum RSS) zeroed the maps in a third of the ventricle
    old = estimate_sensitivities(y, mask, method="lowres", threshold=0.02)
    assert float((old[:, ventricle].abs().sum(0) == 0).double().mean()) > 0.25


def test_default_is_espirit_and_options_route():
    image, _, _ = _head((32, 32))
    kspace, _ = simulate_multicoil(image, 4)
    mask = make_mask("equispaced", (32, 32), 4, 0.4, seed=0)
    torch.testing.assert_close(estimate_sensitivities(kspace * mask, mask), espirit_maps(kspace * mask, mask))
    torch.testing.assert_close(
        estimate_sensitivities(kspace, num_low_frequencies=12, crop=0.5, kernel_size=5),
        espirit_maps(kspace, num_low_frequencies=12, crop=0.5, kernel_size=5),
    )
    with pytest.raises(ValueError, match="method must be one of espirit, lowres"):
        estimate_sensitivities(kspace, mask, method="walsh")
    with pytest.raises(ValueError, match="are for method='espirit'"):
        estimate_sensitivities(kspace, mask, method="lowres", crop=0.9)


def test_sense_with_espirit_maps_matches_sense_with_known_maps():
    # noise-free 4x: CG-SENSE with the ESPIRiT maps reaches the error of CG-SENSE with the true maps
    # (magnitudes; the ESPIRiT image carries the maps' phase convention), and the cheap maps do worse.
    from medrecon.solvers.variational import least_squares

    image, head, _ = _head((48, 40))
    phase = torch.polar(torch.ones_like(image), 0.8 * torch.linspace(-1, 1, 40, dtype=torch.float64)[None, :])
    kspace, maps = simulate_multicoil(image * phase, 8)
    mask = make_mask("equispaced", image.shape, 4, 0.2, seed=2)  # 8 ACS columns of 40
    y = (kspace * mask)[None, None]

    def error(s):
        x = least_squares(MultiCoilMRI(mask.double(), s), y, lam=0.0, n_iter=30, tol=1e-10)[0, 0].abs()
        return float((x - image)[head].norm() / image[head].norm())

    known, esp, low = (
        error(maps),
        error(estimate_sensitivities(y[0, 0], mask)),
        error(estimate_sensitivities(y[0, 0], mask, method="lowres")),
    )
    assert known < 0.02
    assert esp < known + 0.02
    assert low > esp
