"""fastMRI-geometry multi-coil simulation from magnitude images: smooth seeded phase, the file layout
that fastMRI's own SliceDataset reads."""

import math

import numpy as np
import pytest
import torch

from medrecon.data.mri_sim import (
    crop_readout,
    simulate_fastmri_multicoil,
    smooth_random_phase,
    write_fastmri_multicoil_volume,
)
from medrecon.operators.coils import coil_maps
from medrecon.operators.mri import ifft2c


def test_smooth_random_phase_is_seeded_band_limited_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = smooth_random_phase((24, 20), generator=torch.Generator().manual_seed(3))
    b = smooth_random_phase((24, 20), generator=torch.Generator().manual_seed(3))
    c = smooth_random_phase((24, 20), generator=torch.Generator().manual_seed(4))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # amplitude: the largest deviation from the mean is exactly pi (the default)
    assert float((a - a.mean()).abs().max()) == pytest.approx(math.pi, rel=1e-9)
    # band-limited: the DFT of phi - mean has no energy above 2 cycles per image along either axis
    spec = torch.fft.fftshift(torch.fft.fft2(a - a.mean()), dim=(-2, -1)).abs()
    ky = (torch.arange(24) - 12).abs()[:, None]
    kx = (torch.arange(20) - 10).abs()[None, :]
    outside = (ky > 2) | (kx > 2)
    assert float(spec[outside].max()) < 1e-9 * float(spec.max())
    with pytest.raises(ValueError, match="max_frequency"):
        smooth_random_phase((4, 4), max_frequency=0)


def _images(n=2, size=(16, 16)):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0]), torch.linspace(-1, 1, size[1]), indexing="ij")
    disk = ((yy**2 + xx**2) < 0.8).float()
    return torch.stack([disk * (0.5 + 0.5 * (i + 1) / n) * (1 + 0.2 * xx) for i in range(n)])  # (n, h, w)


def test_simulation_geometry_phase_and_coils():
    images = _images()
    g = torch.Generator().manual_seed(0)
    kspace, maps, x = simulate_fastmri_multicoil(
        images, kspace_shape=(32, 22), n_coils=4, noise=0.0, generator=g
    )
    assert kspace.shape == (2, 4, 32, 22) and kspace.dtype == torch.complex64 and maps.shape == (4, 32, 22)
    torch.testing.assert_close(maps, coil_maps((32, 22), 4, field_of_view=(16, 16)))
    torch.testing.assert_close(x.abs(), images, rtol=0, atol=1e-6)  # magnitude kept, phase added
    assert float(x.angle()[images > 0].std()) > 0.1
    coil_images = ifft2c(kspace.to(torch.complex128))  # (2, 4, 32, 22)
    top, left = (32 - 16) // 2, (22 - 16) // 2  # fastmri.data.transforms.center_crop's corner
    inner = coil_images[..., top : top + 16, left : left + 16]
    torch.testing.assert_close(
        inner.to(torch.complex64),
        x[:, None] * maps[None, :, top : top + 16, left : left + 16],
        rtol=0,
        atol=1e-5,
    )
    outer = coil_images.clone()
    outer[..., top : top + 16, left : left + 16] = 0
    assert float(outer.abs().max()) < 1e-5  # the oversampled margin is empty
    # the same seed gives the same volume; noise is drawn from the generator only
    state = torch.get_rng_state()
    k1, _, _ = simulate_fastmri_multicoil(
        images, kspace_shape=(32, 22), n_coils=4, noise=0.01, generator=torch.Generator().manual_seed(1)
    )
    k2, _, _ = simulate_fastmri_multicoil(
        images, kspace_shape=(32, 22), n_coils=4, noise=0.01, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(k1, k2) and torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="real"):
        simulate_fastmri_multicoil(images.to(torch.complex64))


def test_written_volume_is_read_by_fastmri_slicedataset(tmp_path):
    from fastmri.data import SliceDataset

    images = _images(3)
    path = write_fastmri_multicoil_volume(
        tmp_path / "vol" / "subject.h5",
        images,
        patient_id="subject",
        recon_size=(16, 16),
        kspace_shape=(32, 22),
        n_coils=4,
        noise=0.01,
        generator=torch.Generator().manual_seed(0),
    )
    ds = SliceDataset(path.parent, challenge="multicoil", transform=None, use_dataset_cache=False)
    assert len(ds) == 3
    kspace, mask, target, attrs, fname, slice_idx = ds[1]
    assert kspace.shape == (4, 32, 22) and kspace.dtype == np.complex64 and mask is None
    assert target.shape == (16, 16) and fname == "subject.h5" and slice_idx == 1
    assert attrs["acquisition"] == "AXT1" and attrs["patient_id"] == "subject"
    assert attrs["padding_left"] == 0 and attrs["padding_right"] == 22
    assert tuple(attrs["encoding_size"]) == (32, 22, 1) and tuple(attrs["recon_size"]) == (16, 16, 1)
    # the target is fastMRI's: RSS of the fully sampled coil images, centre-cropped; max/norm of the volume
    rss = np.sqrt((np.abs(ifft2c(torch.from_numpy(kspace)).numpy()) ** 2).sum(0))
    np.testing.assert_allclose(target, rss[8:24, 3:19], rtol=1e-5, atol=1e-6)
    volume = np.stack([ds[i][2] for i in range(3)])
    assert attrs["max"] == pytest.approx(float(volume.max()), rel=1e-6)
    assert attrs["norm"] == pytest.approx(float(np.linalg.norm(volume)), rel=1e-5)
    # magnitudes of the source survive up to the noise floor (RSS of 4 coils of std 0.01: about 0.02)
    assert float(np.abs(target - images[1].numpy()).mean()) < 0.03
    with pytest.raises(ValueError, match="recon size"):
        write_fastmri_multicoil_volume(tmp_path / "x.h5", images, patient_id="x", recon_size=(8, 8))


@pytest.mark.parametrize("shape,rows", [((32, 22), 16), ((33, 21), 15), ((30, 20), 15)])
def test_crop_readout_keeps_the_centre_of_the_image(shape, rows, rng):
    from fastmri.data.transforms import center_crop

    k = torch.complex(
        torch.randn((3, *shape), generator=rng, dtype=torch.float64),
        torch.randn((3, *shape), generator=rng, dtype=torch.float64),
    )
    cropped = crop_readout(k, rows)
    assert cropped.shape == (3, rows, shape[1])
    torch.testing.assert_close(ifft2c(cropped), center_crop(ifft2c(k), (rows, shape[1])))
    mask = (torch.arange(shape[1]) % 3 == 0).double()
    torch.testing.assert_close(crop_readout(k * mask, rows), cropped * mask)  # column masks commute
    with pytest.raises(ValueError, match="rows must be in"):
        crop_readout(k, shape[0] + 1)


@pytest.mark.slow  # about 8 s: the whole CLI run (ESPIRiT, SENSE, TV, figure, leaderboard files)
def test_cli_path_on_a_tiny_simulated_volume(tmp_path):
    """The full-size path at toy size: a volume made by the writer, reconstructed from its own k-space by
    `medrecon reconstruct` (ESPIRiT maps, readout oversampling removed), metrics_volumes.csv reproduced by
    fastmri.evaluate on the leaderboard files."""
    import csv

    import h5py
    from fastmri.data.transforms import center_crop
    from fastmri.evaluate import nmse, psnr

    from medrecon.config import ConfigError
    from medrecon.experiment import load_experiment_config, run_experiment

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 24), indexing="ij")
    head = ((yy / 0.9) ** 2 + (xx / 0.8) ** 2 < 1).float()
    images = torch.stack([head * (0.6 + 0.4 * torch.cos(3 * xx + i)) for i in range(2)])  # (2, 24, 24)
    write_fastmri_multicoil_volume(
        tmp_path / "data" / "vol.h5",
        images,
        patient_id="toy",
        recon_size=(24, 24),
        kspace_shape=(48, 28),
        n_coils=6,
        noise=0.002,
        generator=torch.Generator().manual_seed(0),
    )
    cfg = {
        "name": "toy",
        "images": [],
        "measured": {"kind": "fastmri", "path": str(tmp_path / "data" / "vol.h5"), "readout_crop": 24},
        "operator": {"modality": "mri", "mask": "equispaced", "acceleration": 2, "center_fraction": 0.5},
        "methods": [
            {"name": "zero-filled"},
            {"name": "sense", "options": {"n_iter": 10}},
            {"name": "tv", "options": {"lam": 1e-3, "n_iter": 30, "nonneg": False}},
        ],
    }
    rows = run_experiment(
        load_experiment_config(cfg), tmp_path / "out", progress=False, echo=lambda *a, **k: None
    )
    psnrs = {(r["image"], r["method"]): r["psnr"] for r in rows}
    for s in ("vol_s0", "vol_s1"):
        assert psnrs[(s, "sense")] > psnrs[(s, "zero-filled")] + 3  # ESPIRiT maps do parallel imaging
    with open(tmp_path / "out" / "metrics_volumes.csv") as f:
        volumes = {r["method"]: r for r in csv.DictReader(f)}
    with h5py.File(tmp_path / "data" / "vol.h5") as f:
        target = f["reconstruction_rss"][()]
    for method in ("zero-filled", "sense", "tv"):
        with h5py.File(tmp_path / "out" / "recon" / method / "vol.h5") as f:
            rec = f["reconstruction"][()]
        assert rec.shape == (2, 24, 24)
        rec = center_crop(torch.from_numpy(rec), (24, 24)).numpy()
        assert float(volumes[method]["psnr"]) == pytest.approx(psnr(target, rec), abs=1e-3)
        assert float(volumes[method]["nmse"]) == pytest.approx(nmse(target, rec), rel=1e-3)
    with pytest.raises(ConfigError, match="measured"):
        load_experiment_config({**cfg, "measured": {**cfg["measured"], "readout_crop": 0}})
