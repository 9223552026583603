"""The method registry (medrecon.reconstruct) and the classical methods: errors that list the valid
names, weight selection by the discrepancy principle and by a sweep, FBP / zero-filled dispatch."""
from __future__ import annotations

import math

import pytest
import torch

import medrecon
from medrecon.methods import available_methods, method_options
from medrecon.operators import Identity, MatrixOperator
from medrecon.solvers.classical import sweep_weight

F64 = torch.float64
CLASSICAL = ["fbp", "zero-filled", "cgls", "tikhonov", "tv", "sense"]


def _blur_problem(rng, n=12, sigma=0.05, batch=2):
    """A 1-D Gaussian blur (ill-conditioned) of piecewise-constant signals, with white noise of std sigma."""
    i = torch.arange(n, dtype=F64)
    a = torch.exp(-0.5 * ((i[:, None] - i[None, :]) / 1.5) ** 2)
    a = a / a.sum(1, keepdim=True)
    op = MatrixOperator(a, in_shape=(3, 4), out_shape=(n,))  # images (3, 4), flattened
    x = torch.zeros(batch, 1, 3, 4, dtype=F64)
    x[:, :, 1:, 1:3] = 1.0
    x[1] *= 0.5
    y = op(x) + sigma * torch.randn(batch, 1, n, dtype=F64, generator=rng)
    return op, x, y


def test_classical_methods_are_registered_with_callback():
    names = available_methods()
    for name in CLASSICAL:
        assert name in names
        assert "callback" in method_options(name)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown method 'art'; valid methods: fbp, zero-filled, cgls, tikhonov, tv, sense"):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "art")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"method 'tv' got unknown option\(s\) weight; valid options: lam, n_iter, tol"):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "tv", weight=0.1)


def test_fbp_needs_a_ct_operator_and_sense_a_complex_one():
    with pytest.raises(ValueError, match=r"method 'fbp' needs an operator with an .fbp method"):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "fbp")
    with pytest.raises(ValueError, match=r"'sense' needs a complex \(MRI\) operator"):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "sense")


def test_zero_filled_uses_the_operators_own_or_the_adjoint(rng):
    op = MatrixOperator(torch.randn(5, 4, dtype=F64, generator=rng))
    y = torch.randn(2, 1, 5, dtype=F64, generator=rng)
    torch.testing.assert_close(medrecon.reconstruct(op, y, "zero-filled"), op.adjoint(y))

    class WithZeroFilled(Identity):
        def zero_filled(self, y):
            return 2 * y

    assert float(medrecon.reconstruct(WithZeroFilled((2, 2)), torch.ones(1, 1, 2, 2), "zero-filled").sum()) == 8.0


def test_fbp_calls_op_fbp_with_its_options():
    calls = {}

    class FakeCT(Identity):
        def fbp(self, y, filter="ramp", frequency_scaling=1.0):
            calls.update(filter=filter, frequency_scaling=frequency_scaling)
            return y + 1

    seen = []
    x = medrecon.reconstruct(FakeCT((2, 2)), torch.zeros(1, 1, 2, 2), "fbp", filter="hann", frequency_scaling=0.5,
                             callback=lambda k, x, info: seen.append(k))
    assert calls == {"filter": "hann", "frequency_scaling": 0.5} and float(x.sum()) == 4.0 and seen == [0]


def test_tikhonov_weight_is_relative_to_the_operator_norm(rng):
    """Scaling A and y by s leaves the relative-weight solution unchanged."""
    op, _, y = _blur_problem(rng)
    x1 = medrecon.reconstruct(op, y, "tikhonov", lam=1e-2, n_iter=100, tol=1e-12)
    op10 = MatrixOperator(10.0 * op.matrix, in_shape=(3, 4), out_shape=(12,))
    x10 = medrecon.reconstruct(op10, 10.0 * y, "tikhonov", lam=1e-2, n_iter=100, tol=1e-12)
    torch.testing.assert_close(x1, x10, rtol=1e-8, atol=1e-10)
    a = op.matrix
    lam_abs = 1e-2 * op.norm_squared()
    ref = torch.linalg.solve(a.T @ a + lam_abs * torch.eye(12, dtype=F64), a.T @ y[0, 0])
    torch.testing.assert_close(x1[0, 0].flatten(), ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("method", ["tikhonov", "tv"])
def test_discrepancy_principle_lands_residual_at_noise_level(method, rng):
    sigma = 0.05
    op, _, y = _blur_problem(rng, sigma=sigma)
    m = 12  # the blur matrix has full range: m = number of measurements
    x = medrecon.reconstruct(op, y, method, lam="discrepancy", noise_std=sigma, n_iter=200,
                             **({"nonneg": False} if method == "tv" else {}))
    res = (op(x) - y).flatten(1).norm(dim=1)
    target = sigma * math.sqrt(m)
    assert torch.allclose(res, torch.full_like(res, target), rtol=0.03)  # bisection tolerance is 2 %


def test_discrepancy_with_per_image_noise_and_tau(rng):
    op, _, y = _blur_problem(rng, sigma=0.05)
    std = torch.tensor([0.05, 0.08], dtype=F64)
    x = medrecon.reconstruct(op, y, "tikhonov", lam="discrepancy", noise_std=std, tau=1.1, n_iter=200)
    res = (op(x) - y).flatten(1).norm(dim=1)
    torch.testing.assert_close(res, 1.1 * std * math.sqrt(12), rtol=0.03, atol=0.0)


def test_discrepancy_needs_noise_std(rng):
    op, _, y = _blur_problem(rng)
    with pytest.raises(ValueError, match="needs noise_std"):
        medrecon.reconstruct(op, y, "tikhonov", lam="discrepancy")
    with pytest.raises(ValueError, match="lam must be a number"):
        medrecon.reconstruct(op, y, "tikhonov", lam="auto")


def test_sweep_picks_the_best_weight_of_the_grid(rng):
    op, x_true, y = _blur_problem(rng)
    grid = [1e-6, 1e-3, 1e-1, 10.0]
    result = sweep_weight(op, y, "tikhonov", x_true, grid, n_iter=100, tol=1e-13)
    assert result.errors.shape == (4, 2)
    for b in range(2):
        best = int(result.errors[:, b].argmin())
        assert float(result.lam[b]) == grid[best]
        x_b = medrecon.reconstruct(op, y[b:b + 1], "tikhonov", lam=grid[best], n_iter=100, tol=1e-13)
        torch.testing.assert_close(result.x[b:b + 1], x_b)
    # the same through the method option, which returns the best reconstruction
    x = medrecon.reconstruct(op, y, "tikhonov", lam="sweep", x_true=x_true, grid=grid, n_iter=100, tol=1e-13)
    torch.testing.assert_close(x, result.x)
    with pytest.raises(ValueError, match="needs x_true"):
        medrecon.reconstruct(op, y, "tikhonov", lam="sweep")
