"""The method registry (medrecon.reconstruct) and the classical methods: errors that list the valid
names, the shared checks of y and of option values, deprecated names, weight selection by the
discrepancy principle and by a sweep, FBP / direct dispatch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import medrecon
from medrecon.methods import (
    available_methods,
    get_method,
    method_defaults,
    method_options,
    register_method,
    sweep_weight,
    validate_options,
)
from medrecon.operators import Identity, MatrixOperator

F64 = torch.float64
CLASSICAL = ["fbp", "direct", "zero-filled", "cgls", "tikhonov", "tv", "sense"]


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
    names = available_methods()  # every registered family, whatever registers later
    assert {
        "fbp",
        "direct",
        "zero-filled",
        "cgls",
        "tikhonov",
        "tv",
        "sense",
        "dip",
        "dip-tv",
        "flow",
        "csgm",
        "gan-d",
        "vae-range",
        "vae-soft",
    } <= set(names)
    with pytest.raises(ValueError, match=rf"unknown method 'art'; valid methods: {', '.join(names)}$"):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "art")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(
        ValueError, match=r"method 'tv' got unknown option\(s\) weight; valid options: lam, n_iter, tol"
    ):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "tv", weight=0.1)


def test_fbp_needs_a_ct_operator_and_sense_a_complex_one():
    with pytest.raises(ValueError, match=r"method 'fbp' needs an operator with an .fbp method"):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "fbp")
    with pytest.raises(ValueError, match=r"'sense' needs a complex \(MRI\) operator"):
        medrecon.reconstruct(Identity((3, 3)), torch.zeros(1, 1, 3, 3), "sense")


@pytest.mark.parametrize("name", ["direct", "zero-filled"])
def test_direct_uses_the_operators_own_or_the_scaled_adjoint(name, rng):
    op = MatrixOperator(torch.randn(5, 4, dtype=F64, generator=rng))
    y = torch.randn(2, 1, 5, dtype=F64, generator=rng)
    torch.testing.assert_close(medrecon.reconstruct(op, y, name), op.adjoint(y) / op.norm_squared())

    class WithDirect(Identity):
        def direct(self, y):
            return 2 * y

    assert float(medrecon.reconstruct(WithDirect((2, 2)), torch.ones(1, 1, 2, 2), name).sum()) == 8.0


def test_fbp_calls_op_fbp_with_its_options():
    calls = {}

    class FakeCT(Identity):
        def fbp(self, y, filter="ramp", frequency_scaling=1.0):
            calls.update(filter=filter, frequency_scaling=frequency_scaling)
            return y + 1

    seen = []
    x = medrecon.reconstruct(
        FakeCT((2, 2)),
        torch.zeros(1, 1, 2, 2),
        "fbp",
        filter="hann",
        frequency_scaling=0.5,
        callback=lambda k, x, info: seen.append(k),
    )
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
    x = medrecon.reconstruct(
        op,
        y,
        method,
        lam="discrepancy",
        noise_std=sigma,
        n_iter=200,
        **({"nonneg": False} if method == "tv" else {}),
    )
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
        x_b = medrecon.reconstruct(op, y[b : b + 1], "tikhonov", lam=grid[best], n_iter=100, tol=1e-13)
        torch.testing.assert_close(result.x[b : b + 1], x_b)
    # the same through the method option, which returns the best reconstruction
    x = medrecon.reconstruct(op, y, "tikhonov", lam="sweep", x_true=x_true, grid=grid, n_iter=100, tol=1e-13)
    torch.testing.assert_close(x, result.x)
    with pytest.raises(ValueError, match="needs x_true"):
        medrecon.reconstruct(op, y, "tikhonov", lam="sweep")


# --------------------------------------------------------------------------- shared checks of y and options
def _ops_for(name):
    """A tiny operator each method can run on (complex for sense)."""
    if name == "sense":
        from medrecon.operators import SingleCoilMRI

        return SingleCoilMRI(torch.ones(6, 6))
    return MatrixOperator(torch.eye(36, dtype=torch.float32), in_shape=(6, 6), out_shape=(36,))


@pytest.mark.parametrize("name", available_methods())
def test_every_method_rejects_y_without_batch_and_channel_axes(name):
    op = _ops_for(name)
    y = torch.zeros(op.out_shape, dtype=op.out_dtype)  # (36,): no (B, C)
    with pytest.raises(
        ValueError, match=rf"method '{name}': y must have shape \(B, C, .*\) = \(B, C, \*op.out_shape\)"
    ):
        medrecon.reconstruct(op, y, name)
    wrong_kind = torch.zeros(1, 1, *op.out_shape, dtype=torch.float32 if op.out_complex else torch.complex64)
    with pytest.raises(ValueError, match=rf"method '{name}': .* takes (real|complex) measurements"):
        medrecon.reconstruct(op, wrong_kind, name)


def test_a_2d_sinogram_is_an_error_not_a_broadcast():
    from medrecon.operators import ParallelBeamCT

    op = ParallelBeamCT(8, 5, backend="matrix")
    y = torch.zeros(op.out_shape)  # (n_angles, n_detectors)
    with pytest.raises(
        ValueError, match=r"y must have shape \(B, C, 5, \d+\) .* got \(5, \d+\); add the batch"
    ):
        medrecon.reconstruct(op, y, "tv")


N_ITER_METHODS = [m for m in available_methods() if "n_iter" in method_options(m)]


@pytest.mark.parametrize("name", N_ITER_METHODS)
@pytest.mark.parametrize("bad", [-1, 0, "ten", 2.5, True, None])
def test_iteration_counts_are_range_checked_before_anything_runs(name, bad):
    op = _ops_for(name)
    y = torch.zeros(1, 1, *op.out_shape, dtype=op.out_dtype)
    calls = []
    spy = {"callback": lambda *a: calls.append(a)} if "callback" in method_options(name) else {}
    with pytest.raises(
        ValueError, match=rf"method '{name}': option n_iter must be an integer >= 1, got {bad!r}"
    ):
        medrecon.reconstruct(op, y, name, n_iter=bad, **spy)
    assert calls == []


@pytest.mark.parametrize(
    "name, options, rule",
    [
        ("tv", {"lam": -1.0}, r"lam must be a number >= 0 or 'discrepancy' or 'sweep', got -1.0"),
        ("tv", {"lam": float("nan")}, r"lam must be a number >= 0"),
        ("tv", {"tol": -1e-3}, r"tol must be a finite number >= 0"),
        ("tv", {"step_ratio": 0.0}, r"step_ratio must be a finite number > 0"),
        ("tv", {"init": "fbp2"}, r"init must be one of 'zeros', 'adjoint', 'direct'"),
        ("tv", {"noise_std": 0.0, "lam": "discrepancy"}, r"noise_std must be None or a finite number > 0"),
        (
            "tikhonov",
            {"noise_std": torch.tensor([0.1, -0.1])},
            r"noise_std must be None or a finite number > 0",
        ),
        ("tikhonov", {"tau": 0}, r"tau must be a finite number > 0"),
        ("tikhonov", {"callback": "print"}, r"callback must be None or a function"),
        ("sense", {"lam": "discrepancy"}, r"lam must be a finite number >= 0"),
        ("fbp", {"filter": "hamming"}, r"filter must be one of 'ramp'"),
        ("fbp", {"frequency_scaling": 1.5}, r"frequency_scaling must be a finite number > 0 and <= 1"),
        ("vae-range", {"lr": 0.0}, r"lr must be a finite number > 0"),
        ("vae-range", {"restarts": 0}, r"restarts must be an integer >= 1"),
        ("vae-soft", {"lam": 0.0}, r"lam must be a finite number > 0"),
        ("vae-soft", {"cg_iter": 0}, r"cg_iter must be an integer >= 1"),
        ("flow", {"lr": -0.1}, r"lr must be None or a finite number > 0"),
        ("flow", {"init": "inverted"}, r"init must be one of 'inverse', 'zeros', 'random'"),
        ("flow", {"mode": "mle"}, r"mode must be one of 'latent', 'map'"),
        ("csgm", {"z_norm_bound": -1.0}, r"z_norm_bound must be None or a finite number > 0"),
        ("csgm", {"blend": "yes"}, r"blend must be one of False, 'copy', 'poisson'"),
        ("gan-d", {"p": 0.0}, r"p must be a finite number > 0"),
        ("dip", {"lr": 0.0}, r"lr must be a finite number > 0"),
    ],
)
def test_option_values_are_checked_by_one_rule_per_name(name, options, rule):
    with pytest.raises(ValueError, match=rf"method '{name}': option {rule}"):
        validate_options(name, options)
    op = _ops_for(name)
    with pytest.raises(ValueError, match=rf"method '{name}': option {rule}"):
        medrecon.reconstruct(op, torch.zeros(1, 1, *op.out_shape, dtype=op.out_dtype), name, **options)


def test_validate_options_accepts_good_options_and_names_bad_ones():
    assert validate_options("tv", {"lam": "discrepancy", "n_iter": 5, "noise_std": 0.1}) == {
        "lam": "discrepancy",
        "n_iter": 5,
        "noise_std": 0.1,
    }
    assert medrecon.validate_options is validate_options
    with pytest.raises(ValueError, match=r"unknown method 'art'"):
        validate_options("art", {})
    with pytest.raises(
        ValueError, match=r"method 'tv' got unknown option\(s\) gamma; valid options: lam, n_iter"
    ):
        validate_options("tv", {"gamma": 0.1})
    assert method_defaults("tv")["init"] == "zeros" and method_defaults("dip")["lam"] == 0.0


@pytest.mark.parametrize(
    "name, old, new, value",
    [("flow", "gamma", "lam", 0.1), ("dip", "tv_weight", "lam", 1e-3), ("dip-tv", "tv_weight", "lam", 1e-3)],
)
def test_old_weight_names_are_deprecated_aliases_of_lam(name, old, new, value):
    assert old not in method_options(name) and new in method_options(name)
    assert validate_options(name, {old: value}) == {new: value}
    with pytest.raises(ValueError, match=rf"give '{new}' only"):
        validate_options(name, {old: value, new: value})


def test_deprecated_names_warn_and_reach_the_method(rng):
    op = Identity((6, 6), dtype=F64)
    y = torch.rand(1, 1, 6, 6, dtype=F64, generator=rng)
    with pytest.warns(DeprecationWarning, match=r"option 'tv_weight' is deprecated, use 'lam'"):
        x_old = medrecon.reconstruct(op, y, "dip-tv", tv_weight=0.5, n_iter=3, depth=1, channels=4)
    x_new = medrecon.reconstruct(op, y, "dip-tv", lam=0.5, n_iter=3, depth=1, channels=4)
    torch.testing.assert_close(x_old, x_new)
    with pytest.warns(DeprecationWarning, match=r"init='fbp' is deprecated, use 'direct'"):
        medrecon.reconstruct(op, y, "tv", init="fbp", n_iter=2)
    with pytest.warns(DeprecationWarning, match=r"init='zero' is deprecated, use 'zeros'"):
        x_zero = medrecon.reconstruct(op, y, "tv", init="zero", lam=0.1, n_iter=20)
    torch.testing.assert_close(x_zero, medrecon.reconstruct(op, y, "tv", lam=0.1, n_iter=20))


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("medrecon.priors.vae", "reconstruct_range", "medrecon.methods.vae"),
        ("medrecon.priors.vae", "reconstruct_soft", "medrecon.methods.vae"),
        ("medrecon.priors.flow", "reconstruct_flow", "medrecon.methods.flow"),
        ("medrecon.priors.gan", "reconstruct_csgm", "medrecon.methods.gan"),
        ("medrecon.priors.gan", "blend_measured", "medrecon.methods.gan"),
        ("medrecon.solvers.classical", "tv", "medrecon.methods.classical"),
        ("medrecon.solvers.classical", "sweep_weight", "medrecon.methods"),
        ("medrecon.solvers.classical", "discrepancy_weight", "medrecon.solvers.weights"),
    ],
)
def test_old_import_locations_still_work_with_a_warning(old, name, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=rf"{old}.{name} moved to {new}.{name}"):
        obj = getattr(importlib.import_module(old), name)
    assert obj is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        importlib.import_module(old).no_such_name  # noqa: B018


def test_methods_take_a_model_or_a_path_checked_against_the_image_size(tmp_path):
    from medrecon.priors import ConvVAE, DCGANPrior, MultiScaleFlow

    op = Identity((12, 12))
    y = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    models = [
        ("vae-range", ConvVAE(image_size=8, latent_dim=2, channels=(4,), hidden=8)),
        ("csgm", DCGANPrior(image_size=8, latent_dim=3, channels=(4,), d_channels=(4,))),
        ("flow", MultiScaleFlow(image_size=8, n_levels=1, n_checker=1, n_channel=1, hidden=4)),
    ]
    for name, model in models:
        with pytest.raises(ValueError, match=r"is for 1x8x8 images but the operator's images are 1x12x12"):
            medrecon.reconstruct(op, y, name, weights=model, n_iter=1)
    with pytest.raises(TypeError, match=r"weights must be a ConvVAE or a path to one, got a DCGANPrior"):
        medrecon.reconstruct(
            op,
            y,
            "vae-range",
            weights=DCGANPrior(image_size=8, latent_dim=3, channels=(4,), d_channels=(4,)),
            n_iter=1,
        )
    model = ConvVAE(image_size=12, latent_dim=2, channels=(4,), hidden=8)
    x = medrecon.reconstruct(op, y, "vae-range", weights=model, n_iter=2, restarts=1)
    assert x.shape == y.shape and not any(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------- registering a method
@pytest.fixture
def scratch_registry():
    from medrecon.methods import registry

    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_register_method_beside_the_function(scratch_registry):
    from medrecon.methods.registry import number

    @register_method("landweber", checks={"relax": number(0.0, strict=True, maximum=2.0)})
    def landweber(op, y, *, n_iter: int = 10, relax: float = 1.0, callback=None):
        x = torch.zeros(y.shape[0], y.shape[1], *op.in_shape, dtype=op.in_dtype)
        step = relax / op.norm_squared()
        for _ in range(n_iter):
            x = x - step * op.adjoint(op(x) - y)
        return x

    assert "landweber" in available_methods() and get_method("landweber") is landweber
    op = MatrixOperator(torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64))
    y = torch.tensor([[[4.0, 3.0]]], dtype=F64)
    x = medrecon.reconstruct(op, y, "landweber", n_iter=200)
    torch.testing.assert_close(x, y / torch.tensor([2.0, 1.0], dtype=F64))
    with pytest.raises(ValueError, match=r"option relax must be a finite number > 0 and <= 2, got 3"):
        medrecon.reconstruct(op, y, "landweber", relax=3)
    with pytest.raises(ValueError, match=r"option n_iter must be an integer >= 1"):  # the shared rule applies
        landweber(op, y, n_iter=0)
    with pytest.raises(ValueError, match=r"'landweber' is already registered"):
        register_method("landweber")(lambda op, y: y)
    with pytest.raises(ValueError, match=r"checks for options the function lacks: \['step'\]"):
        register_method("other", checks={"step": number()})(lambda op, y, *, n_iter=1: y)
    with pytest.raises(TypeError, match=r"give options_from= exactly when the function takes \*\*options"):
        register_method("other")(lambda op, y, **options: y)


def test_a_method_with_options_from_lists_them_once():
    import inspect

    from medrecon.priors.dip import fit_dip

    params = inspect.signature(get_method("dip")).parameters
    assert "tv_weight" not in params and params["lam"].default == 0.0
    shared = set(inspect.signature(fit_dip).parameters) - {"op", "y", "tv_weight"}
    assert shared <= set(params) and set(method_options("dip")) == shared | {"lam"}
    assert inspect.signature(get_method("dip-tv")).parameters["lam"].default == 1e-3


def test_no_warning_on_the_current_names(rng):
    op = Identity((4, 4), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = torch.rand(1, 1, 4, 4, dtype=F64, generator=rng)
        medrecon.reconstruct(op, y, "tv", init="direct", n_iter=2)
