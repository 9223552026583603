"""Tests of the PatchNR prior (medrecon.priors.patchnr): exact log-determinant against the autograd
Jacobian, inverse round trip, patch extraction against F.unfold, the regulariser, training through
the flow's step, and the reconstruction method on a problem with a closed-form answer."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from medrecon.data.datasets import PatchDataset
from medrecon.methods import reconstruct
from medrecon.methods.patchnr import noise_rule_weight, reconstruct_patchnr
from medrecon.operators import DiagonalOperator, Identity
from medrecon.priors.base import model_record
from medrecon.priors.flow import ActNorm, flow_eval, flow_step
from medrecon.priors.patchnr import PatchFlow, image_patches, load_patchnr, patch_nll


def _random_flow(rng, p=2, **kw) -> PatchFlow:
    flow = PatchFlow(patch_size=p, n_couplings=3, hidden=8, **kw).double().eval()
    with torch.no_grad():
        for prm in flow.parameters():
            prm.add_(0.3 * torch.randn(prm.shape, generator=rng, dtype=prm.dtype))
        for m in flow.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(1)
    return flow


@pytest.mark.parametrize("inv_conv", ["lu", "plain", "none"])
def test_logdet_matches_jacobian(rng, inv_conv):
    flow = _random_flow(rng, inv_conv=inv_conv)
    q = torch.randn(1, 1, 2, 2, generator=rng, dtype=torch.float64)
    _, logdet = flow(q)
    jac = torch.autograd.functional.jacobian(
        lambda v: flow(v.reshape(1, 1, 2, 2))[0].reshape(-1), q.reshape(-1)
    )
    sign, ref = torch.linalg.slogdet(jac)
    assert sign != 0
    assert abs(float(logdet[0].detach()) - float(ref)) <= 1e-9 * max(1.0, abs(float(ref)))


def test_inverse_round_trip(rng):
    flow = _random_flow(rng, p=4)
    q = torch.randn(5, 1, 4, 4, generator=rng, dtype=torch.float64)
    z, _ = flow(q)
    assert torch.allclose(flow.decode(z), q, atol=1e-10)
    assert not torch.allclose(z, q.reshape(5, -1), atol=1e-3)  # the randomised flow is not the identity


def test_standard_normal_at_initialisation(rng):
    # zero-initialised couplings, an orthogonal 1x1 mixing and uninitialised actnorm: f is a rotation
    flow = PatchFlow(patch_size=2, n_couplings=2, hidden=4).double()
    q = torch.randn(3, 1, 2, 2, generator=rng, dtype=torch.float64)
    ref = -0.5 * (q.reshape(3, -1).pow(2) + math.log(2 * math.pi)).sum(1)
    assert torch.allclose(flow.eval().log_prob(q), ref, atol=1e-10)


def test_image_patches_match_unfold(rng):
    x = torch.randn(2, 1, 7, 9, generator=rng, dtype=torch.float64)
    ref = F.unfold(x, 3).transpose(1, 2).reshape(2, -1, 1, 3, 3)  # (B, L, 1, p, p), row-major positions
    assert torch.equal(image_patches(x, 3), ref)
    sub = image_patches(x, 3, n_patches=10, generator=torch.Generator().manual_seed(0))
    assert sub.shape == (2, 10, 1, 3, 3)
    # every sampled patch is one of the patches, the same positions for both images, no repeats
    flat_ref, flat_sub = ref.reshape(2, -1, 9), sub.reshape(2, 10, 9)
    hits = (flat_sub[:, :, None, :] == flat_ref[:, None, :, :]).all(-1)  # (B, 10, L)
    pos = hits.float().argmax(-1)
    assert bool(hits.any(-1).all()) and torch.equal(pos[0], pos[1]) and len(set(pos[0].tolist())) == 10


def test_patch_nll_is_mean_of_patch_nll(rng):
    flow = _random_flow(rng)
    x = torch.rand(2, 1, 5, 6, generator=rng, dtype=torch.float64)
    q = F.unfold(x, 2).transpose(1, 2).reshape(-1, 1, 2, 2)
    ref = flow.neg_log_prob(q).reshape(2, -1).mean(1)
    assert torch.allclose(patch_nll(flow, x, chunk=7), ref, atol=1e-10)


def test_bad_inputs():
    with pytest.raises(ValueError, match="even"):
        PatchFlow(patch_size=5)
    flow = PatchFlow(patch_size=2, n_couplings=1, hidden=4)
    with pytest.raises(ValueError, match=r"\(N, 1, 2, 2\)"):
        flow(torch.zeros(3, 1, 3, 3))
    with pytest.raises(ValueError, match="smaller than"):
        image_patches(torch.zeros(1, 1, 1, 4), 2)
    op = Identity((4, 4), dtype=torch.float64)
    y = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="noise_std"):
        reconstruct_patchnr(op, y, weights=flow.double(), lam="noise")
    with pytest.raises(ValueError, match="option lam must be"):
        reconstruct(op, y, "patchnr", weights=flow.double(), lam="auto")
    with pytest.raises(TypeError, match="PatchFlow"):
        reconstruct(op, y, "patchnr", weights=torch.nn.Linear(2, 2))


def test_training_step_lowers_nll():
    # flat patches of a random level plus a little noise: strongly correlated pixels, which actnorm's
    # per-pixel scaling (initialised from the first batch) cannot capture but the couplings can
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    flow = PatchFlow(patch_size=2, n_couplings=2, hidden=16)
    level = 0.1 + 0.8 * torch.rand(128, 1, 1, 1, generator=g)
    data = (level + 0.02 * torch.randn(128, 1, 2, 2, generator=g)).clamp(0, 1)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    ctx = SimpleNamespace(optimizers={"model": opt}, generator=torch.Generator().manual_seed(1))
    flow.train()
    first = flow_eval(flow, data, ctx)["loss"]
    for _ in range(40):
        flow_step(flow, data, ctx)
    flow.eval()
    assert flow_eval(flow, data, ctx)["loss"] < first - 2.0  # nats per patch


def test_checkpoint_round_trip(tmp_path, rng):
    flow = _random_flow(rng).float()
    torch.save(model_record(flow), tmp_path / "p.pt")
    loaded = load_patchnr(tmp_path / "p.pt")
    q = torch.rand(4, 1, 2, 2, generator=rng)
    assert torch.allclose(loaded.log_prob(q), flow.log_prob(q))
    assert not any(p.requires_grad for p in loaded.parameters())


def _gaussian_patch_flow(mean: float, std: float) -> PatchFlow:
    """A PatchFlow whose patch density is N(mean, std^2 I) exactly (actnorm set, couplings zero)."""
    flow = PatchFlow(patch_size=2, n_couplings=1, hidden=4, inv_conv="none").double().eval()
    act = flow.layers[0]
    with torch.no_grad():
        act.bias.fill_(-mean)
        act.logs.fill_(-math.log(std))
        act.initialized.fill_(1)
    return flow


def test_map_closed_form_identity():
    # A = I, Gaussian patch density: per pixel (x - y) + lam' c_ij (x - m) / s^2 = 0 with c_ij the number of
    # patches covering the pixel and lam' = lam H W / N (R is a mean over the N patches)
    h, w, m, s, lam = 5, 6, 0.5, 0.2, 0.01
    flow = _gaussian_patch_flow(m, s)
    g = torch.Generator().manual_seed(3)
    y = torch.rand(2, 1, h, w, generator=g, dtype=torch.float64)
    op = Identity((h, w), dtype=torch.float64)
    x = reconstruct(op, y, "patchnr", weights=flow, lam=lam, optimizer="lbfgs", n_iter=50)
    count = F.fold(F.unfold(torch.ones(1, 1, h, w, dtype=torch.float64), 2), (h, w), 2)  # c_ij
    lam_eff = lam * h * w / ((h - 1) * (w - 1))
    ref = (y + lam_eff * count * m / s**2) / (1 + lam_eff * count / s**2)
    assert torch.allclose(x, ref, atol=1e-6)
    assert (x - y).abs().max() > 0.05  # the prior acts


def test_nonneg_is_the_projection_of_the_separable_closed_form():
    # A = I and a Gaussian patch density below zero: each pixel's objective is a 1-D convex quadratic, so
    # the minimiser over x >= 0 is max(unconstrained closed form, 0) per pixel; without nonneg it is negative
    h, w, m, s, lam = 5, 6, -0.4, 0.3, 0.02
    flow = _gaussian_patch_flow(m, s)
    y = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.3
    op = Identity((h, w), dtype=torch.float64)
    count = F.fold(F.unfold(torch.ones(1, 1, h, w, dtype=torch.float64), 2), (h, w), 2)
    lam_eff = lam * h * w / ((h - 1) * (w - 1))
    ref = (y + lam_eff * count * m / s**2) / (1 + lam_eff * count / s**2)
    assert (ref < 0).any() and (ref > 0).any()
    kw = dict(weights=flow, lam=lam, n_iter=3000, lr=0.01, n_patches=None)
    x = reconstruct(op, y, "patchnr", nonneg=True, **kw)
    assert torch.allclose(x, ref.clamp(min=0), atol=2e-3)
    free = reconstruct(op, y, "patchnr", nonneg=False, **kw)
    assert torch.allclose(free, ref, atol=2e-3)
    with pytest.raises(ValueError, match="nonneg=True needs optimizer='adam'"):
        reconstruct(op, y, "patchnr", weights=flow, lam=lam, nonneg=True, optimizer="lbfgs")
    with pytest.raises(ValueError, match="nonneg"):
        reconstruct(op, y, "patchnr", weights=flow, lam=lam, nonneg=1)


def test_map_scaled_operator_and_adam(rng):
    # lam is relative to ||A||^2: scaling A and y together leaves the answer unchanged; Adam with random
    # patch subsets gets close to the L-BFGS answer (up to the jitter of a constant step)
    h, w = 6, 5
    flow = _gaussian_patch_flow(0.3, 0.25)
    d = 0.5 + torch.rand(h, w, generator=rng, dtype=torch.float64)
    x_true = torch.rand(1, 1, h, w, generator=rng, dtype=torch.float64)
    op1, op3 = DiagonalOperator(d), DiagonalOperator(3 * d)
    x1 = reconstruct_patchnr(op1, op1(x_true), weights=flow, lam=0.02, optimizer="lbfgs", n_iter=60)
    x3 = reconstruct_patchnr(op3, op3(x_true), weights=flow, lam=0.02, optimizer="lbfgs", n_iter=60)
    assert torch.allclose(x1, x3, atol=1e-4)  # L-BFGS stops on an absolute gradient tolerance
    g = torch.Generator().manual_seed(0)
    before = torch.get_rng_state()
    xa = reconstruct_patchnr(
        op1, op1(x_true), weights=flow, lam=0.02, n_iter=800, lr=5e-3, n_patches=12, generator=g
    )
    assert torch.equal(torch.get_rng_state(), before)  # patch subsets come from the generator
    start = op1.direct(op1(x_true))
    assert (xa - x1).abs().mean() < 0.01 < (start - x1).abs().mean()


def test_noise_rule_and_discrepancy(rng):
    flow = _gaussian_patch_flow(0.5, 0.2)
    op = Identity((6, 6), dtype=torch.float64)
    y = torch.rand(2, 1, 6, 6, generator=rng, dtype=torch.float64)
    sigma = 0.05
    assert float(noise_rule_weight(op, sigma, 2, c=2.0)) == pytest.approx(2.0 * sigma**2)
    assert float(noise_rule_weight(DiagonalOperator(torch.full((6, 6), 2.0)), sigma, 2)) == pytest.approx(
        sigma**2 / 16
    )  # c = 1/p^2, divided by ||A||^2 = 4
    op2 = DiagonalOperator(torch.full((6, 6), 2.0, dtype=torch.float64))
    for q in (0.0, 1.0, 2.5):  # lam = c (sigma / ||A||)^q
        assert float(noise_rule_weight(op2, sigma, 2, c=3.0, power=q)) == pytest.approx(
            3.0 * (sigma / 2) ** q
        )
    per = noise_rule_weight(op2, torch.tensor([0.05, 0.1]), 2, c=1.0, power=0.0)
    assert torch.allclose(per, torch.ones(2, dtype=torch.float64))  # q = 0: the same weight at every sigma
    # the discrepancy principle finds a residual close to sigma sqrt(m)
    x = reconstruct_patchnr(
        op, y, weights=flow, lam="discrepancy", noise_std=sigma, optimizer="lbfgs", n_iter=40
    )
    res = torch.linalg.vector_norm((x - y).flatten(1), dim=1)
    assert torch.allclose(res, torch.full_like(res, sigma * 6), rtol=0.06)


def test_patch_dataset_cuts_real_windows(rng):
    a = torch.rand(3, 1, 9, 8, generator=rng)
    b = torch.rand(2, 1, 12, 12, generator=rng)
    ds = PatchDataset([a, b], patch_size=3, n=41, seed=5)
    again = PatchDataset([a, b], patch_size=3, n=41, seed=5)
    assert len(ds) == 41 and torch.equal(ds.patches, again.patches)  # a pure function of the seed
    assert not torch.equal(ds.patches, PatchDataset([a, b], patch_size=3, n=41, seed=6).patches)

    def symmetries(q):  # the 8 flips/transposes of a square patch
        outs = []
        for t in (q, q.T):
            outs += [t, t.flip(0), t.flip(1), t.flip(0).flip(1)]
        return outs

    windows = [F.unfold(s, 3).transpose(1, 2).reshape(-1, 3, 3) for s in (a, b)]  # every 3x3 window
    # the first 21 patches come from a, the other 20 from b; each is a window under one of the 8 symmetries
    for i in range(41):
        src = windows[0] if i < 21 else windows[1]
        q = ds[i][0]
        assert any(bool((src == s).all((1, 2)).any()) for s in symmetries(q)), i


def test_tv_start(rng):
    # init="tv": the start is the tv method's image (discrepancy principle with noise_std, TV_INIT_LAM
    # without); with a vanishing step the result is that start. A bad init and x0 + init are refused.
    from medrecon.methods.patchnr import TV_INIT_LAM

    flow = _gaussian_patch_flow(0.5, 0.2)
    d = 0.5 + torch.rand(8, 7, generator=rng, dtype=torch.float64)
    op = DiagonalOperator(d)
    x_true = torch.rand(2, 1, 8, 7, generator=rng, dtype=torch.float64)
    sigma = 0.05
    y = op(x_true) + sigma * torch.randn(x_true.shape, generator=rng, dtype=torch.float64)
    opts = dict(weights=flow, lam=0.01, n_iter=1, lr=1e-12, tv_iter=50, nonneg=False)  # the start itself
    for extra, tv_opts in (
        ({"noise_std": sigma}, {"lam": "discrepancy", "noise_std": sigma}),
        ({}, {"lam": TV_INIT_LAM}),
    ):
        x_tv = reconstruct(op, y, "tv", n_iter=50, **tv_opts)
        x = reconstruct(op, y, "patchnr", init="tv", **opts, **extra)
        assert torch.allclose(x, x_tv, atol=1e-9)
        assert not torch.allclose(x, op.direct(y), atol=1e-3)  # not the direct start
    x_direct = reconstruct(op, y, "patchnr", **opts)
    assert torch.allclose(x_direct, op.direct(y), atol=1e-9)
    with pytest.raises(ValueError, match="init"):
        reconstruct(op, y, "patchnr", init="fbp", **opts)
    with pytest.raises(ValueError, match="x0= or init"):
        reconstruct(op, y, "patchnr", init="tv", x0=op.direct(y), **opts)


def test_noise_rule_constant(rng):
    # lam="noise" with noise_c=c solves with lam = c sigma^2 / ||A||^2; given weights default to c = 1/p^2
    flow = _gaussian_patch_flow(0.5, 0.2)
    op = DiagonalOperator(torch.full((6, 5), 2.0, dtype=torch.float64))
    y = torch.rand(1, 1, 6, 5, generator=rng, dtype=torch.float64)
    sigma, opts = 0.1, dict(weights=flow, optimizer="lbfgs", n_iter=40)
    x_c = reconstruct(op, y, "patchnr", lam="noise", noise_std=sigma, noise_c=3.0, **opts)
    assert torch.allclose(x_c, reconstruct(op, y, "patchnr", lam=3.0 * sigma**2 / 4, **opts), atol=1e-8)
    x_p = reconstruct(op, y, "patchnr", lam="noise", noise_std=sigma, **opts)
    assert torch.allclose(x_p, reconstruct(op, y, "patchnr", lam=sigma**2 / 16, **opts), atol=1e-8)
    assert not torch.allclose(x_c, x_p, atol=1e-4)
    with pytest.raises(ValueError, match="noise_c"):
        reconstruct(op, y, "patchnr", lam="noise", noise_std=sigma, noise_c=-1.0, **opts)
    # noise_power=q: lam = c (sigma / ||A||)^q (q = 0: c itself)
    x_q = reconstruct(op, y, "patchnr", lam="noise", noise_std=sigma, noise_c=3.0, noise_power=0.0, **opts)
    assert torch.allclose(x_q, reconstruct(op, y, "patchnr", lam=3.0, **opts), atol=1e-8)
    with pytest.raises(ValueError, match="noise_power"):
        reconstruct(op, y, "patchnr", lam="noise", noise_std=sigma, noise_power=-1.0, **opts)


def test_noise_rule_constant_of_bundled_weights():
    from medrecon.methods.patchnr import NOISE_RULE, NOISE_RULE_C, _default_noise_c, _default_noise_rule

    ct, mri = SimpleNamespace(in_complex=False), SimpleNamespace(in_complex=True)  # only the kind is read
    assert (
        _default_noise_c(None, ct) == NOISE_RULE_C["ct"]
        and _default_noise_c(None, mri) == NOISE_RULE_C["mri"]
    )
    assert (
        _default_noise_rule(None, ct) == NOISE_RULE["ct"]
        and _default_noise_rule(None, mri) == NOISE_RULE["mri"]
    )
    assert _default_noise_c("data/weights/patchnr_mri.pt", ct) == NOISE_RULE_C["mri"]  # the file decides
    assert _default_noise_rule("data/weights/patchnr_mri.pt", ct) == NOISE_RULE["mri"]
    assert _default_noise_c("runs/x/my_patchnr.pt", ct) is None
    assert _default_noise_rule(_gaussian_patch_flow(0.5, 0.2), ct) is None
