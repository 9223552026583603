"""medrecon.metrics against fastmri.evaluate (the fastMRI leaderboard's own functions)."""

import numpy as np
import pytest
import torch
from fastmri import evaluate

from medrecon.metrics import nmse, per_slice, psnr, ssim


@pytest.fixture
def volume():
    r = np.random.default_rng(0)
    target = r.random((3, 20, 17)) * np.linspace(0.2, 1.0, 3)[:, None, None]  # slices of different maxima
    prediction = target + 0.05 * r.standard_normal(target.shape)
    return target, prediction


def test_volume_matches_fastmri(volume):
    t, p = volume
    assert psnr(t, p) == pytest.approx(float(evaluate.psnr(t, p)), rel=1e-12)
    assert ssim(t, p) == pytest.approx(float(evaluate.ssim(t, p)[0]), rel=1e-12)
    assert nmse(t, p) == pytest.approx(float(evaluate.nmse(t, p)), rel=1e-12)


def test_explicit_data_range_matches_fastmri(volume):
    t, p = volume
    assert psnr(t, p, data_range=2.0) == pytest.approx(float(evaluate.psnr(t, p, maxval=2.0)), rel=1e-12)
    assert ssim(t, p, data_range=2.0) == pytest.approx(float(evaluate.ssim(t, p, maxval=2.0)[0]), rel=1e-12)
    assert psnr(t, p, data_range=2.0) == pytest.approx(psnr(t, p) + 20 * np.log10(2.0 / t.max()))


def test_slice_uses_its_own_max_and_volume_uses_volume_max(volume):
    t, p = volume
    assert psnr(t[0], p[0]) == pytest.approx(float(evaluate.psnr(t[0], p[0])), rel=1e-12)
    assert ssim(t[0], p[0]) == pytest.approx(float(evaluate.ssim(t[:1], p[:1])[0]), rel=1e-12)
    # per-slice values share the volume's data range; their mean is the volume SSIM
    values = per_slice("ssim", t, p)
    assert values.shape == (3,)
    assert values.mean() == pytest.approx(ssim(t, p), rel=1e-12)
    assert per_slice("psnr", t, p)[0] == pytest.approx(psnr(t[0], p[0], data_range=t.max()))
    assert per_slice("nmse", t, p)[2] == pytest.approx(nmse(t[2], p[2]))


def test_torch_and_numpy_agree(volume):
    t, p = volume
    tt, pt = torch.from_numpy(t).float(), torch.from_numpy(p).float()
    assert psnr(tt, pt) == pytest.approx(psnr(t.astype(np.float32), p.astype(np.float32)), rel=1e-12)
    assert ssim(tt[:, None], pt[:, None]) == pytest.approx(ssim(tt, pt), rel=1e-12)  # (S, 1, H, W)
    assert isinstance(nmse(tt, pt), float)


def test_known_values():
    t = np.ones((8, 8))
    assert psnr(t, t * 0.9) == pytest.approx(20.0)
    assert psnr(t, t) == float("inf")
    assert ssim(t, t) == pytest.approx(1.0)
    assert nmse(t, np.zeros_like(t)) == pytest.approx(1.0)
    assert nmse(t, t) == 0.0


def test_worse_prediction_scores_worse(volume):
    t, p = volume
    worse = t + 3 * (p - t)
    assert psnr(t, worse) < psnr(t, p)
    assert ssim(t, worse) < ssim(t, p)
    assert nmse(t, worse) > nmse(t, p)


@pytest.mark.parametrize(
    "target, prediction, message",
    [
        (torch.ones(8, 8, dtype=torch.complex64), torch.ones(8, 8), "complex.*abs"),
        (np.ones((8, 8)), np.ones((8, 8)) * 1j, "complex"),
        (np.ones((8, 8)), np.ones((8, 9)), "same shape"),
        (np.ones(8), np.ones(8), r"slice \(H, W\)"),
        (np.zeros((8, 8)), np.zeros((8, 8)), "data range must be positive"),
        (np.ones((8, 8)), np.full((8, 8), np.nan), "NaN"),
    ],
)
def test_bad_input(target, prediction, message):
    with pytest.raises(ValueError, match=message):
        psnr(target, prediction)


def test_bad_input_ssim_nmse():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.ones((5, 5)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="all zeros"):
        nmse(np.zeros((4, 4)), np.ones((4, 4)))
