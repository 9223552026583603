"""Generic operators against dense references, the norm, dtype moves, autograd, bad input, direct/support.

The properties every operator shares (adjoint, linearity, deepcopy, ...): test_operator_properties.py."""

import pytest
import torch

from medrecon.operators import DiagonalOperator, Identity, MatrixOperator, OperatorInputError


def _dense(rng, m=7, n=5, complex=False):
    a = torch.randn(m, n, dtype=torch.float64, generator=rng)
    if complex:
        a = torch.complex(a, torch.randn(m, n, dtype=torch.float64, generator=rng))
    return a


def test_matches_dense_matmul(rng):
    a = _dense(rng, complex=True)
    op = MatrixOperator(a)
    x = torch.complex(
        torch.randn(3, 2, 5, dtype=torch.float64, generator=rng),
        torch.randn(3, 2, 5, dtype=torch.float64, generator=rng),
    )
    torch.testing.assert_close(op(x), torch.einsum("mn,bcn->bcm", a, x))
    torch.testing.assert_close(op.adjoint(op(x)), torch.einsum("mn,bcm->bcn", a.conj(), op(x)))


def test_norm_is_largest_singular_value(rng):
    a = _dense(rng, complex=True)
    op = MatrixOperator(a)
    assert op.norm(n_iter=1000, rtol=1e-12) == pytest.approx(float(torch.linalg.matrix_norm(a, 2)), rel=1e-6)
    assert op.norm_squared() == pytest.approx(op.norm() ** 2)
    assert (3.0 * op).norm() == pytest.approx(3.0 * op.norm(), rel=1e-4)


def test_norm_cache_is_per_dtype(rng):
    op = MatrixOperator(_dense(rng).float())
    n32 = op.norm()
    op = op.to(torch.float64)
    assert op._norm_cache == {}
    assert op.norm() == pytest.approx(n32, rel=1e-4)


def test_to_dtype_keeps_complex_values(rng):
    a = _dense(rng, complex=True).to(torch.complex64)
    op = MatrixOperator(a).to(torch.float64)
    assert op.in_dtype == torch.complex128
    torch.testing.assert_close(op.matrix, a.to(torch.complex128))


def test_second_order_autograd(rng):
    op = MatrixOperator(_dense(rng))
    x = torch.randn(1, 1, 5, dtype=torch.float64, generator=rng, requires_grad=True)
    loss = op(x).pow(2).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (hv,) = torch.autograd.grad(g.sum(), x)
    a = op.matrix
    torch.testing.assert_close(hv.flatten(), 2 * (a.T @ a).sum(1))


@pytest.mark.parametrize(
    "make_x, message",
    [
        (lambda: torch.zeros(2, 5, dtype=torch.float64), r"shape \(B, C, 5\)"),
        (lambda: torch.zeros(2, 1, 4, dtype=torch.float64), r"shape \(B, C, 5\)"),
        (lambda: torch.zeros(2, 1, 5, dtype=torch.float32), "dtype torch.float64"),
        (lambda: torch.full((2, 1, 5), float("nan"), dtype=torch.float64), "NaN or inf"),
        (lambda: [1.0, 2.0], "torch.Tensor"),
    ],
)
def test_bad_input_is_named(make_x, message, rng):
    op = MatrixOperator(_dense(rng))
    with pytest.raises(OperatorInputError, match=message):
        op(make_x())


def test_bad_composition(rng):
    with pytest.raises(ValueError, match="cannot compose"):
        MatrixOperator(_dense(rng, 4, 6)) @ MatrixOperator(_dense(rng, 7, 5))


def test_direct_default_is_scaled_adjoint(rng):
    a = _dense(rng)
    op = MatrixOperator(a)
    y = torch.randn(2, 1, 7, dtype=torch.float64, generator=rng)
    sigma = float(torch.linalg.matrix_norm(a, 2))
    torch.testing.assert_close(op.direct(y), op.adjoint(y) / sigma**2, rtol=1e-6, atol=1e-12)
    # A^H y / ||A||^2 is the exact inverse of A = s I
    scaled = 3.0 * Identity((4,), dtype=torch.float64)
    torch.testing.assert_close(
        scaled.direct(torch.ones(1, 1, 4, dtype=torch.float64)),
        torch.full((1, 1, 4), 1 / 3, dtype=torch.float64),
    )


def test_measurement_support_is_the_range_of_the_operator(rng):
    d = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1e-9, 3.0]], dtype=torch.float64)
    op = DiagonalOperator(d)
    # |A A^H 1| = d^2: 1e-18 is below the relative threshold 1e-6 of max 9
    assert torch.equal(op.measurement_support(), torch.tensor([[True, False, True], [False, False, True]]))
    assert op.n_measurements() == 3
    dc = DiagonalOperator(d.to(torch.complex128))
    assert dc.n_measurements() == 6  # complex entries carry two real values
    assert Identity((3, 4)).n_measurements() == 12
    zero = MatrixOperator(torch.zeros(2, 3, dtype=torch.float64))
    assert zero.n_measurements() == 0 and zero.measurement_support().shape == (2,)
