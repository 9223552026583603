"""MRI operators: references (numpy.fft, fastmri.fft2c), coils, zero-filled, SENSE by CG.

Adjoint, autograd, linearity, dtype and deepcopy: tests/operator_zoo.py + test_operator_properties.py."""

import copy

import fastmri
import numpy as np
import pytest
import torch

from medrecon.operators import OperatorInputError
from medrecon.operators.coils import coil_maps, estimate_sensitivities, rss, simulate_multicoil
from medrecon.operators.masks import make_mask
from medrecon.operators.mri import MultiCoilMRI, SingleCoilMRI, fft2c, ifft2c

SIZES = [(7, 6), (9, 8), (5, 5), (6, 6)]


def _crandn(shape, rng):
    return torch.complex(
        torch.randn(shape, dtype=torch.float64, generator=rng),
        torch.randn(shape, dtype=torch.float64, generator=rng),
    )


def _mask(shape, rng):
    return (torch.rand(shape, generator=rng) > 0.4).double()


def _numpy_fft2c(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


@pytest.mark.parametrize("shape", SIZES)
def test_matches_numpy_and_fastmri(shape, rng):
    mask = _mask(shape, rng)
    op = SingleCoilMRI(mask)
    x = _crandn((2, 1, *shape), rng)
    y = op(x)
    np.testing.assert_allclose(y.numpy(), _numpy_fft2c(x.numpy()) * mask.numpy(), rtol=0, atol=1e-13)
    ref = torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x))) * mask
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-13)
    back = torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(y)))
    torch.testing.assert_close(op.adjoint(y), back, rtol=0, atol=1e-13)
    # the plain helpers too
    torch.testing.assert_close(fft2c(x), torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x))))
    torch.testing.assert_close(ifft2c(fft2c(x)), x)


@pytest.mark.parametrize("shape", [(7, 6), (8, 8)])
def test_multicoil_is_loop_of_single_coil(shape, rng):
    mask = _mask(shape, rng)
    maps = _crandn((4, *shape), rng)
    op, single = MultiCoilMRI(mask, maps), SingleCoilMRI(mask)
    x = _crandn((3, 1, *shape), rng)
    y = op(x)
    assert y.shape == (3, 1, 4, *shape)
    loop = torch.stack([single(maps[c] * x) for c in range(4)], dim=2)
    torch.testing.assert_close(y, loop, rtol=0, atol=1e-13)
    adj = sum(maps[c].conj() * single.adjoint(y[:, :, c]) for c in range(4))
    torch.testing.assert_close(op.adjoint(y), adj, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(7, 6), (9, 8)])
def test_full_mask_has_norm_one(shape, rng):
    assert SingleCoilMRI(torch.ones(shape)).norm() == pytest.approx(1.0, abs=1e-6)
    maps = coil_maps(shape, 5, dtype=torch.complex128)
    op = MultiCoilMRI(torch.ones(shape, dtype=torch.float64), maps)
    assert op.norm() == pytest.approx(1.0, abs=1e-9)
    x = _crandn((1, 1, *shape), rng)
    torch.testing.assert_close(op.normal(x), x)  # sum_c |S_c|^2 = 1 and F unitary: A^H A = I


def test_float64_move_gives_complex128_and_same_values(rng):
    maps = _crandn((3, 7, 6), rng).to(torch.complex64)
    op = MultiCoilMRI(_mask((6,), rng).float(), maps)
    assert op.in_dtype == torch.complex64 and op.out_dtype == torch.complex64
    x = _crandn((1, 1, 7, 6), rng)
    y32 = op(x.to(torch.complex64))
    op64 = copy.deepcopy(op).to(torch.float64)
    assert op64.in_dtype == torch.complex128
    torch.testing.assert_close(op64.sensitivity_maps, maps.to(torch.complex128))
    torch.testing.assert_close(op64(x).to(torch.complex64), y32, rtol=1e-5, atol=1e-5)


def test_buffer_change_rebuilds_fused_factors(rng):
    op = SingleCoilMRI(torch.ones(6, 5, dtype=torch.float64))
    x = _crandn((1, 1, 6, 5), rng)
    op(x)
    op.mask[:, 0] = 0.0  # in-place edit of the buffer
    assert op(x)[..., 0].abs().max() == 0


def test_zero_filled(rng):
    shape = (8, 7)
    mask = make_mask("equispaced", shape, 2, 0.3, seed=0).double()
    maps = _crandn((3, *shape), rng)
    op = MultiCoilMRI(mask, maps)
    y = op(_crandn((2, 1, *shape), rng))
    zf = op.zero_filled(y)
    assert zf.shape == (2, 1, *shape) and zf.is_complex() and bool((zf.imag == 0).all())
    ref = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(torch.view_as_real(y))), dim=2)
    torch.testing.assert_close(zf.real, ref)
    single = SingleCoilMRI(mask)
    ys = single(_crandn((1, 1, *shape), rng))
    torch.testing.assert_close(single.zero_filled(ys), single.adjoint(ys))


def test_simulated_multicoil_roundtrip(rng):
    image = torch.rand(9, 8, generator=rng, dtype=torch.float64)
    kspace, maps = simulate_multicoil(image, 4)
    assert kspace.shape == (4, 9, 8) and maps.shape == (4, 9, 8) and kspace.dtype == torch.complex128
    torch.testing.assert_close(rss(maps, dim=0), torch.ones(9, 8, dtype=torch.float64))
    op = MultiCoilMRI(torch.ones(9, 8, dtype=torch.float64), maps)
    torch.testing.assert_close(op(image.to(torch.complex128)[None, None])[0, 0], kspace)
    torch.testing.assert_close(op.zero_filled(kspace[None, None])[0, 0].real, image)  # |x| * rss(S) = x
    # noise: std per complex sample, drawn from the generator only
    state = torch.get_rng_state()
    noisy, _ = simulate_multicoil(
        image[None, None].expand(4, 1, 9, 8), 4, noise=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(state, torch.get_rng_state())
    assert float((noisy - kspace).abs().pow(2).mean().sqrt()) == pytest.approx(0.1, rel=0.15)


def test_estimated_sensitivities_reproduce_simulated():
    # metric: RMS over the support (image > 10% of max) of the per-pixel coil-vector error
    # ||S_est - S||_2 (relative, since sum_c |S_c|^2 = 1); ACS = 16 of 40 columns.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 40), indexing="ij")
    image = ((yy**2 + xx**2) < 0.7).float() * (1 + 0.3 * xx)
    kspace, maps = simulate_multicoil(image, 8)
    mask = make_mask("equispaced", (48, 40), 4, 0.4, seed=3)
    est = estimate_sensitivities(kspace * mask, mask)
    support = image > 0.1 * image.max()
    err = (est - maps).abs().pow(2).sum(0).sqrt()[support]
    assert float(err.pow(2).mean().sqrt()) < 0.06
    assert float(err.median()) < 0.03
    # batched input gives the same maps
    est_b = estimate_sensitivities((kspace * mask)[None, None], mask)
    torch.testing.assert_close(est_b[0, 0], est)


def test_sense_cg_recovers_fully_sampled_image(rng):
    from medrecon.solvers.variational import conjugate_gradient  # fails loudly if renamed

    shape = (9, 8)
    maps = coil_maps(shape, 4, dtype=torch.complex128)
    op = MultiCoilMRI(torch.ones(shape, dtype=torch.float64), maps)
    x = _crandn((2, 1, *shape), rng)
    b = op.adjoint(op(x))
    sol = conjugate_gradient(op.normal, b, n_iter=20, tol=1e-12)
    torch.testing.assert_close(sol, x, rtol=1e-8, atol=1e-8)


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match=r"\(coils, H, W\)"):
        MultiCoilMRI(torch.ones(4, 4), torch.ones(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="does not fit"):
        MultiCoilMRI(torch.ones(5), torch.ones(2, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="image_shape"):
        SingleCoilMRI(torch.ones(5))
    with pytest.raises(ValueError, match="real"):
        SingleCoilMRI(torch.ones(4, 4, dtype=torch.complex64))
    op = MultiCoilMRI(torch.ones(4, 4), torch.ones(2, 4, 4, dtype=torch.complex64))
    with pytest.raises(OperatorInputError, match=r"torch\.complex64"):  # a real input to a complex operator
        op(torch.ones(1, 1, 4, 4))
    with pytest.raises(OperatorInputError, match=r"shape \(B, C, 2, 4, 4\)"):
        op.adjoint(torch.ones(1, 1, 3, 4, 4, dtype=torch.complex64))
    with pytest.raises(OperatorInputError, match="shape"):
        op.zero_filled(torch.ones(1, 1, 4, 4, dtype=torch.complex64))


def test_direct_support_and_measurement_count(rng):
    shape = (7, 6)
    mask = _mask(shape[1:], rng)
    single = SingleCoilMRI(mask, image_shape=shape)
    multi = MultiCoilMRI(mask, _crandn((3, *shape), rng))
    for op in (single, multi):
        sampled = torch.broadcast_to(mask != 0, shape)
        assert torch.equal(op.measurement_support(), sampled.expand(op.out_shape))
        assert op.n_measurements() == 2 * int(sampled.sum()) * (op.out_shape[0] if op is multi else 1)
        y = op(_crandn((2, 1, *shape), rng))
        torch.testing.assert_close(op.direct(y), op.zero_filled(y))
