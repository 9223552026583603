"""`medrecon reconstruct` on measured data: a fastMRI file's own k-space, LoDoPaB observations, a user's
sinogram or k-space with or without a ground truth (medrecon.experiment.measured)."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import torch

from medrecon.config import ConfigError
from medrecon.experiment import load_experiment_config, run_experiment

QUIET = {"progress": False, "echo": lambda *a, **k: None}


def _run(cfg: dict, out):
    return run_experiment(load_experiment_config(cfg), out, **QUIET)


def _csv(out) -> list[dict]:
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _fastmri_file(path, slices=2, shape=(40, 32), crop=(24, 24)):
    """A single-coil file whose target is made with fastMRI's own functions (ifft2c, complex_abs,
    center_crop): the convention a reconstruction of the file's k-space is compared with."""
    import fastmri
    from fastmri.data.transforms import center_crop

    from medrecon.data.fastmri import write_fastmri_h5

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, shape[0]), torch.linspace(-1, 1, shape[1]), indexing="ij")
    body = ((yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1).float()
    img = body * (1 + 0.3 * torch.rand(slices, *shape, generator=g)) * torch.exp(1j * 2 * xx)  # with a phase
    k = fastmri.fft2c(torch.view_as_real(img.to(torch.complex64)))  # (S, H, W, 2)
    target = center_crop(fastmri.complex_abs(fastmri.ifft2c(k)), crop).numpy() * 1e-4  # fastMRI-like scale
    write_fastmri_h5(path, torch.view_as_complex(k).numpy() * 1e-4, reconstruction=target)
    return target


def test_fastmri_full_sampling_reconstructs_the_files_target(tmp_path):
    target = _fastmri_file(tmp_path / "file1.h5")
    cfg = {
        "name": "m",
        "images": [],
        "dtype": "float64",
        "measured": {"kind": "fastmri", "path": str(tmp_path / "file1.h5")},
        "operator": {"modality": "mri", "mask": "equispaced", "acceleration": 1, "center_fraction": 1.0},
        "methods": [{"name": "zero-filled"}],
    }
    lines: list[str] = []
    rows = run_experiment(load_experiment_config(cfg), tmp_path / "out", progress=False, echo=lines.append)
    assert [r["image"] for r in rows] == ["file1_s0", "file1_s1"]
    # the status line names the file's own image size and no simulated noise (not the config's image_size)
    status = next(line for line in lines if line.startswith("m: 2 images"))
    assert "images 40x32," in status and "noise level unknown" in status and "mean|Ax|" not in status
    for r in rows:
        assert r["psnr"] > 100 and r["nmse"] < 1e-10 and r["ssim"] > 0.999999
    # The leaderboard file is the file's target on its own scale (fastMRI's conventions).
    with h5py.File(tmp_path / "out" / "recon" / "zero-filled" / "file1.h5") as f:
        np.testing.assert_allclose(f["reconstruction"][()], target, rtol=1e-4, atol=1e-6 * target.max())


def test_fastmri_undersampled_uses_the_files_kspace(tmp_path):
    import fastmri
    from fastmri.data.transforms import center_crop

    from medrecon.data.fastmri import FastMRISliceDataset

    _fastmri_file(tmp_path / "file1.h5", slices=2)
    spec = {"mask": "equispaced", "acceleration": 4, "center_fraction": 0.08}
    cfg = {
        "name": "m",
        "images": [],
        "dtype": "float64",
        "measured": {"kind": "fastmri", "path": str(tmp_path / "file1.h5"), "slices": [1]},
        "operator": {"modality": "mri", **spec},
        "methods": [{"name": "zero-filled"}],
    }
    (row,) = _run(cfg, tmp_path / "out")
    assert row["image"] == "file1_s1" and 10 < row["psnr"] < 40  # aliased: not the target
    # The file's own k-space times the slice's fixed validation mask, zero-filled as fastMRI does it.
    ds = FastMRISliceDataset(
        [tmp_path / "file1.h5"],
        mask_kind=spec["mask"],
        acceleration=4,
        center_fraction=0.08,
        fixed_masks=True,
    )
    with h5py.File(tmp_path / "file1.h5") as f:
        k = torch.from_numpy(f["kspace"][1])
    masked = torch.view_as_real(k * ds[1].mask)
    expected = center_crop(fastmri.complex_abs(fastmri.ifft2c(masked)), (24, 24)).numpy()
    with h5py.File(tmp_path / "out" / "recon" / "zero-filled" / "file1.h5") as f:
        np.testing.assert_allclose(f["reconstruction"][0], expected, rtol=1e-4, atol=1e-5 * expected.max())


@pytest.mark.slow
def test_lodopab_observation_reconstructed_as_measured(tmp_path):
    from medrecon.data import lodopab as L

    n = L.IMAGE_SIZE
    rr, cc = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    image = (((rr - 170) / 120.0) ** 2 + ((cc - 190) / 90.0) ** 2 < 1) * 0.5
    image = (image + 0.4 * (((rr - 150) / 30.0) ** 2 + ((cc - 200) / 20.0) ** 2 < 1)).astype(np.float32)
    step = 50
    op = L.lodopab_operator(step, backend="astra", dtype=torch.float64)
    y_px = op(torch.from_numpy(image.astype(np.float64))[None, None])[0, 0]  # (20, 513) on 1-px bins
    obs = np.zeros((1, 1000, 513), np.float32)  # the measured angles the run uses; the rest unused
    # back to LoDoPaB's layout: metres on 0.998-px bins (the inverse of observation_to_operator's map)
    i0, i1, w0, w1 = L._resample_weights(513, 1.0, 513, L.DETECTOR_SPACING_PX)
    y_m = (y_px[:, i0] * torch.from_numpy(w0) + y_px[:, i1] * torch.from_numpy(w1)) * L.PIXEL_SIZE_M
    obs[0, ::step] = y_m.numpy()
    L.write_lodopab_files(
        tmp_path / "lodopab", "test", ground_truth=L.from_image(image)[None], observation=obs
    )
    cfg = {
        "name": "l",
        "images": [],
        "measured": {"kind": "lodopab", "path": str(tmp_path / "lodopab"), "angle_step": step},
        "operator": {"modality": "ct", "backend": "astra"},
        "methods": [{"name": "fbp"}, {"name": "cgls", "options": {"n_iter": 15}}],
    }
    rows = {r["method"]: r for r in _run(cfg, tmp_path / "out")}
    assert rows["fbp"]["image"] == "lodopab_test_00000"
    assert rows["cgls"]["psnr"] > 22 and rows["fbp"]["psnr"] > 18  # 20 angles of a 362-px image
    rec = np.load(tmp_path / "out" / "recon" / "cgls" / "lodopab_test_00000.npy")
    wrong = np.corrcoef(rec.ravel(), L.from_image(image).ravel())[0, 1]  # LoDoPaB's [x, y] orientation
    assert np.corrcoef(rec.ravel(), image.ravel())[0, 1] > 0.9 > wrong


def _sinogram_problem(tmp_path, with_target: bool):
    from medrecon.data.phantoms import shepp_logan
    from medrecon.operators import ParallelBeamCT

    x = shepp_logan(32).to(torch.float64)
    op = ParallelBeamCT(32, 24, backend="astra", dtype=torch.float64)
    np.save(tmp_path / "my_sino.npy", op(x[None, None])[0, 0].numpy())
    cfg = {
        "name": "s",
        "images": [],
        "image_size": 32,
        "measured": {"kind": "sinogram", "path": str(tmp_path / "my_sino.npy")},
        "operator": {"modality": "ct", "geometry": "parallel", "n_angles": 24, "backend": "astra"},
        "methods": [{"name": "fbp"}, {"name": "cgls", "options": {"n_iter": 20}}],
    }
    if with_target:
        np.save(tmp_path / "truth.npy", x.numpy())
        cfg["measured"]["target"] = str(tmp_path / "truth.npy")
    return cfg


def test_own_sinogram_without_ground_truth_runs_with_empty_metrics(tmp_path):
    rows = _run(_sinogram_problem(tmp_path, False), tmp_path / "out")
    assert {r["method"] for r in rows} == {"fbp", "cgls"} and all(r["psnr"] is None for r in rows)
    assert all(r["psnr"] == "" and r["ssim"] == "" for r in _csv(tmp_path / "out"))
    assert (tmp_path / "out" / "figure.png").stat().st_size > 0
    assert np.load(tmp_path / "out" / "recon" / "cgls" / "my_sino.npy").shape == (32, 32)


def test_own_sinogram_with_target_scores_like_the_simulated_path(tmp_path):
    """Noise-free: reconstructing the user's sinogram equals simulating it from the target image (FBP and
    CGLS are linear, so the measured path's rescaling leaves their metrics unchanged)."""
    cfg = _sinogram_problem(tmp_path, True)
    measured = {r["method"]: r for r in _run(cfg, tmp_path / "out")}
    simulated_cfg = {**cfg, "images": [{"kind": "npy", "path": str(tmp_path / "truth.npy")}]}
    simulated_cfg.pop("measured")
    simulated = {r["method"]: r for r in _run(simulated_cfg, tmp_path / "out_sim")}
    for m in ("fbp", "cgls"):
        assert measured[m]["psnr"] == pytest.approx(simulated[m]["psnr"], abs=1e-3)
        assert measured[m]["ssim"] == pytest.approx(simulated[m]["ssim"], abs=1e-5)
    assert measured["cgls"]["psnr"] > measured["fbp"]["psnr"] > 10


def test_own_kspace_without_ground_truth(tmp_path):
    k = np.fft.fftshift(np.fft.fft2(np.random.default_rng(0).uniform(size=(24, 24)), norm="ortho"))
    np.save(tmp_path / "k.npy", k.astype(np.complex64))
    cfg = {
        "name": "k",
        "images": [],
        "measured": {"kind": "kspace", "path": str(tmp_path / "k.npy")},
        "operator": {"modality": "mri", "acceleration": 2, "center_fraction": 0.2},
        "methods": [{"name": "zero-filled"}],
    }
    (row,) = _run(cfg, tmp_path / "out")
    assert row["psnr"] is None and (tmp_path / "out" / "figure.png").exists()


def test_measured_config_errors(tmp_path):
    base = {
        "name": "e",
        "images": [],
        "image_size": 32,
        "measured": {"kind": "sinogram", "path": str(tmp_path / "s.npy")},
        "operator": {"modality": "ct", "n_angles": 10, "backend": "astra"},
        "methods": [{"name": "fbp"}],
    }
    np.save(tmp_path / "s.npy", np.zeros((12, 47)))
    with pytest.raises(ConfigError, match=r"has shape \(1, 12, 47\).*set operator.n_angles"):
        _run(base, tmp_path / "o1")
    with pytest.raises(ConfigError, match="either 'images'"):
        load_experiment_config({**base, "images": [{"kind": "shepp_logan"}]})
    with pytest.raises(ConfigError, match="needs a simulated noise level"):
        _run({**base, "methods": [{"name": "tv", "options": {"lam": "discrepancy"}}]}, tmp_path / "o2")
    with pytest.raises(ConfigError, match="needs operator.modality 'mri'"):
        _run({**base, "measured": {"kind": "kspace", "path": str(tmp_path / "s.npy")}}, tmp_path / "o3")
    with pytest.raises(ConfigError, match="config key 'measured'"):
        load_experiment_config({**base, "measured": {"kind": "sinogram", "path": "x.npy", "angle_step": 2}})
