"""Tests of the normalizing-flow prior (medrecon.priors.flow): invertibility, exact log-determinants
(against slogdet of the autograd Jacobian), exact Gaussian likelihood at initialisation, training,
checked checkpoint loading, and the reconstruction method."""

import math
from types import SimpleNamespace

import pytest
import torch

from medrecon.methods.flow import reconstruct_flow
from medrecon.operators import DiagonalOperator, Identity, MatrixOperator
from medrecon.priors.base import CheckpointMismatchError, model_record
from medrecon.priors.flow import (
    ActNorm,
    AffineCoupling,
    InvConv1x1,
    LogitTransform,
    MultiScaleFlow,
    Squeeze,
    bits_per_dim,
    dequantize,
    flow_eval,
    flow_step,
    load_flow,
)

CONFIGS = {
    "realnvp": dict(actnorm=False, inv_conv="none", preprocess="none"),
    "glow-lu": dict(actnorm=True, inv_conv="lu", preprocess="logit"),
    "glow-plain": dict(actnorm=True, inv_conv="plain", preprocess="none"),
}


def _randomize(module: torch.nn.Module, rng: torch.Generator, scale: float = 0.3) -> torch.nn.Module:
    """Non-trivial parameters everywhere (the zero-initialised coupling outputs would hide errors)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("log_s") or name.endswith("logs"):
                p.add_(scale * torch.randn(p.shape, generator=rng, dtype=p.dtype))
            elif name.endswith("weight") and p.dim() == 2:  # plain 1x1 conv: keep it well conditioned
                p.add_(scale * torch.randn(p.shape, generator=rng, dtype=p.dtype))
            else:
                p.copy_(p + scale * torch.randn(p.shape, generator=rng, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(1)
    return module


def _flow(rng, size=4, **kw) -> MultiScaleFlow:
    defaults = dict(image_size=size, n_levels=2, n_checker=2, n_channel=2, hidden=6)
    defaults.update(kw)
    return _randomize(MultiScaleFlow(**defaults).double().eval(), rng)


def _jacobian_logdet(fn, x: torch.Tensor) -> float:
    """log|det J| of fn at x (one sample) from the dense autograd Jacobian."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.reshape(x.shape)).reshape(-1), x.reshape(-1))
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign != 0
    return float(logabs)


LAYERS = {
    "coupling-checkerboard-0": lambda: AffineCoupling(1, 5, "checkerboard", 0),
    "coupling-checkerboard-1": lambda: AffineCoupling(2, 5, "checkerboard", 1),
    "coupling-channel-0": lambda: AffineCoupling(4, 5, "channel", 0),
    "coupling-channel-1": lambda: AffineCoupling(4, 5, "channel", 1),
    "actnorm": lambda: ActNorm(4),
    "invconv-lu": lambda: InvConv1x1(4, "lu", generator=torch.Generator().manual_seed(3)),
    "invconv-plain": lambda: InvConv1x1(4, "plain", generator=torch.Generator().manual_seed(4)),
    "squeeze": lambda: Squeeze(),
}


def _layer_input(name, rng):
    if name in ("coupling-checkerboard-0", "squeeze"):
        shape = (1, 1, 4, 4)
    else:
        shape = (1, 2, 3, 4) if name == "coupling-checkerboard-1" else (1, 4, 2, 2)
    return torch.randn(shape, generator=rng, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_logdet_matches_jacobian(name, rng):
    layer = _randomize(LAYERS[name]().double().eval(), rng)
    x = _layer_input(name, rng)
    y, logdet = layer(x)
    assert logdet.shape == (1,)
    expected = _jacobian_logdet(lambda v: layer(v)[0], x)
    assert abs(logdet.item() - expected) <= 1e-9 * max(1.0, abs(expected))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_inverse(name, rng):
    layer = _randomize(LAYERS[name]().double().eval(), rng)
    x = _layer_input(name, rng).expand(3, -1, -1, -1).clone()
    x = x + torch.randn(3, 1, 1, 1, generator=rng, dtype=torch.float64)
    y, _ = layer(x)
    assert torch.allclose(layer.inverse(y), x, rtol=0, atol=1e-12)


def test_logit_logdet_and_inverse(rng):
    layer = LogitTransform(alpha=0.05)
    x = torch.rand(1, 1, 3, 3, generator=rng, dtype=torch.float64)
    y, logdet = layer(x)
    assert abs(float(logdet) - _jacobian_logdet(lambda v: layer(v)[0], x)) <= 1e-10
    assert abs(float(logdet) - float(layer.logdet_at_output(y))) <= 1e-10
    assert torch.allclose(layer.inverse(y), x, rtol=0, atol=1e-14)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_flow_logdet_matches_jacobian(config, rng):
    flow = _flow(rng, size=4, **CONFIGS[config])
    x = torch.rand(1, 1, 4, 4, generator=rng, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = flow(x)
    assert z.shape == (1, 16)
    expected = _jacobian_logdet(lambda v: flow(v)[0], x)
    assert abs(logdet.item() - expected) <= 1e-9 * max(1.0, abs(expected))


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_flow_inverse_recovers_input(config, rng):
    flow = _flow(rng, size=(8, 12), **CONFIGS[config])
    x = torch.rand(3, 1, 8, 12, generator=rng, dtype=torch.float64)
    z = flow.encode(x)
    assert torch.allclose(flow.decode(z), x, rtol=0, atol=1e-10)
    z2 = torch.randn(2, 96, generator=rng, dtype=torch.float64)
    # z -> u -> z before the logit's inverse (a sigmoid saturates in float for the large |u| that
    # random parameters produce, so the full z -> x -> z trip is not exact in general)
    assert torch.allclose(flow._flow_forward(flow._flow_inverse(z2))[0], z2, rtol=0, atol=1e-8)


@pytest.mark.parametrize("inv_conv", ["none", "lu", "plain"])
def test_identity_initialised_flow_gives_exact_gaussian_likelihood(inv_conv, rng):
    # Zero-initialised couplings, actnorm before its data init and random rotations for the 1x1
    # convolutions make f volume- and norm-preserving: log p(x) must be the N(0, I) log-density of x.
    flow = (
        MultiScaleFlow(image_size=8, n_levels=3, hidden=4, actnorm=True, inv_conv=inv_conv, preprocess="none")
        .double()
        .eval()
    )
    x = torch.randn(5, 1, 8, 8, generator=rng, dtype=torch.float64)
    closed_form = -0.5 * (x.pow(2).sum(dim=(1, 2, 3)) + 64 * math.log(2 * math.pi))
    # exact up to rounding; the rotations were drawn in float32, so they are orthogonal to ~1e-7 only
    rtol = 1e-12 if inv_conv == "none" else 1e-6
    assert torch.allclose(flow.log_prob(x), closed_form, rtol=rtol, atol=0)
    assert torch.allclose(flow.neg_log_prob(x), -closed_form, rtol=rtol, atol=0)


def test_map_objective_helper_matches_log_prob(rng):
    flow = _flow(rng, size=4, **CONFIGS["glow-lu"])
    x = torch.rand(2, 1, 4, 4, generator=rng, dtype=torch.float64)
    u = flow.preprocess(x)[0]
    assert torch.allclose(flow.neg_log_prob_preprocessed(u), flow.neg_log_prob(x), rtol=1e-10)


def test_bad_sizes_and_options_are_clear_errors():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*n_levels"):
        MultiScaleFlow(image_size=28, n_levels=3)
    with pytest.raises(ValueError, match="inv_conv"):
        MultiScaleFlow(image_size=8, inv_conv="bogus")
    flow = MultiScaleFlow(image_size=8, n_levels=2, hidden=4)
    with pytest.raises(ValueError, match="expects images of shape"):
        flow(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="expects latents of shape"):
        flow.decode(torch.zeros(1, 10))


def test_dequantize_and_bits_per_dim(rng):
    x = torch.tensor([[[[0.0, 1.0]]]])
    d = dequantize(x, generator=rng)
    assert bool(((d >= 0) & (d < 1)).all())
    assert d[0, 0, 0, 0] < 1 / 256 and d[0, 0, 0, 1] >= 255 / 256
    # uniform density on [0, 1]^D: -log p = 0 -> 8 bits per dimension
    assert float(bits_per_dim(torch.tensor(0.0), 10)) == pytest.approx(8.0)


def _blobs(n, size, rng):
    """Smooth random blobs in [0, 1]: a structured toy dataset."""
    i = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(i, i, indexing="ij")
    c = torch.rand(n, 2, generator=rng) - 0.5
    r = 0.2 + 0.3 * torch.rand(n, generator=rng)
    d2 = (xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2
    return torch.sigmoid((r[:, None, None] ** 2 - d2) * 40).unsqueeze(1)


@pytest.mark.slow
def test_training_steps_lower_the_nll(rng):
    torch.manual_seed(0)  # parameter init of nn.Conv2d only; the data and noise use generators
    flow = MultiScaleFlow(image_size=8, n_levels=2, n_checker=1, n_channel=1, hidden=8)
    data = _blobs(64, 8, rng)
    ctx = SimpleNamespace(
        optimizers={"model": torch.optim.Adam(flow.parameters(), lr=3e-3)},
        generator=torch.Generator().manual_seed(0),
    )
    flow.train()
    flow_step(flow, data[:32], ctx)  # first step: actnorm data-initialisation
    before = flow_eval(flow.eval(), data, SimpleNamespace(generator=torch.Generator().manual_seed(9)))["bpd"]
    flow.train()
    for k in range(20):
        flow_step(flow, data[(k % 2) * 32 : (k % 2 + 1) * 32], ctx)
    after = flow_eval(flow.eval(), data, SimpleNamespace(generator=torch.Generator().manual_seed(9)))["bpd"]
    assert after < before - 0.3, (before, after)


def _save_flow(tmp_path, name="flow.pt", **kw):
    defaults = dict(image_size=8, n_levels=2, n_checker=1, n_channel=1, hidden=4)
    defaults.update(kw)
    flow = MultiScaleFlow(**defaults)
    path = tmp_path / name
    torch.save(model_record(flow), path)
    return flow, path


def test_checkpoint_roundtrip_and_mismatch(tmp_path):
    flow, path = _save_flow(tmp_path)
    loaded = load_flow(path)
    assert all(torch.equal(a, b) for a, b in zip(flow.state_dict().values(), loaded.state_dict().values()))
    # hyperparameters that do not fit the stored tensors
    rec = torch.load(path, weights_only=True)
    rec["model_hparams"]["hidden"] = 8
    torch.save(rec, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        load_flow(tmp_path / "bad.pt")
    # a checkpoint of another model class
    rec = torch.load(path, weights_only=True)
    rec["model_class"] = "medrecon.priors.base:CheckpointMismatchError"
    torch.save(rec, tmp_path / "other.pt")
    with pytest.raises(
        CheckpointMismatchError, match="expected weights of medrecon.priors.flow:MultiScaleFlow"
    ):
        load_flow(tmp_path / "other.pt")
    # weights of the wrong image size for the operator
    with pytest.raises(ValueError, match="is for 1x8x8 images but the operator's images are 1x4x4"):
        reconstruct_flow(Identity((4, 4)), torch.rand(1, 1, 4, 4), weights=str(path), n_iter=1)


START = dict(n_iter=1, lr=1e-12)  # one step of negligible length: the starting image (n_iter=0 is an error)


def _residual(op, x, y):
    return float((op(x) - y).abs().pow(2).sum())


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
@pytest.mark.parametrize("mode", ["latent", "map"])
def test_reconstruct_flow_fits_the_data(tmp_path, rng, optimizer, mode):
    _, path = _save_flow(tmp_path)
    a = torch.randn(40, 64, generator=rng) / 8
    op = MatrixOperator(a, in_shape=(8, 8), out_shape=(40,))
    x_true = _blobs(2, 8, rng)
    y = op(x_true)
    seen = []
    x0 = reconstruct_flow(op, y, weights=str(path), init="zeros", mode=mode, **START)
    x = reconstruct_flow(
        op,
        y,
        weights=str(path),
        init="zeros",
        mode=mode,
        optimizer=optimizer,
        n_iter=15,
        lr=0.1 if optimizer == "adam" else 1.0,
        lam=1e-3,
        callback=lambda k, xk, info: seen.append(k),
    )
    assert x.shape == (2, 1, 8, 8) and x.dtype == torch.float32
    assert seen == list(range(15))
    assert _residual(op, x, y) < 0.5 * _residual(op, x0, y)


@pytest.mark.parametrize("init", ["inverse", "zeros", "random"])
def test_reconstruct_flow_inits_and_denoising_identity(tmp_path, rng, init):
    _, path = _save_flow(tmp_path)
    op = Identity((8, 8))
    x_true = _blobs(1, 8, rng) * 0.9 + 0.05
    steps = START if init == "inverse" else dict(n_iter=40, lr=0.1)
    x = reconstruct_flow(
        op, x_true, weights=str(path), init=init, generator=torch.Generator().manual_seed(0), **steps
    )
    if init == "inverse":  # G(G^{-1}(x0)) = x0 exactly: no representation error
        assert torch.allclose(x, x_true, atol=1e-5)
    else:  # any start moves to the data: the flow's range is everything
        x0 = reconstruct_flow(
            op, x_true, weights=str(path), init=init, generator=torch.Generator().manual_seed(0), **START
        )
        assert _residual(op, x, x_true) < 0.05 * _residual(op, x0, x_true)


def test_reconstruct_flow_complex_operator(tmp_path, rng):
    # MRI-like: a complex operator; the flow models the real (magnitude) image, x comes back complex.
    _, path = _save_flow(tmp_path)
    d = torch.complex(torch.randn(8, 8, generator=rng), torch.randn(8, 8, generator=rng))
    op = DiagonalOperator(d * (torch.rand(8, 8, generator=rng) > 0.3))
    x_true = _blobs(1, 8, rng).to(torch.complex64)
    y = op(x_true)
    x = reconstruct_flow(op, y, weights=str(path), init="inverse", n_iter=10)
    assert x.dtype == torch.complex64 and float(x.imag.abs().max()) == 0.0
    assert _residual(op, x, y) < _residual(op, torch.zeros_like(x), y)


def test_reconstruct_flow_rejects_bad_options(tmp_path):
    _, path = _save_flow(tmp_path)
    for bad in (dict(mode="x"), dict(init="x"), dict(optimizer="sgd")):
        with pytest.raises(ValueError, match=list(bad)[0]):
            reconstruct_flow(Identity((8, 8)), torch.rand(1, 1, 8, 8), weights=str(path), **bad)


@pytest.mark.parametrize("kind", ["inpainting", "denoising", "mri"])
def test_reconstruct_flow_on_restoration_and_mri_operators(tmp_path, rng, kind):
    from medrecon.operators.restoration import Denoising, Inpainting, random_pixel_mask

    _, path = _save_flow(tmp_path)
    x_true = _blobs(2, 8, rng) * 0.9 + 0.05
    if kind == "inpainting":
        op = Inpainting(random_pixel_mask((8, 8), 0.5, generator=rng))
    elif kind == "denoising":
        op = Denoising((8, 8))
    else:
        from medrecon.operators.mri import SingleCoilMRI

        mask = torch.zeros(8, 8)
        mask[:, ::2] = 1
        op = SingleCoilMRI(mask)
        x_true = x_true.to(torch.complex64)
    y = op(x_true)
    x0 = reconstruct_flow(op, y, weights=str(path), init="zeros", **START)
    for mode in ("latent", "map"):
        x = reconstruct_flow(op, y, weights=str(path), init="zeros", n_iter=20, lr=0.1, mode=mode, lam=1e-3)
        assert x.dtype == op.in_dtype and x.shape == x_true.shape
        assert _residual(op, x, y) < 0.5 * _residual(op, x0, y)


def test_flow_satisfies_the_prior_protocols():
    from medrecon.priors.base import DensityPrior, GenerativePrior

    flow = MultiScaleFlow(image_size=8, n_levels=2, hidden=4)
    assert isinstance(flow, GenerativePrior) and isinstance(flow, DensityPrior)
    z = flow.sample_latent(3, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, *flow.latent_shape) and flow.decode(z).shape == (3, 1, 8, 8)


@pytest.mark.slow
def test_train_from_config_registers_the_flow(tmp_path):
    # the one training loop (medrecon.training.fit via train_from_config), model name "flow"
    from medrecon.training import train_from_config

    weights = tmp_path / "flow.pt"
    cfg = {
        "model": {
            "name": "flow",
            "params": {"image_size": 16, "n_levels": 2, "n_checker": 1, "n_channel": 1, "hidden": 8},
        },
        "data": {"name": "ellipses", "n": 32, "val_n": 8, "seed": 0},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "device": "cpu",
            "progress": False,
            "tensorboard": False,
            "log_every": 2,
        },
        "output": {"weights": str(weights)},
    }
    assert train_from_config(cfg, [], tmp_path / "run") == 0
    flow = load_flow(weights)
    assert flow.hparams["image_size"] == 16 and all(
        bool(m.initialized) for m in flow.modules() if isinstance(m, ActNorm)
    )
    rec = torch.load(weights, weights_only=True)
    assert math.isfinite(rec["metadata"]["val"]["bpd"])
