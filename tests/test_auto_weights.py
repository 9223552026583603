"""Weights of the learned priors from the noise level (medrecon.solvers.auto_weights): the MAP rules'
closed forms, the discrepancy principle hitting ``tau * sigma * sqrt(m)`` on identity problems (a
closed-form Tikhonov denoiser, then vae-soft and flow MAP with tiny random models), the range methods'
fallback when G cannot reach the noise level, and bad inputs."""

import math
import warnings

import pytest
import torch

from medrecon.methods import reconstruct, validate_options
from medrecon.operators import DiagonalOperator, Identity
from medrecon.priors.flow import MultiScaleFlow
from medrecon.priors.gan import DCGANPrior
from medrecon.priors.vae import ConvVAE
from medrecon.solvers.auto_weights import noise_rule_weight, resolve_learned_weight

LEARNED = ("vae-range", "vae-soft", "flow", "csgm", "gan-d")


def _residual(op, x, y):
    return float(torch.linalg.vector_norm((op(x) - y).flatten()))


def _tiny_vae(size=8, seed=0):
    torch.manual_seed(seed)
    return ConvVAE(image_size=size, latent_dim=2, channels=(4,), hidden=8).eval()


def _noisy(size=8, sigma=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, size, size, generator=g) * 0.6 + 0.2
    return x, x + sigma * torch.randn(x.shape, generator=g)


def test_noise_rules_closed_form():
    """lam = c sigma^2 / ||A||^2 per method; ||A|| = 2 for a diagonal of 2s, D pixels for flow MAP."""
    op = DiagonalOperator(torch.full((4, 4), 2.0, dtype=torch.float64))
    s2 = 0.1**2
    assert noise_rule_weight("vae-range", op, 0.1).item() == pytest.approx(s2 / 4, rel=1e-3)
    assert noise_rule_weight("csgm", op, 0.1).item() == pytest.approx(s2 / 4, rel=1e-3)
    assert noise_rule_weight("gan-d", op, 0.1).item() == pytest.approx(2 * s2 / 4, rel=1e-3)
    assert noise_rule_weight("flow-latent", op, 0.1).item() == pytest.approx(s2 / 4, rel=1e-3)
    flow_map = noise_rule_weight("flow-map", op, 0.1, n_pixels=16, calibrated=False).item()
    assert flow_map == pytest.approx(2 * 16 * s2 / 4, rel=1e-3)
    soft = noise_rule_weight("vae-soft", op, 0.1, mu=0.01, calibrated=False).item()
    assert soft == pytest.approx(s2 / 4 / 0.01, rel=1e-3)
    # lam="noise" uses the calibrated weight: 10x the MAP weight for vae-soft and flow MAP only
    assert noise_rule_weight("vae-soft", op, 0.1, mu=0.01).item() == pytest.approx(10 * soft, rel=1e-6)
    flow_map_noise = noise_rule_weight("flow-map", op, 0.1, n_pixels=16).item()
    assert flow_map_noise == pytest.approx(10 * flow_map, rel=1e-6)
    per = noise_rule_weight("csgm", op, torch.tensor([0.1, 0.2]), batch=2)
    assert per.tolist() == pytest.approx([s2 / 4, 4 * s2 / 4], rel=1e-3)


def test_discrepancy_on_a_closed_form_denoiser():
    """Identity, x_lam = y / (1 + lam): residual lam/(1+lam) ||y|| = tau sigma sqrt(m), so lam is known."""
    op = Identity((6, 6), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64) + 0.5
    sigma, tau = torch.tensor([0.05, 0.1]), 1.0

    def run(sel, lam):
        return y[sel] / (1.0 + lam)

    x = resolve_learned_weight("discrepancy", "test", "csgm", run, op, y, noise_std=sigma, tau=tau)
    target = tau * sigma * math.sqrt(36)
    for i in range(2):
        res = _residual(op, x[i : i + 1], y[i : i + 1])
        assert res == pytest.approx(float(target[i]), rel=0.05)
        lam_exact = float(target[i]) / (float(y[i].norm()) - float(target[i]))
        assert float((y[i] / x[i]).mean()) - 1 == pytest.approx(lam_exact, rel=0.1)


def test_vae_soft_discrepancy_hits_the_noise_level():
    """vae-soft with a tiny random decoder, A = I: the residual lands at sigma sqrt(m) (within 6 %)."""
    op = Identity((8, 8))
    _x, y = _noisy()
    sigma = 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the search must reach the target
        xr = reconstruct(
            op, y, "vae-soft", weights=_tiny_vae(), lam="discrepancy", noise_std=sigma, n_iter=20, z_steps=2
        )
    assert _residual(op, xr, y) == pytest.approx(sigma * 8, rel=0.06)


def test_flow_map_discrepancy_hits_the_noise_level():
    torch.manual_seed(0)
    flow = MultiScaleFlow(image_size=8, n_levels=2, hidden=4).eval()
    op = Identity((8, 8))
    _x, y = _noisy(sigma=0.04)
    xr = reconstruct(
        op,
        y,
        "flow",
        weights=flow,
        mode="map",
        lam="discrepancy",
        noise_std=0.04,
        n_iter=5,
        optimizer="lbfgs",
    )
    assert _residual(op, xr, y) == pytest.approx(0.04 * 8, rel=0.06)


def test_range_method_falls_back_to_the_best_fit():
    """A random 2-D range cannot fit an 8x8 image to 1 % noise: discrepancy warns and returns the
    smallest weight's solution, the best data fit, no worse than the MAP weight's fit."""
    op = Identity((8, 8))
    _x, y = _noisy(sigma=0.01)
    opts = {
        "weights": _tiny_vae(),
        "n_iter": 60,
        "restarts": 1,
        "generator": torch.Generator().manual_seed(0),
    }
    with pytest.warns(RuntimeWarning, match="discrepancy principle"):
        xd = reconstruct(op, y, "vae-range", lam="discrepancy", noise_std=0.01, **opts)
    xn = reconstruct(op, y, "vae-range", lam="noise", noise_std=0.01, **opts)
    assert _residual(op, xd, y) > 0.01 * 8 * 1.05
    assert _residual(op, xd, y) <= _residual(op, xn, y) * (1 + 1e-3)


def test_sweep_returns_the_best_of_the_grid():
    torch.manual_seed(0)
    gan = DCGANPrior(image_size=8, latent_dim=4, channels=(4,), d_channels=(4,)).eval()
    op = Identity((8, 8))
    x, y = _noisy()
    grid = (1e-4, 1e-1, 10.0)
    opts = {"weights": gan, "n_iter": 20, "restarts": 1}

    def gen():
        return torch.Generator().manual_seed(3)

    xs = reconstruct(op, y, "csgm", lam="sweep", x_true=x, grid=grid, generator=gen(), **opts)
    errs = [
        float((reconstruct(op, y, "csgm", lam=lam, generator=gen(), **opts) - x).pow(2).mean())
        for lam in grid
    ]
    assert float((xs - x).pow(2).mean()) == pytest.approx(min(errs), rel=1e-5)


@pytest.mark.parametrize("method", LEARNED)
def test_options_accept_the_rules(method):
    for rule in ("noise", "discrepancy", "sweep"):
        assert validate_options(method, {"lam": rule, "noise_std": 0.01})["lam"] == rule
    with pytest.raises(ValueError, match="'discrepancy'"):
        validate_options(method, {"lam": "morozov"})
    with pytest.raises(ValueError, match="lam"):
        validate_options(method, {"lam": -1.0})


@pytest.mark.parametrize("bad", [None, -0.1, 0.0, float("nan"), [0.1, 0.2, 0.3], True])
def test_bad_noise_std_is_an_error(bad):
    op = Identity((8, 8))
    _, y = _noisy()
    with pytest.raises(ValueError, match="noise_std"):
        reconstruct(op, y, "vae-soft", weights=_tiny_vae(), lam="noise", noise_std=bad, n_iter=2)


def test_calibration_factor_per_bundled_prior_file():
    """The real-CT 128 priors have their own factor (1, chosen on their train slices); others keep CALIBRATION."""
    from medrecon.operators import Identity
    from medrecon.solvers.auto_weights import CALIBRATION, calibration_factor, noise_rule_weight

    assert calibration_factor("vae-soft", "data/weights/vae_ct128.pt") == 1.0
    assert calibration_factor("flow-map", "/anywhere/flow_ct128.pt") == 1.0
    assert calibration_factor("vae-soft", "data/weights/vae_mri128.pt") == CALIBRATION["vae-soft"] == 10.0
    assert calibration_factor("flow-map", None) == 10.0
    assert calibration_factor("vae-range", "data/weights/vae_ct128.pt") == 1.0
    op = Identity((4, 4))
    ct = noise_rule_weight("vae-soft", op, 0.1, mu=0.01, weights_file="vae_ct128.pt")
    other = noise_rule_weight("vae-soft", op, 0.1, mu=0.01, weights_file="vae_ellipses64.pt")
    torch.testing.assert_close(other, 10 * ct)
    torch.testing.assert_close(ct, torch.tensor([0.01 / 0.01], dtype=torch.float64))


def test_vae_soft_noise_rule_uses_the_default_files_factor():
    """vae-soft, lam="noise", no weights= on a 128x128 CT problem: the bundled vae_ct128 and its factor 1,
    i.e. the same result as the explicit MAP weight sigma^2 / (mu ||A||^2)."""
    import medrecon
    from medrecon.operators import ParallelBeamCT

    op = ParallelBeamCT(128, 6)
    x = torch.zeros(1, 1, 128, 128)
    x[..., 30:100, 40:90] = 0.6
    y = op(x)
    sigma, mu = 0.05, 1e-2
    opts = dict(n_iter=1, z_steps=1, cg_iter=3, mu=mu)
    auto = medrecon.reconstruct(op, y, "vae-soft", lam="noise", noise_std=sigma, **opts)
    explicit = medrecon.reconstruct(op, y, "vae-soft", lam=sigma**2 / (mu * float(op.norm_squared())), **opts)
    ten = medrecon.reconstruct(op, y, "vae-soft", lam=10 * sigma**2 / (mu * float(op.norm_squared())), **opts)
    torch.testing.assert_close(auto, explicit)
    assert not torch.allclose(auto, ten)
