"""Generic latent solvers (medrecon.solvers.latent) on tiny problems with known answers."""

import torch

from medrecon.operators import Identity, MatrixOperator
from medrecon.solvers.latent import initial_image, range_solve, soft_range_solve, sum_sq


def _decoder(rng, latent=3, side=4):
    """A fixed injective smooth generator G(z) = tanh(M z + c), images (B, 1, side, side), float64."""
    m = torch.randn(side * side, latent, dtype=torch.float64, generator=rng) / latent**0.5
    c = 0.1 * torch.randn(side * side, dtype=torch.float64, generator=rng)

    def decode(z):
        return torch.tanh(z @ m.T + c).reshape(z.shape[0], 1, side, side)

    return decode


def test_range_recovers_latent_with_identity(rng):
    decode = _decoder(rng)
    z_true = 0.7 * torch.randn(2, 3, dtype=torch.float64, generator=rng)
    op = Identity((4, 4), dtype=torch.float64)
    y = decode(z_true)
    z0 = torch.zeros(1, 2, 3, dtype=torch.float64)
    res = range_solve(op, y, decode, z0, lam=0.0, n_iter=300, lr=5e-2)
    torch.testing.assert_close(res.z, z_true, atol=1e-3, rtol=0)
    torch.testing.assert_close(res.x, y, atol=1e-4, rtol=0)
    assert float(res.objective.max()) < 1e-7


def test_range_restarts_keep_the_best_start(rng):
    decode = _decoder(rng)
    z_true = torch.randn(2, 3, dtype=torch.float64, generator=rng)
    op = Identity((4, 4), dtype=torch.float64)
    y = decode(z_true)
    far = z_true + 5.0
    # restart 0 starts far away for measurement 0, restart 1 starts at the answer, and vice versa
    z0 = torch.stack([torch.stack([far[0], z_true[1]]), torch.stack([z_true[0], far[1]])])  # (R=2, B=2, 3)
    res = range_solve(op, y, decode, z0, lam=0.0, n_iter=1, lr=1e-12)
    torch.testing.assert_close(res.z, z_true, atol=1e-9, rtol=0)
    assert res.info["restarts"] == 2


def test_soft_x_step_matches_closed_form(rng):
    """One outer iteration without z-steps is the exact x-step (w A^T A + lam I)^-1 (w A^T y + lam G(z))."""
    decode = _decoder(rng)
    a = torch.randn(9, 16, dtype=torch.float64, generator=rng)  # underdetermined, like sparse-angle CT
    op = MatrixOperator(a, in_shape=(4, 4), out_shape=(9,))
    y = torch.randn(2, 1, 9, dtype=torch.float64, generator=rng)
    z0 = torch.randn(1, 2, 3, dtype=torch.float64, generator=rng)
    lam, w = 0.3, 0.5
    res = soft_range_solve(
        op, y, decode, z0, lam=lam, mu=0.1, n_iter=1, z_steps=0, cg_iter=200, cg_tol=1e-12, data_weight=w
    )
    g = decode(z0[0]).reshape(2, 16)
    rhs = w * y.reshape(2, 9) @ a + lam * g
    x_ref = torch.linalg.solve(w * a.T @ a + lam * torch.eye(16, dtype=torch.float64), rhs.T).T
    torch.testing.assert_close(res.x.reshape(2, 16), x_ref, atol=1e-9, rtol=1e-9)
    # the returned objective is the soft-range objective at (x, z0)
    obj = w * sum_sq(op(res.x) - y) + lam * (sum_sq(decode(z0[0]) - res.x) + 0.1 * sum_sq(z0[0]))
    torch.testing.assert_close(res.objective, obj)


def test_soft_range_reaches_a_range_image_and_stops(rng):
    decode = _decoder(rng)
    z_true = 0.5 * torch.randn(1, 3, dtype=torch.float64, generator=rng)
    op = Identity((4, 4), dtype=torch.float64)
    y = decode(z_true)
    res = soft_range_solve(
        op,
        y,
        decode,
        torch.zeros(1, 1, 3, dtype=torch.float64),
        lam=1.0,
        mu=1e-6,
        n_iter=400,
        z_steps=5,
        z_lr=2e-2,
        tol=1e-7,
    )
    torch.testing.assert_close(res.x, y, atol=2e-3, rtol=0)
    assert res.info["converged"] and res.info["n_iter"] < 400


def test_initial_image_is_the_magnitude_of_the_direct_reconstruction(rng):
    a = torch.randn(5, 9, dtype=torch.float64, generator=rng)
    op = MatrixOperator(a, in_shape=(3, 3), out_shape=(5,))
    y = torch.randn(1, 1, 5, dtype=torch.float64, generator=rng)
    torch.testing.assert_close(initial_image(op, y), op.adjoint(y) / op.norm_squared())  # the default direct
    op.direct = lambda v: 2 * op.adjoint(v)  # a CT-like operator with its own (FBP)
    torch.testing.assert_close(initial_image(op, y), 2 * op.adjoint(y))
    op2 = Identity((3, 3), complex=True, dtype=torch.float64)
    op2.direct = lambda v: -v  # an MRI-like operator: magnitude of its zero-filled image
    yc = torch.complex(y[..., :3], y[..., 1:4]).reshape(1, 1, 1, 3).expand(1, 1, 3, 3)
    torch.testing.assert_close(initial_image(op2, yc), yc.abs())
