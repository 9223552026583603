"""DCGAN prior: model shapes, the two-optimizer step inside ``fit``, checkpoints, the objectives of
Bora et al. (CSGM) and Yeh et al. (discriminator term), and blending."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import TensorDataset

import medrecon
from medrecon.methods.gan import _latent_search, blend_measured, reconstruct_csgm, reconstruct_gan_d
from medrecon.operators import Identity, MatrixOperator
from medrecon.priors.base import CheckpointMismatchError, check_state_matches, load_prior
from medrecon.priors.gan import DCGANPrior, gan_step, load_gan, make_optimizers, yeh_prior_term
from medrecon.training.fit import FitConfig, fit

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted(REPO.glob("configs/train_gan_*.yaml"))


def _tiny(seed: int = 0, **kw) -> DCGANPrior:
    torch.manual_seed(seed)  # tests may seed the global RNG for initialisation; library code never does
    params = dict(image_size=8, latent_dim=4, channels=(8, 8), d_channels=(4, 8), r1_gamma=1.0)
    params.update(kw)
    return DCGANPrior(**params)


def _cfg(**kw) -> FitConfig:
    base = dict(
        epochs=100,
        batch_size=8,
        lr=2e-3,
        seed=0,
        device="cpu",
        log_every=1,
        progress=False,
        tensorboard=False,
    )
    base.update(kw)
    return FitConfig(**base)


def _squares(n: int = 16) -> TensorDataset:
    x = torch.zeros(n, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 1.0
    return TensorDataset(x)


# ----------------------------------------------------------------------------- models
@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_shapes_of_configured_models(config):
    params = yaml.safe_load(config.read_text())["model"]["params"]
    gan = DCGANPrior(**params).eval()
    s, d = params["image_size"], params["latent_dim"]
    z = gan.sample_latent(3, generator=torch.Generator().manual_seed(0))
    assert tuple(z.shape) == (3, d) and gan.latent_shape == (d,)
    x = gan.decode(z)
    assert tuple(x.shape) == (3, 1, s, s)
    assert float(x.detach().min()) >= 0.0 and float(x.detach().max()) <= 1.0
    assert tuple(gan.discriminate(x).shape) == (3,)
    assert gan(x, mode="discriminate").shape == (3,) and torch.equal(gan(z), x)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="divisible by"):
        DCGANPrior(image_size=30, channels=(8, 8), d_channels=(8, 8))
    with pytest.raises(ValueError, match="d_channels"):
        DCGANPrior(image_size=28, channels=(8, 8), d_channels=(8,))


def test_library_does_not_touch_global_rng():
    gan = _tiny()
    state = torch.get_rng_state()
    gan.sample_latent(4, generator=torch.Generator().manual_seed(3))
    reconstruct_csgm(
        Identity((8, 8)),
        torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)),
        weights=gan,
        restarts=2,
        n_iter=3,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.equal(state, torch.get_rng_state())


# ----------------------------------------------------------------------------- training
def test_fit_gan_steps_change_both_nets():
    gan = _tiny()
    before = copy.deepcopy(gan.state_dict())
    res = fit(gan, gan_step, _squares(), _cfg(max_steps=4), optimizers=make_optimizers(gan, _cfg()))
    assert res.step == 4
    after = gan.state_dict()
    g_keys = [k for k in after if k.startswith(("g_fc", "g_conv")) and after[k].is_floating_point()]
    d_keys = [k for k in after if k.startswith(("d_conv", "d_fc"))]
    assert any(not torch.equal(before[k], after[k]) for k in g_keys if "running" not in k)
    assert all(not torch.equal(before[k], after[k]) for k in d_keys)
    assert {"loss_d", "loss_g", "r1", "d_real", "d_fake"} <= set(res.train_metrics)


def test_discriminator_loss_responds():
    """With G frozen (lr 0), D learns to tell the squares from G's blobs: its loss drops below log 4."""
    gan = _tiny()
    opts = make_optimizers(gan, _cfg(lr=1e-2))
    for group in opts["generator"].param_groups:
        group["lr"] = 0.0
    res = fit(gan, gan_step, _squares(), _cfg(max_steps=40, lr=1e-2), optimizers=opts)
    first, last = res.history[0]["loss_d"], res.history[-1]["loss_d"]
    assert first == pytest.approx(math.log(4.0), abs=0.15)  # D(x) ~ 1/2 at initialisation
    assert last < 0.5 * first
    assert res.history[-1]["d_real"] > 0.7 > 0.3 > res.history[-1]["d_fake"]


def test_lazy_r1_only_on_its_steps():
    gan = _tiny(r1_every=2)
    res = fit(gan, gan_step, _squares(), _cfg(max_steps=4), optimizers=make_optimizers(gan, _cfg()))
    r1 = [row["r1"] for row in res.history]
    assert r1[0] > 0 and r1[1] == 0 and r1[2] > 0 and r1[3] == 0


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    from medrecon.training.run import export_weights

    gan = _tiny()
    fit(
        gan,
        gan_step,
        _squares(),
        _cfg(max_steps=2),
        optimizers=make_optimizers(gan, _cfg()),
        out_dir=tmp_path / "run",
    )
    path = export_weights(gan, tmp_path / "gan.pt")
    loaded = load_gan(path)
    gan.eval()
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.decode(z), gan.decode(z), rtol=0, atol=0)
    x = gan.decode(z)
    torch.testing.assert_close(loaded.discriminate(x), gan.discriminate(x), rtol=0, atol=0)
    assert not any(p.requires_grad for p in loaded.parameters())
    # the training checkpoint (with both optimizers) loads too
    assert isinstance(load_prior(tmp_path / "run" / "checkpoint.pt", expected=DCGANPrior), DCGANPrior)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    from medrecon.priors.vae import ConvVAE
    from medrecon.training.run import export_weights

    path = export_weights(_tiny(), tmp_path / "gan.pt")
    other = _tiny(latent_dim=5)
    with pytest.raises(CheckpointMismatchError, match=r"latent_dim: expected 5, found 4"):
        check_state_matches(other, torch.load(path, weights_only=True))
    with pytest.raises(CheckpointMismatchError, match="expected weights of medrecon.priors.gan:DCGANPrior"):
        vae = ConvVAE(image_size=8, latent_dim=2, channels=(4,), hidden=8)
        load_gan(export_weights(vae, tmp_path / "vae.pt"))
    with pytest.raises(ValueError, match=r"is for 1x8x8 images but the operator's images are 1x12x12"):
        reconstruct_csgm(Identity((12, 12)), torch.zeros(1, 1, 12, 12), weights=path, n_iter=1)


# ----------------------------------------------------------------------------- objectives
def test_yeh_prior_term_closed_form():
    d = np.array([0.1, 0.5, 0.9, 1e-6])
    logits = torch.tensor(np.log(d / (1 - d)), dtype=torch.float64)
    z = torch.tensor([[1.0, 2.0], [0.0, 0.0], [-3.0, 0.5], [0.1, 0.1]], dtype=torch.float64)
    expected = np.log(1 - d) - np.log(d) + 0.5 * (z.numpy() ** 2).sum(1)
    np.testing.assert_allclose(yeh_prior_term(logits, z).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(yeh_prior_term(logits, z, d_weight=0.0).numpy(), 0.5 * (z.numpy() ** 2).sum(1))


def test_yeh_prior_term_with_a_known_discriminator_output():
    """D's last layer set to a constant D(x) = 0.3: the term is log(0.7) - log(0.3) + ||z||^2/2."""
    gan = _tiny().eval()
    with torch.no_grad():
        gan.d_fc.weight.zero_()
        gan.d_fc.bias.fill_(math.log(0.3 / 0.7))
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    got = yeh_prior_term(gan.discriminate(gan.decode(z)), z)
    want = math.log(0.7) - math.log(0.3) + 0.5 * z.pow(2).sum(1)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_csgm_identity_recovers_known_latent():
    gan = _tiny(seed=1).eval()
    z_true = gan.sample_latent(2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = gan.decode(z_true)
    op = Identity((8, 8))
    x, z, fit_ = _latent_search(
        op,
        y,
        gan,
        lam=0.0,
        d_weight=None,
        p=2.0,
        restarts=4,
        n_iter=150,
        lr=0.05,
        z_norm_bound=None,
        callback=None,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(fit_.max()) < 1e-4 * float(y.pow(2).sum(dim=(1, 2, 3)).min())  # loss near 0
    x2 = medrecon.reconstruct(
        op,
        y,
        "csgm",
        weights=gan,
        lam=0.0,
        restarts=4,
        n_iter=150,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(x2, x, rtol=0, atol=0)
    assert float((x2 - y).abs().max()) < 2e-2


def test_gan_d_complex_operator_and_z_bound():
    """A complex (MRI-like) identity: G's real output is cast; the projected z stays in its ball."""
    gan = _tiny(seed=1).eval()
    z_true = gan.sample_latent(1, generator=torch.Generator().manual_seed(5))
    y = gan.decode(z_true).detach().to(torch.complex64)
    op = Identity((8, 8), complex=True)
    seen = []
    x, z, _ = _latent_search(
        op,
        y,
        gan,
        lam=1e-3,
        d_weight=1.0,
        p=1.0,
        restarts=2,
        n_iter=20,
        lr=0.1,
        z_norm_bound=0.5,
        callback=lambda k, x, info: seen.append(info["z"].norm(dim=1)),
        generator=torch.Generator().manual_seed(0),
    )
    assert float(z.norm()) <= 0.5 + 1e-6 and max(float(s.max()) for s in seen) <= 0.5 + 1e-6
    assert len(seen) == 20 and not x.is_complex()
    xb = reconstruct_gan_d(op, y, weights=gan, restarts=1, n_iter=2, blend="copy")
    assert xb.dtype == torch.complex64 and torch.equal(xb, y)  # identity: everything is measured


def test_options_are_checked():
    gan = _tiny()
    y = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="restarts"):
        reconstruct_csgm(Identity((8, 8)), y, weights=gan, restarts=0)
    with pytest.raises(ValueError, match="z_norm_bound"):
        reconstruct_gan_d(Identity((8, 8)), y, weights=gan, z_norm_bound=-1.0)
    with pytest.raises(ValueError, match="unknown option"):
        medrecon.reconstruct(Identity((8, 8)), y, "gan-d", weights=gan, mu=1.0)


# ----------------------------------------------------------------------------- blending
def _inpainting(h=8, w=8, block=4):
    from medrecon.operators.restoration import Inpainting, center_block_mask

    return Inpainting(center_block_mask((h, w), block))


@pytest.mark.parametrize("mode", ["copy", "poisson"])
def test_blend_keeps_measured_pixels_exactly(mode, rng):
    op = _inpainting()
    x_true, x = torch.rand(2, 1, 8, 8, generator=rng), torch.rand(2, 1, 8, 8, generator=rng)
    y = op(x_true)
    out = blend_measured(op, x, y, mode)
    m = op.mask.bool().expand_as(x)
    assert torch.equal(out[m], x_true[m])
    if mode == "copy":
        assert torch.equal(out[~m], x[~m])
    else:  # the hole keeps x's gradients: out - x is harmonic inside, so it differs from a plain copy
        assert not torch.equal(out[~m], x[~m])


def test_blend_by_pixel_selection_and_rejects_other_operators(rng):
    keep = torch.tensor([0, 3, 5, 6])
    sel = MatrixOperator(torch.eye(9)[keep], in_shape=(3, 3), out_shape=(4,))  # A A^H = I
    x_true, x = torch.rand(1, 1, 3, 3, generator=rng), torch.rand(1, 1, 3, 3, generator=rng)
    out = blend_measured(sel, x, sel(x_true), "copy")
    assert torch.equal(out.flatten()[keep], x_true.flatten()[keep])
    others = [i for i in range(9) if i not in keep.tolist()]
    torch.testing.assert_close(out.flatten()[others], x.flatten()[others])
    blur = MatrixOperator(torch.rand(9, 9, generator=rng), in_shape=(3, 3), out_shape=(3, 3))
    with pytest.raises(ValueError, match="partial isometry"):
        blend_measured(blur, x, blur(x_true), "copy")
    with pytest.raises(ValueError, match="blend must be"):
        blend_measured(sel, x, sel(x_true), "median")


@pytest.mark.skipif(not (REPO / "data/weights/gan_mnist28.pt").exists(), reason="bundled weights not present")
def test_bundled_mnist_weights_are_the_default():
    from medrecon.operators.restoration import Inpainting, center_block_mask

    gan = load_gan(REPO / "data/weights/gan_mnist28.pt")
    assert gan.image_size == 28 and gan.latent_shape == (32,)
    op = Inpainting(center_block_mask((28, 28), 14))
    y = op(gan.decode(gan.sample_latent(1, generator=torch.Generator().manual_seed(0))))
    x = medrecon.reconstruct(
        op, y, "gan-d", restarts=1, n_iter=2, blend="copy", generator=torch.Generator().manual_seed(0)
    )  # no weights=: the bundled file
    measured = op.mask.bool().expand_as(x)
    assert x.shape == (1, 1, 28, 28) and torch.equal(x[measured], y[measured])
