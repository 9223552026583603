"""LoDoPaB-CT: file layout, geometry against ODL's documented one, Poisson/log noise, angle subsampling."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch

from medrecon.data import lodopab as L


def _phantom_xy(n: int = L.IMAGE_SIZE) -> np.ndarray:
    """An asymmetric phantom in LoDoPaB's [x, y] indexing (x = first axis), metres on [-0.13, 0.13]^2."""
    c = (np.arange(n) + 0.5) * L.DOMAIN_M / n - L.DOMAIN_M / 2
    x, y = np.meshgrid(c, c, indexing="ij")
    f = np.exp(-((x - 0.04) ** 2 / 0.002 + (y + 0.02) ** 2 / 0.0005))
    f += 0.5 * (((x + 0.05) ** 2 + (y - 0.06) ** 2) < 0.03**2)
    return f.astype(np.float32)


# ---------------------------------------------------------------------------------------------- geometry
def test_documented_constants():
    assert L.MU_MAX == pytest.approx(3071 * (20 - 0.02) / 1000 + 20)
    assert L.DETECTOR_SPACING_PX == pytest.approx(2 * 0.13 * math.sqrt(2) / 513 / (0.26 / 362))
    a = L.lodopab_angles()
    assert a.shape == (1000,) and a[0] == pytest.approx(math.pi / 2000) and a[-1] < math.pi
    np.testing.assert_allclose(np.diff(a), math.pi / 1000, rtol=1e-12)


def test_geometry_matches_odl_parallel_beam_geometry():
    """ODL's parallel_beam_geometry of the documented image space is LoDoPaB's geometry: same angles and
    detector; ODL's ray transform (metres, [x, y] arrays) agrees with ours after observation_to_operator."""
    odl = pytest.importorskip("odl")
    tomo = pytest.importorskip("odl.applications.tomo")
    space = odl.uniform_discr([-0.13, -0.13], [0.13, 0.13], (362, 362), dtype="float32")
    geo = tomo.parallel_beam_geometry(space, num_angles=1000)
    assert geo.detector.shape == (L.N_DETECTORS,)
    np.testing.assert_allclose(geo.angles, L.lodopab_angles(), atol=1e-12)
    assert geo.det_partition.cell_sides[0] / L.PIXEL_SIZE_M == pytest.approx(L.DETECTOR_SPACING_PX)
    step = 50  # 20 angles keep the test fast; every angle uses the same formula
    sub = tomo.Parallel2dGeometry(odl.nonuniform_partition(geo.angles[::step]), geo.det_partition)
    f = _phantom_xy()
    y_odl = torch.from_numpy(tomo.RayTransform(space, sub, impl="astra_cpu")(f).asarray().astype(np.float64))
    op = L.lodopab_operator(step, backend="astra", dtype=torch.float64)
    y_ours = op(torch.from_numpy(L.to_image(f).astype(np.float64))[None, None])[0, 0]

    def rel(a):
        return float((a - y_ours).norm() / y_ours.norm())

    # Both apply ASTRA's Joseph kernel; what is left is the linear resampling of the 0.998-px bins.
    assert rel(L.observation_to_operator(y_odl)) < 3e-3
    assert rel(L.observation_to_operator(y_odl, resample=False)) > 3e-3  # the bin width matters
    wrong = op(torch.from_numpy(f.astype(np.float64))[None, None])[0, 0]  # [x, y] taken as [row, col]
    assert float((L.observation_to_operator(y_odl) - wrong).norm() / y_ours.norm()) > 0.3


def test_orientation_round_trip():
    a = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(L.from_image(L.to_image(a)), a)
    img = L.to_image(a)  # row r, column c <- x = c, y = N-1-r
    assert img.shape == (4, 3) and img[0, 0] == a[0, 3] and img[-1, 0] == a[0, 0]


def test_subsample_angles_takes_every_kth_projection():
    sino = torch.arange(2 * 1000 * 513, dtype=torch.float32).reshape(2, 1000, 513)
    torch.testing.assert_close(L.subsample_angles(sino, 40), sino[:, ::40])
    assert np.array_equal(L.subsample_angles(sino.numpy(), n_angles=25), sino.numpy()[:, ::40])
    np.testing.assert_array_equal(L.lodopab_angles()[::40][:2], [math.pi / 2000, 81 * math.pi / 2000])


@pytest.mark.slow
def test_angle_subsampling_matches_the_subsampled_operator():
    x = torch.from_numpy(L.to_image(_phantom_xy()).astype(np.float64))[None, None]
    full = L.lodopab_operator(1, backend="astra", dtype=torch.float64)(x)  # (1, 1, 1000, 513)
    sparse_op = L.lodopab_operator(n_angles=40, backend="astra", dtype=torch.float64)
    torch.testing.assert_close(L.subsample_angles(full, n_angles=40), sparse_op(x), rtol=1e-6, atol=1e-6)
    assert L.subsample_angles(full.numpy(), 25).shape == (1, 1, 40, 513)
    with pytest.raises(L.LoDoPaBError, match="must divide 1000"):
        L.lodopab_operator(n_angles=30)
    with pytest.raises(L.LoDoPaBError, match="expected 1000 angles"):
        L.subsample_angles(full[..., :10, :], 2)


# ------------------------------------------------------------------------------------------------- noise
def test_poisson_log_noise_statistics_and_clipping():
    s = L.MU_MAX * L.PIXEL_SIZE_M
    # 30 px line integral: about 700 photons expected, where the delta method holds (a 30 cm body path is
    # ~100 px, ~10 photons: LoDoPaB is low dose).
    y = torch.full((200_000,), 30.0, dtype=torch.float64)
    before = torch.get_rng_state()
    n = L.poisson_log_noise(y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    var = math.exp(s * 30.0) / (L.PHOTONS_PER_BIN * s**2)  # delta method: Var(-log N / s)
    assert float(n.mean()) == pytest.approx(30.0, abs=5 * math.sqrt(var / y.numel()) + 0.05)
    assert float(n.var()) == pytest.approx(var, rel=0.05)
    again = L.poisson_log_noise(y[:10], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, n[:10])
    # An opaque ray: zero counts are replaced by 0.1 photons, as in LoDoPaB.
    opaque = L.poisson_log_noise(torch.full((5,), 1e5), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(opaque, torch.full((5,), -math.log(0.1 / 4096) / s))
    with pytest.raises(L.LoDoPaBError, match="must be > 0"):
        L.poisson_log_noise(y, photons=0)


# ------------------------------------------------------------------------------------------------- files
def _write_layout(root, split="test", n_second=2, gt=True, obs=True):
    """LoDoPaB layout: file 000 with 128 samples, file 001 with n_second; only a few rows hold data
    (chunked, so unwritten rows cost no disk); marker value 1000 * k + row."""
    for kind, shape, on in (("ground_truth", (362, 362), gt), ("observation", (1000, 513), obs)):
        if not on:
            continue
        for k, n in ((0, 128), (1, n_second)):
            with h5py.File(root / f"{kind}_{split}_{k:03d}.hdf5", "w") as f:
                d = f.create_dataset("data", shape=(n, *shape), dtype="float32", chunks=(1, *shape))
                for row in {0, n - 1}:
                    a = np.zeros(shape, np.float32)
                    a[0, :] = 1000 * k + row
                    a[1, 0] = -1.0  # marks [x=1, y=0] for the orientation check
                    d[row] = a


def test_dataset_reads_the_layout(tmp_path):
    _write_layout(tmp_path)
    ds = L.LoDoPaBDataset(tmp_path, "test")
    assert len(ds) == 130 and ds.has_ground_truth and ds.has_observation
    s = ds[128]  # first row of the second file
    assert s.name == "test_00128"
    assert s.observation.shape == (1000, 513) and s.observation[0, 5] == 1000.0
    assert s.ground_truth.shape == (362, 362)
    np.testing.assert_array_equal(
        s.ground_truth, L.to_image(np.asarray(h5py.File(tmp_path / "ground_truth_test_001.hdf5")["data"][0]))
    )
    assert s.ground_truth[-1, 1] == -1.0  # x = 1, y = 0 is row N-1, column 1
    assert ds[-1].observation[0, 0] == 1001.0 and ds[127].observation[0, 0] == 127.0
    with pytest.raises(IndexError, match="130 samples"):
        ds[130]
    with pytest.raises(L.LoDoPaBError, match="no ground_truth_validation"):
        L.LoDoPaBDataset(tmp_path, "validation")


def test_dataset_observation_only_and_h5_suffix(tmp_path):
    _write_layout(tmp_path, gt=False)
    for p in tmp_path.iterdir():
        p.rename(p.with_suffix(".h5"))
    ds = L.LoDoPaBDataset(tmp_path, "test")
    assert not ds.has_ground_truth and ds[0].ground_truth is None and ds[0].observation is not None


def test_dataset_rejects_malformed_layouts(tmp_path):
    _write_layout(tmp_path, n_second=3, gt=False)
    (tmp_path / "observation_test_000.hdf5").rename(tmp_path / "observation_test_002.hdf5")
    with pytest.raises(L.LoDoPaBError, match="without gaps"):
        L.LoDoPaBDataset(tmp_path, "test")
    bad = tmp_path / "bad"
    bad.mkdir()
    with h5py.File(bad / "ground_truth_train_000.hdf5", "w") as f:
        f.create_dataset("data", shape=(2, 64, 64), dtype="float32")
    with pytest.raises(L.LoDoPaBError, match=r"expected \(n, 362, 362\)"):
        L.LoDoPaBDataset(bad, "train")
    with pytest.raises(L.LoDoPaBError, match="split must be one of"):
        L.LoDoPaBDataset(bad, "dev")


def test_write_lodopab_files_round_trip(tmp_path):
    gt = np.random.default_rng(0).uniform(size=(3, 362, 362)).astype(np.float32)
    (path,) = L.write_lodopab_files(tmp_path, "validation", ground_truth=gt)
    assert path.name == "ground_truth_validation_000.hdf5"
    ds = L.LoDoPaBDataset(tmp_path, "validation")
    np.testing.assert_array_equal(ds[2].ground_truth, L.to_image(gt[2]))


# ------------------------------------------------------------------------- the noise model in configs
def test_poisson_log_noise_is_a_simulation_option(tmp_path):
    import json

    from medrecon.config import ConfigError
    from medrecon.experiment import load_experiment_config, run_experiment

    def psnr(operator: dict, out: str) -> float:
        cfg = {
            "name": "p",
            "image_size": 32,
            "images": [{"kind": "shepp_logan"}],
            "operator": {"modality": "ct", "n_angles": 20, "backend": "astra", **operator},
            "methods": [{"name": "fbp"}],
            "figure": False,
        }
        (row,) = run_experiment(
            load_experiment_config(cfg), tmp_path / out, progress=False, echo=lambda *a: None
        )
        return row["psnr"]

    clean = psnr({}, "clean")
    assert psnr({"noise": "poisson_log", "photons": 1e12}, "many") == pytest.approx(clean, abs=0.05)
    low = psnr({"noise": "poisson_log", "photons": 100}, "few")  # a few photons through the body
    assert low < clean - 3
    assert json.loads((tmp_path / "few" / "run.json").read_text())["noise_sigma"][0] > 0
    with pytest.raises(ConfigError, match="'operator.noise_level' is for noise: gaussian"):
        load_experiment_config(
            {
                "images": [{"kind": "shepp_logan"}],
                "methods": [{"name": "fbp"}],
                "operator": {"modality": "ct", "noise": "poisson_log", "noise_level": 0.02},
            }
        )
