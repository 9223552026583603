"""ESPIRiT: against sigpy's EspiritCalib (an independent implementation) and against known maps."""

import math

import pytest
import torch

from medrecon.operators.coils import coil_maps, simulate_multicoil
from medrecon.operators.espirit import calibration_region, espirit_kernels, espirit_maps
from medrecon.operators.masks import make_mask


def _grid(shape):
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, shape[0], dtype=torch.float64),
        torch.linspace(-1, 1, shape[1], dtype=torch.float64),
        indexing="ij",
    )
    return yy, xx


def _object(shape, *, phase: bool):
    """An ellipse with texture and zero background; with ``phase``, a smooth non-trivial phase."""
    yy, xx = _grid(shape)
    mag = (((yy / 0.9) ** 2 + (xx / 0.7) ** 2) < 0.8).double() * (1 + 0.5 * torch.cos(3 * xx))
    ph = 1.0 * yy + 0.5 * xx**2 if phase else torch.zeros_like(yy)
    return mag, torch.polar(mag, ph)


def _match(a, b):
    """|<a, b>| per pixel over the coil axis: 1 when both are unit vectors equal up to a phase."""
    return torch.linalg.vecdot(a, b, dim=0).abs()


@pytest.mark.parametrize("shape", [(32, 32), (33, 30)])
def test_matches_sigpy_espiritcalib(shape):
    # sigpy 0.1.27: square calib block (24 x 24 at the centre), kernel 6, thresh 0.02, crop 0.95, 100
    # power iterations from ones, phase of coil 0 removed. Same data, same parameters.
    mr = pytest.importorskip("sigpy.mri")
    _, image = _object(shape, phase=True)
    kspace, _ = simulate_multicoil(image, 8, noise=0.01, generator=torch.Generator().manual_seed(0))
    ref, ref_eig = mr.app.EspiritCalib(
        kspace.numpy(), calib_width=24, show_pbar=False, output_eigenvalue=True
    ).run()
    ref, ref_eig = torch.from_numpy(ref), torch.from_numpy(ref_eig).reshape(shape)
    exact, eig = espirit_maps(
        kspace, calib_size=(24, 24), phase="first-coil", n_power_iter=None, return_eigenvalues=True
    )
    torch.testing.assert_close(eig, ref_eig, rtol=0, atol=1e-9)
    torch.testing.assert_close(exact, ref, rtol=0, atol=1e-9)
    assert 0.2 < float((ref_eig > 0.95).double().mean()) < 0.9  # the crop is exercised both ways
    # the default (10 power iterations, trace-bounded skipping) agrees inside the crop
    fast, eig_fast = espirit_maps(kspace, calib_size=(24, 24), phase="first-coil", return_eigenvalues=True)
    inside = ref_eig > 0.95
    assert torch.equal(eig_fast > 0.95, inside)
    assert float((fast - ref)[:, inside].abs().max()) < 1e-4
    assert float((eig_fast - ref_eig)[inside].abs().max()) < 1e-6


def test_recovers_known_maps_up_to_phase():
    # first principles: noise-free k-space of S_c x, with x complex; ESPIRiT maps are S up to a
    # per-pixel phase (exactly: S is the eigenvector of eigenvalue 1 of G(r)), zero where there is no object.
    shape = (40, 36)
    mag, image = _object(shape, phase=True)
    kspace, maps = simulate_multicoil(image, 6)
    mask = make_mask("equispaced", shape, 4, 0.35, seed=0)  # 12 ACS columns
    est, eig = espirit_maps(kspace * mask, mask, return_eigenvalues=True)
    inside = mag > 0
    assert float(_match(est, maps)[inside].min()) > 0.999
    assert float(eig[inside].min()) > 0.97  # above the crop (0.95) everywhere on the object
    yy, xx = _grid(shape)
    far = ((yy / 0.9) ** 2 + (xx / 0.7) ** 2) > 1.6  # well outside the object
    assert float(est[:, far].abs().max()) == 0.0
    # phase="image": the coil combination of the low-resolution image is real and positive, so with a
    # smooth image phase the SENSE combination sum_c conj(S_c) y_c / |S|^2 has the phase of x removed
    combined = torch.linalg.vecdot(est, kspace.new_zeros(()) + _coil_images(kspace), dim=0)[inside]
    assert float(combined.angle().abs().max()) < 0.3  # residual: phase finer than the 12 ACS columns


def _coil_images(kspace):
    from medrecon.operators.mri import ifft2c

    return ifft2c(kspace)


def test_real_positive_image_gives_the_maps_themselves():
    shape = (32, 32)
    mag, _ = _object(shape, phase=False)
    kspace, maps = simulate_multicoil(mag, 8)
    est = espirit_maps(kspace, num_low_frequencies=16)
    inside = mag > 0
    # the phase reference is the low-resolution image (16 columns): its phase departs from 0 at the
    # object's edge only, where the blurred image mixes coils of different phase
    err = (est - maps).abs().pow(2).sum(0).sqrt()[inside]
    assert float(err.pow(2).mean().sqrt()) < 0.06
    assert float(err.median()) < 0.01
    assert float(_match(est, maps)[inside].min()) > 0.999


def test_kernels_span_the_calibration_blocks():
    # every k x k block of noise-free calibration data lies in the kept subspace (null space: residual 0)
    kspace, _ = simulate_multicoil(_object((32, 32), phase=True)[1], 4)
    calib = calibration_region(kspace, num_low_frequencies=16)
    assert tuple(calib.shape) == (4, 24, 16)
    v = espirit_kernels(calib, 6, 0.001).reshape(-1, 4 * 36)  # (n, coils k^2), orthonormal rows
    torch.testing.assert_close(v.conj() @ v.mT, torch.eye(v.shape[0], dtype=v.dtype), rtol=0, atol=1e-10)
    blocks = calib.unfold(1, 6, 1).unfold(2, 6, 1).permute(1, 2, 0, 3, 4).reshape(-1, 4 * 36).to(v.dtype)
    residual = blocks - (blocks @ v.conj().mT) @ v
    assert float(residual.norm() / blocks.norm()) < 1e-3
    assert v.shape[0] < 4 * 36  # a non-trivial null space


def test_batched_dtype_and_no_global_rng():
    kspace, _ = simulate_multicoil(_object((24, 20), phase=True)[1].to(torch.complex64), 4)
    assert kspace.dtype == torch.complex64
    state = torch.get_rng_state()
    single = espirit_maps(kspace, num_low_frequencies=10)
    batch = espirit_maps(torch.stack([kspace, 2 * kspace])[:, None], num_low_frequencies=10)
    assert torch.equal(state, torch.get_rng_state())
    assert single.dtype == torch.complex64 and batch.shape == (2, 1, 4, 24, 20)
    torch.testing.assert_close(batch[0, 0], single)
    torch.testing.assert_close(batch[1, 0], single, rtol=0, atol=1e-5)  # scale-invariant


def test_full_size_geometry_coil_maps_around_the_head():
    # fastMRI geometry: 640 x 368 grid, head in the centre 320 x 320; a coarse copy (1/8) of it
    maps = coil_maps((80, 46), 15, field_of_view=(40, 40), dtype=torch.complex128)
    torch.testing.assert_close(maps.abs().pow(2).sum(0), torch.ones(80, 46, dtype=torch.float64))
    default = coil_maps((40, 40), 15, dtype=torch.complex128)
    torch.testing.assert_close(maps[:, 20:60, 3:43], default)  # same coils, larger canvas


def test_bad_inputs():
    kspace, _ = simulate_multicoil(torch.ones(16, 16), 2)
    with pytest.raises(ValueError, match=r"complex \(coils, H, W\)"):
        espirit_maps(kspace.real, num_low_frequencies=8)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        espirit_maps(kspace, calib_size=(16, 4), kernel_size=6)
    with pytest.raises(ValueError, match="exactly one of"):
        espirit_maps(kspace)
    with pytest.raises(ValueError, match="crop must be in"):
        espirit_maps(kspace, num_low_frequencies=8, crop=1.5)
    with pytest.raises(ValueError, match="phase must be"):
        espirit_maps(kspace, num_low_frequencies=8, phase="coil")
    with pytest.raises(ValueError, match="all zeros"):
        espirit_maps(torch.zeros_like(kspace), num_low_frequencies=8)
    mask = make_mask("equispaced", (16, 16), 2, 0.5, seed=0)  # 8 ACS columns
    with pytest.raises(ValueError, match="wider than the mask"):
        espirit_maps(kspace * mask, mask, calib_size=(8, 12))
    assert math.isfinite(float(espirit_maps(kspace * mask, mask).abs().sum()))
