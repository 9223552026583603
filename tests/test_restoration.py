"""Restoration operators against numpy references; adjoint/autograd/dtype: test_operator_properties.py."""

import numpy as np
import pytest
import torch

from medrecon.operators.restoration import (
    BT601_LUMA,
    Downsampling,
    Grayscale,
    Inpainting,
    center_block_mask,
    downsampling_matrix,
    random_pixel_mask,
)

F64 = torch.float64


def test_box_downsampling_is_block_mean(rng):
    x = torch.rand(2, 1, 12, 8, dtype=F64, generator=rng)
    got = Downsampling((12, 8), 4, "box", dtype=F64)(x)
    ref = x.numpy().reshape(2, 1, 3, 4, 2, 4).mean(axis=(3, 5))  # numpy reshape-mean over 4x4 blocks
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("kernel", ["box", "gaussian", "lanczos"])
@pytest.mark.parametrize("n, factor", [(16, 4), (9, 2), (7, 3)])
def test_downsampling_keeps_constants_and_shape(kernel, n, factor):
    d = downsampling_matrix(n, factor, kernel)
    assert d.shape == (-(-n // factor), n)
    torch.testing.assert_close(d.sum(1), torch.ones(d.shape[0], dtype=F64))
    op = Downsampling((n, n + 1), factor, kernel, dtype=F64)
    y = op(torch.full((1, 1, n, n + 1), 0.7, dtype=F64))
    torch.testing.assert_close(y, torch.full_like(y, 0.7))


def test_lanczos_and_gaussian_are_symmetric_lowpass():
    for kernel in ("gaussian", "lanczos"):
        d = downsampling_matrix(32, 4, kernel)
        row = d[4]  # an interior row, centred at input coordinate 17.5
        torch.testing.assert_close(row[10:18], row[18:26].flip(0))  # symmetric about the centre
        assert int((row.abs() > 0).sum()) > 4  # wider than the box
        # a Nyquist-rate checkerboard is (almost) removed
        alt = torch.tensor([(-1.0) ** i for i in range(32)], dtype=F64)
        assert float((d[2:-2] @ alt).abs().max()) < 0.05
    lz = downsampling_matrix(32, 4, "lanczos")
    assert float(lz.min()) < 0  # Lanczos has negative lobes


def test_grayscale_matches_bt601(rng):
    x = torch.rand(2, 1, 3, 5, 4, dtype=F64, generator=rng)
    got = Grayscale((5, 4), dtype=F64)(x)
    ref = 0.299 * x[:, :, 0] + 0.587 * x[:, :, 1] + 0.114 * x[:, :, 2]
    torch.testing.assert_close(got, ref)
    assert sum(BT601_LUMA) == pytest.approx(1.0)


def test_inpainting_masks():
    m = center_block_mask((9, 8), (3, 2))
    assert m.shape == (9, 8) and int((m == 0).sum()) == 6
    assert m[3:6, 3:5].sum() == 0 and m[0].all()
    g = torch.Generator().manual_seed(0)
    r = random_pixel_mask((100, 100), 0.3, generator=g)
    assert abs(float(r.mean()) - 0.3) < 0.02
    again = random_pixel_mask((100, 100), 0.3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r, again)
    x = torch.rand(1, 1, 9, 8, dtype=F64)
    y = Inpainting(m.to(F64))(x)
    torch.testing.assert_close(y, x * m.to(F64))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kernel must be"):
        Downsampling((8, 8), 2, "bicubic")
    with pytest.raises(ValueError, match="does not fit"):
        center_block_mask((4, 4), 5)
    with pytest.raises(ValueError, match="keep_fraction"):
        random_pixel_mask((4, 4), 1.5)


def test_inpainting_support_is_the_mask():
    m = center_block_mask((7, 6), 2, dtype=F64)
    op = Inpainting(m)
    assert torch.equal(op.measurement_support(), m != 0) and op.n_measurements() == 7 * 6 - 4
    y = torch.rand(1, 1, 7, 6, dtype=F64)
    torch.testing.assert_close(op.direct(y), m * y)  # ||A|| = 1
