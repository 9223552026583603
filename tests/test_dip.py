import csv
import json
import math

import pytest
import torch

import medrecon
from medrecon.methods.dip import reconstruct_dip
from medrecon.operators import DiagonalOperator, Identity
from medrecon.operators.restoration import Downsampling, Grayscale
from medrecon.priors.dip import (
    DiscrepancyStopping,
    FixedSteps,
    Hourglass,
    PlateauVarianceStopping,
    WindowedVarianceStopping,
    ema_sequence,
    fit_dip,
    max_depth,
    windowed_variance,
)
from medrecon.priors.tv import total_variation

TINY_NET = {"depth": 2, "channels": 8, "skip_channels": 2, "input_depth": 4}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- the network
@pytest.mark.parametrize("size", [(7, 6), (9, 8), (8, 8), (5, 11)])
@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_hourglass_output_shape(size, upsample):
    net = Hourglass(4, 3, depth=2, channels=4, skip_channels=2, upsample=upsample, generator=_gen())
    out = net(torch.rand(1, 4, *size, generator=_gen(1)))
    assert out.shape == (1, 3, *size)
    assert float(out.detach().min()) > 0 and float(out.detach().max()) < 1  # sigmoid output


def test_hourglass_per_level_widths_and_too_small_image():
    net = Hourglass(
        4,
        1,
        depth=3,
        channels_down=[4, 6, 8],
        channels_up=[5, 5, 5],
        skip_channels=[0, 2, 2],
        generator=_gen(),
    )
    assert net(torch.rand(1, 4, 16, 12)).shape == (1, 1, 16, 12)
    assert max_depth((7, 6)) == 2  # 7x6 -> 4x3 -> 2x2 -> 1x1 (one pixel: BatchNorm fails)
    assert max_depth((64, 64)) == 5
    with pytest.raises(ValueError, match="too small for 3 levels"):
        Hourglass(4, 1, depth=3, channels=4, generator=_gen())(torch.rand(1, 4, 7, 6))
    with pytest.raises(ValueError, match="length depth=3"):
        Hourglass(4, 1, depth=3, channels_down=[4, 4])


@pytest.mark.parametrize("size", [(7, 6), (9, 8)])
def test_fit_maps_to_image_shape_real_complex_and_colour(size):
    for op in (Identity(size), Identity(size, complex=True), Grayscale(size)):
        y = torch.ones(2, 1, *op.out_shape, dtype=op.out_dtype)
        res = fit_dip(op, y, n_iter=2, **TINY_NET, stopping="none", generator=_gen())
        assert res.x.shape == (2, 1, *op.in_shape) and res.x.dtype == op.in_dtype
        assert len(res.traces) == 2 and all(t.n_steps == 2 for t in res.traces)


def test_init_uses_generator_not_global_rng():
    state = torch.random.get_rng_state()
    a = Hourglass(4, 1, depth=2, channels=4, generator=_gen(3))
    b = Hourglass(4, 1, depth=2, channels=4, generator=_gen(3))
    c = Hourglass(4, 1, depth=2, channels=4, generator=_gen(4))
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.head.conv.weight, c.head.conv.weight)


def test_fixed_seed_repeats_and_global_rng_untouched():
    op = Identity((9, 8))
    y = torch.rand(1, 1, 9, 8, generator=_gen(5))
    state = torch.random.get_rng_state()
    r1 = fit_dip(op, y, n_iter=5, **TINY_NET, generator=_gen(7))
    r2 = fit_dip(op, y, n_iter=5, **TINY_NET, generator=_gen(7))
    r3 = fit_dip(op, y, n_iter=5, **TINY_NET, generator=_gen(8))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(r1.x, r2.x) and r1.traces[0].loss == r2.traces[0].loss
    assert not torch.equal(r1.x, r3.x)


# ----------------------------------------------------------------------------- fitting
def test_identity_fits_target():
    # A = I: 60 Adam steps of a small hourglass fit a 16x16 image; the data term falls >= 20x
    # (measured: about 1700x after 100 steps).
    g = _gen(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    target = (0.5 + 0.4 * torch.sin(3 * xx) * torch.cos(2 * yy))[None, None]
    res = fit_dip(
        Identity((16, 16)),
        target,
        n_iter=60,
        depth=3,
        channels=16,
        skip_channels=4,
        input_depth=8,
        perturbation=0.0,
        stopping="none",
        output="iterate",
        generator=g,
    )
    loss = res.traces[0].loss
    assert loss[-1] < loss[0] / 20
    assert float((res.x - target).abs().max()) < 0.1


def test_complex_operator_fits():
    # a complex diagonal (k-space-like) operator: the complex image is two network channels
    g = _gen(1)
    d = torch.polar(torch.rand(12, 10, generator=g) + 0.5, 6.28 * torch.rand(12, 10, generator=g))
    op = DiagonalOperator(d)
    x = torch.polar(torch.rand(1, 1, 12, 10, generator=g), torch.rand(1, 1, 12, 10, generator=g))
    res = fit_dip(
        op,
        op(x),
        n_iter=100,
        depth=2,
        channels=16,
        input_depth=8,
        perturbation=0.0,
        stopping="none",
        output="iterate",
        generator=g,
    )
    loss = res.traces[0].loss
    assert res.x.is_complex() and loss[-1] < loss[0] / 10


def test_superresolution_operator_runs_and_fits():
    op = Downsampling((16, 16), 2)
    y = op(torch.rand(1, 1, 16, 16, generator=_gen(2)))
    res = fit_dip(op, y, n_iter=60, depth=2, channels=8, input_depth=4, stopping="none", generator=_gen(3))
    assert res.traces[0].loss[-1] < res.traces[0].loss[0] / 5


def test_tv_term_is_in_the_loss():
    op = Identity((9, 8))
    y = torch.rand(1, 1, 9, 8, generator=_gen(0))
    seen = []
    res = fit_dip(
        op,
        y,
        n_iter=1,
        **TINY_NET,
        lam=0.3,
        output="iterate",
        stopping="none",
        callback=lambda k, x, info: seen.append(x.clone()),
        generator=_gen(0),
    )
    t = res.traces[0]
    data = 0.5 * float(((seen[0] - y) ** 2).sum())
    assert t.loss[0] == pytest.approx(data + 0.3 * float(total_variation(seen[0]).sum()), rel=1e-5)


def test_depth_is_capped_for_small_images():
    with pytest.warns(UserWarning, match="at most 2 levels"):
        res = fit_dip(Identity((8, 8)), torch.rand(1, 1, 8, 8), n_iter=1, depth=5, channels=4, input_depth=4)
    assert res.traces[0].settings["depth"] == 2


def test_registered_methods():
    op = Identity((8, 8))
    y = torch.rand(1, 1, 8, 8, generator=_gen(0))
    x = medrecon.reconstruct(op, y, "dip", n_iter=3, depth=2, channels=4, generator=_gen(0))
    assert x.shape == y.shape
    x = medrecon.reconstruct(op, y, "dip-tv", n_iter=3, depth=2, channels=4, lam=0.1)
    assert x.shape == y.shape
    opts = medrecon.methods.method_options("dip")
    assert {"callback", "generator", "x_true", "trace_path", "n_iter", "lr"} <= set(opts)
    with pytest.raises(ValueError, match="stopping must be"):
        reconstruct_dip(op, y, n_iter=1, stopping="oracle")
    with pytest.raises(ValueError, match="needs noise_std"):
        reconstruct_dip(op, y, n_iter=1, stopping="discrepancy")


# ----------------------------------------------------------------------------- EMA
def test_ema_sequence_closed_form():
    g = _gen(0)
    v = torch.randn(30, 4, generator=g, dtype=torch.float64)
    w = 0.9
    m = ema_sequence(v, w)
    k = 29
    closed = w**k * v[0] + (1 - w) * sum(w ** (k - j) * v[j] for j in range(1, k + 1))
    torch.testing.assert_close(m[-1], closed)
    torch.testing.assert_close(m[0], v[0])


def test_fit_returns_the_ema_of_its_iterates():
    op = Identity((9, 8))
    y = torch.rand(1, 1, 9, 8, generator=_gen(0))
    iterates, emas = [], []
    fit_dip(
        op,
        y,
        n_iter=8,
        **TINY_NET,
        ema=0.7,
        output="iterate",
        stopping="none",
        generator=_gen(1),
        callback=lambda k, x, info: iterates.append(x.clone()),
    )
    res = fit_dip(
        op,
        y,
        n_iter=8,
        **TINY_NET,
        ema=0.7,
        output="ema",
        stopping="none",
        generator=_gen(1),
        callback=lambda k, x, info: emas.append(x.clone()),
    )
    ref = ema_sequence(iterates, 0.7)
    for a, b in zip(emas, ref):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(res.x, ref[-1])


# ----------------------------------------------------------------------------- early stopping
def _noisy_sequence(scales, n=2000, seed=0):
    g = _gen(seed)
    base = torch.rand(n, generator=g, dtype=torch.float64)
    return [base + s * torch.randn(n, generator=g, dtype=torch.float64) for s in scales]


def test_windowed_variance_matches_numpy_definition():
    seq = _noisy_sequence([0.1 * (1 + k % 3) for k in range(12)], n=50)
    got = windowed_variance(seq, 5)
    assert all(math.isnan(v) for v in got[:4])
    stack = torch.stack(seq)
    for t in range(4, 12):
        win = stack[t - 4 : t + 1]
        ref = float(((win - win.mean(0)) ** 2).sum(1).mean()) / 50
        assert got[t] == pytest.approx(ref, rel=1e-12)


def test_stopping_finds_known_minimum():
    # iterate noise shrinks until step 300, then grows (the net starts fitting noise):
    # the windowed variance over W steps is smallest for the window centred on step 300.
    window, patience, k0 = 20, 50, 300
    scales = [0.05 + 0.002 * abs(k - k0) for k in range(600)]
    stop = WindowedVarianceStopping(window, patience)
    fired_at = None
    for k, x in enumerate(_noisy_sequence(scales)):
        stop.update(x)
        if stop.should_stop:
            fired_at = k
            break
    expected = k0 + (window - 1) // 2
    assert abs(stop.best_step - expected) <= 3
    assert fired_at == stop.best_step + patience


def test_stopping_does_not_fire_on_a_converging_sequence():
    # x_k -> x* geometrically: the windowed variance falls monotonically, so no stop
    stop = WindowedVarianceStopping(window=20, patience=50)
    g = _gen(0)
    xs, v = (
        torch.rand(500, generator=g, dtype=torch.float64),
        torch.randn(500, generator=g, dtype=torch.float64),
    )
    for k in range(1000):
        stop.update(xs + 0.99**k * v)
        assert not stop.should_stop
    assert stop.best_step == 999


def test_fit_with_wmv_returns_the_minimum_and_records_why():
    op = Identity((16, 16))
    y = torch.rand(1, 1, 16, 16, generator=_gen(0))
    res = fit_dip(
        op,
        y,
        n_iter=400,
        depth=2,
        channels=8,
        input_depth=4,
        window=10,
        patience=15,
        generator=_gen(0),
        x_true=y,
        stopping="wmv",
    )
    t = res.traces[0]
    assert t.stop_reason.startswith(("eswmv", "max_iter"))
    best = min(range(t.n_steps), key=lambda k: t.variance[k] if not math.isnan(t.variance[k]) else math.inf)
    assert t.returned_step == best
    assert t.psnr_returned == t.psnr_ema[best]


def test_discrepancy_principle_stops_at_noise_level():
    g = _gen(0)
    x = torch.full((1, 1, 16, 16), 0.5)
    sigma = 0.1
    y = x + sigma * torch.randn(x.shape, generator=g)
    res = fit_dip(
        Identity((16, 16)),
        y,
        n_iter=500,
        depth=2,
        channels=8,
        input_depth=4,
        stopping="discrepancy",
        noise_std=sigma,
        generator=g,
    )
    t = res.traces[0]
    assert t.stop_reason.startswith("discrepancy") and t.n_steps < 500
    r = t.residual[t.returned_step] * float(y.norm())
    assert r**2 <= 256 * sigma**2 < (t.residual[t.returned_step - 1] * float(y.norm())) ** 2


# ----------------------------------------------------------------------------- the trace
def test_trace_is_written(tmp_path):
    op = Identity((8, 8))
    y = torch.rand(2, 1, 8, 8, generator=_gen(0))
    reconstruct_dip(op, y, n_iter=6, depth=2, channels=4, x_true=y, trace_path=tmp_path / "t.json")
    data = json.loads((tmp_path / "t.json").read_text())
    assert len(data["traces"]) == 2
    t = data["traces"][0]
    assert len(t["loss"]) == len(t["psnr"]) == len(t["psnr_ema"]) == len(t["variance"]) == 6
    assert t["stop_reason"] and t["settings"]["n_iter"] == 6 and t["psnr_returned"] is not None
    res = fit_dip(op, y, n_iter=6, depth=2, channels=4, trace_path=str(tmp_path / "t.csv"))
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and sum(int(r["returned"]) for r in rows) == 2
    assert res.traces[1].n_steps == 6
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left no temporary file


def test_warmup_skips_an_early_variance_minimum():
    # an early dip of the iterate noise at step 40 (a transient), the real minimum at step 300
    window, patience = 20, 60
    scales = [0.05 + min(0.003 * abs(k - 40) + 0.02, 0.002 * abs(k - 300)) for k in range(600)]
    published, warm = (
        WindowedVarianceStopping(window, patience),
        WindowedVarianceStopping(window, patience, 100),
    )
    for x in _noisy_sequence(scales):
        if not published.should_stop:
            published.update(x)
        warm.update(x)
    assert published.best_step < 100 and published.should_stop  # the published rule stops at the transient
    assert abs(warm.best_step - (300 + (window - 1) // 2)) <= 3


# ----------------------------------------------------------------------------- wmv-plateau (the default)
def _run_rule(rule, scales, losses):
    fired_at = None
    for k, x in enumerate(_noisy_sequence(scales)):
        rule.update(x, losses[k]) if isinstance(rule, PlateauVarianceStopping) else rule.update(x)
        if rule.should_stop:
            fired_at = k
            break
    return fired_at


def test_plateau_rule_ignores_an_early_dip_followed_by_improvement():
    # The failure seen on CT/MRI: the iterate variance dips at step 100 right after the transient, rises a
    # little while the fit is still improving (loss falling steeply), then settles lower and stays flat.
    n, window, patience = 1200, 20, 100
    scales = [
        0.02
        + 0.03 * math.exp(-k / 15)
        + (0.01 * min(k - 100, 200) / 200 if k > 100 else 0.0)
        - (0.012 * min(k - 300, 300) / 300 if k > 300 else 0.0)
        for k in range(n)
    ]
    losses = [1.0 + 100.0 * math.exp(-k / 150) for k in range(n)]  # flattens (1% per window) near step 700
    published = WindowedVarianceStopping(window, patience)
    assert _run_rule(published, scales, losses) is not None and published.best_step < 200  # stops too early
    rule = PlateauVarianceStopping(n, window, patience)
    assert _run_rule(rule, scales, losses) is None  # flat variance after the plateau: never fires
    assert rule.armed_step >= 600 and not rule.should_stop


def test_plateau_rule_fires_after_a_true_overfitting_minimum():
    # Loss flat from about step 200; the variance falls to a minimum at step 500, then rises (noise fitting).
    n, window, patience, k0 = 1200, 20, 100, 500
    scales = [0.05 + 0.0002 * abs(k - k0) for k in range(n)]
    losses = [1.0 + 10.0 * math.exp(-k / 30) for k in range(n)]
    rule = PlateauVarianceStopping(n, window, patience)
    fired = _run_rule(rule, scales, losses)
    assert fired is not None and fired < n - 1
    assert abs(rule.best_step - (k0 + (window - 1) // 2)) <= 5
    assert fired >= rule.best_step + patience and rule.armed_step >= 0.25 * n


def test_plateau_rule_needs_a_clear_rise():
    # after the plateau the variance only wiggles (no sustained rise of 20%): no stop
    n, window, patience = 1000, 20, 50
    scales = [0.05 * (1.0 + 0.03 * math.sin(k / 40)) for k in range(n)]
    losses = [1.0] * n
    rule = PlateauVarianceStopping(n, window, patience)
    assert _run_rule(rule, scales, losses) is None
    with pytest.raises(ValueError, match="min_fraction"):
        PlateauVarianceStopping(10, min_fraction=2.0)


def test_fit_default_rule_run_to_end_and_published_alias():
    op = Identity((16, 16))
    y = torch.rand(1, 1, 16, 16, generator=_gen(0))
    res = fit_dip(
        op,
        y,
        n_iter=120,
        depth=2,
        channels=8,
        input_depth=4,
        window=10,
        patience=10,
        rise=0.0,
        min_fraction=0.1,
        plateau_tol=1.0,
        generator=_gen(0),
        x_true=y,
        run_to_end=True,
    )
    t = res.traces[0]
    assert t.settings["stopping"] == "wmv-plateau" and t.n_steps == 120  # ran on after the rule fired
    assert t.stop_reason.startswith("wmv-plateau") and t.returned_step <= t.stop_step < 119
    assert t.psnr_returned == t.psnr_ema[t.returned_step]
    t2 = fit_dip(
        op, y, n_iter=30, stopping="eswmv", window=5, patience=5, generator=_gen(0), **TINY_NET
    ).traces[0]
    assert t2.settings["stopping"] == "wmv"
    with pytest.raises(ValueError, match="eswmv"):
        fit_dip(op, y, n_iter=3, stopping="bogus", **TINY_NET)


# ----------------------------------------------------------------------------- the network as an argument
def test_a_network_passed_in_is_fitted_as_a_copy():
    # any module (1, input_depth, H, W) -> (1, 1, H, W); the fit must not change the one passed in
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(0.3 * torch.randn(p.shape, generator=_gen(10 + i)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    y = torch.rand(2, 1, 9, 8, generator=_gen(0))
    res = fit_dip(
        Identity((9, 8)),
        y,
        n_iter=80,
        input_depth=4,
        network=net,
        perturbation=0.0,
        output="iterate",
        stopping="none",
        generator=_gen(1),
    )
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [t.loss[-1] < t.loss[0] / 4 for t in res.traces] == [True, True], [
        (t.loss[0], t.loss[-1]) for t in res.traces
    ]
    assert res.traces[0].settings["network"] == "Sequential"
    with pytest.raises(ValueError, match="must output 2 channels"):
        fit_dip(Identity((9, 8), complex=True), y.to(torch.complex64), n_iter=1, input_depth=4, network=net)


# ----------------------------------------------------------------------------- the stopping-rule protocol
def test_stopping_rules_share_one_protocol():
    x = torch.zeros(4)
    rules = [
        FixedSteps(),
        DiscrepancyStopping(threshold=1.0),
        WindowedVarianceStopping(2, 1),
        PlateauVarianceStopping(10, 2, 1),
    ]
    for rule in rules:
        assert rule.update(x, 5.0) in (True, False)
        assert not rule.should_stop and rule.best == 0 and rule.reason == ""
    disc = rules[1]
    assert disc.update(x, 0.6) is False and not disc.should_stop  # ||Ax-y||^2 = 1.2 > 1
    assert disc.update(x, 0.4) is True and disc.should_stop and disc.best == 2  # 0.8 <= 1: keep this one
    assert disc.reason.startswith("discrepancy: ||Ax-y||^2 = 0.8")
    with pytest.raises(ValueError, match="threshold must be > 0"):
        DiscrepancyStopping(0.0)


def test_old_names_still_work_with_a_warning():
    import medrecon.priors.dip as dip_module

    y = torch.rand(1, 1, 8, 8, generator=_gen(0))
    with pytest.warns(DeprecationWarning, match="tv_weight is deprecated, use lam"):
        res = fit_dip(Identity((8, 8)), y, n_iter=1, **TINY_NET, tv_weight=0.2, stopping="none")
    assert res.traces[0].settings["lam"] == 0.2
    with pytest.warns(DeprecationWarning, match="moved to medrecon.methods.dip"):
        assert dip_module.reconstruct_dip is reconstruct_dip
