"""ConvVAE, checked loading of weights, and the registered methods vae-range / vae-soft."""

from pathlib import Path

import pytest
import torch

import medrecon
from medrecon.operators import Identity
from medrecon.priors.base import CheckpointMismatchError, DensityPrior, GenerativePrior, load_prior
from medrecon.priors.vae import DEFAULT_WEIGHTS, ConvVAE, load_vae
from medrecon.training.run import export_weights

REPO = Path(__file__).resolve().parents[1]


def _tiny(size=8, latent=2, seed=0):
    torch.manual_seed(seed)
    return ConvVAE(image_size=size, latent_dim=latent, channels=(4,), hidden=8)


@pytest.mark.parametrize("size,channels", [(28, (4, 8)), (64, (4, 4, 8)), (12, (3,))])
def test_shapes_and_protocols(size, channels, rng):
    vae = ConvVAE(image_size=size, latent_dim=3, channels=channels, hidden=8)
    x = torch.rand(2, 1, size, size, generator=rng)
    out = vae(x, generator=rng)
    assert out["logits"].shape == x.shape and out["mu"].shape == (2, 3) and out["z"].shape == (2, 3)
    with torch.no_grad():
        g = vae.decode(vae.sample_latent(4, generator=rng))
    assert g.shape == (4, 1, size, size) and float(g.min()) >= 0 and float(g.max()) <= 1
    assert isinstance(vae, GenerativePrior) and isinstance(vae, DensityPrior)
    assert vae.neg_log_prob(x).shape == (2,)


def test_bad_sizes_are_clear():
    with pytest.raises(ValueError, match="divisible by 2\\*\\*len\\(channels\\) = 4"):
        ConvVAE(image_size=30, channels=(4, 8))
    with pytest.raises(ValueError, match="loss must be"):
        ConvVAE(image_size=8, channels=(4,), loss="l1")


def test_weights_round_trip_and_mismatch_messages(tmp_path):
    vae = _tiny()
    path = export_weights(vae, tmp_path / "w.pt")
    loaded = load_vae(path)
    for a, b in zip(vae.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    # another model class: named, with what was expected
    with pytest.raises(
        CheckpointMismatchError,
        match=r"expected weights of .*Identity.*found a checkpoint of "
        r"medrecon\.priors\.vae:ConvVAE",
    ):
        load_prior(path, expected=Identity)
    # same class, other shapes: hyperparameters and tensor shapes are listed
    from medrecon.priors.base import check_state_matches, read_checkpoint

    with pytest.raises(CheckpointMismatchError) as err:
        check_state_matches(_tiny(latent=3), read_checkpoint(path))
    msg = str(err.value)
    assert "latent_dim: expected 3, found 2" in msg and "to_mu.weight: expected (3, 8), found (2, 8)" in msg
    # not a medrecon file, or a truncated one
    torch.save({"state_dict": vae.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointMismatchError, match="not a medrecon checkpoint"):
        load_prior(tmp_path / "foreign.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointMismatchError, match="cannot read"):
        load_prior(tmp_path / "cut.pt")


def test_checkpoint_cannot_name_code_outside_medrecon(tmp_path):
    rec = torch.load(export_weights(_tiny(), tmp_path / "w.pt"), weights_only=True)
    rec["model_class"] = "os:system"
    torch.save(rec, tmp_path / "evil.pt")
    with pytest.raises(CheckpointMismatchError, match="only 'medrecon"):
        load_prior(tmp_path / "evil.pt")


def test_methods_run_on_identity_and_check_image_size(tmp_path, rng):
    path = str(export_weights(_tiny(), tmp_path / "w.pt"))
    op = Identity((8, 8))
    y = torch.rand(2, 1, 8, 8, generator=rng)
    calls = []
    x = medrecon.reconstruct(
        op,
        y,
        "vae-range",
        weights=path,
        n_iter=5,
        restarts=2,
        callback=lambda k, x, info: calls.append(k),
        generator=rng,
    )
    assert x.shape == y.shape and calls == list(range(5))
    x = medrecon.reconstruct(op, y, "vae-soft", weights=path, n_iter=3, z_steps=2)
    assert x.shape == y.shape
    with pytest.raises(ValueError, match="is for 1x8x8 images but the operator's images are 1x6x6"):
        medrecon.reconstruct(Identity((6, 6)), torch.rand(1, 1, 6, 6), "vae-range", weights=path)
    with pytest.raises(ValueError, match="no bundled VAE weights for 6x6"):
        medrecon.reconstruct(Identity((6, 6)), torch.rand(1, 1, 6, 6), "vae-soft")


def test_soft_range_with_identity_and_small_lam_keeps_the_data(tmp_path, rng):
    """A = I: the exact x-step makes x -> y as lam -> 0 (x = (y/||A||^2 + lam G(z)) / (1/||A||^2 + lam))."""
    path = str(export_weights(_tiny(), tmp_path / "w.pt"))
    op = Identity((8, 8))
    y = torch.rand(1, 1, 8, 8, generator=rng)
    x_small = medrecon.reconstruct(op, y, "vae-soft", weights=path, lam=1e-4, n_iter=5)
    torch.testing.assert_close(x_small, y, atol=1e-3, rtol=0)


def _bundled(defaults):
    """(size, path) for every bundled file of a DEFAULT_WEIGHTS table (sizes with one file per modality too)."""
    return [
        (size, p)
        for size, v in sorted(defaults.items())
        for p in (v.values() if isinstance(v, dict) else [v])
    ]


@pytest.mark.parametrize("size,rel", _bundled(DEFAULT_WEIGHTS))
def test_bundled_weights_load_and_have_cards(size, rel):
    path = REPO / rel
    vae = load_vae(path)
    assert vae.image_size == size
    assert path.stat().st_size < 5_000_000
    assert path.with_suffix(".md").exists()
    with torch.no_grad():
        assert vae.decode(torch.zeros(1, vae.latent_dim)).shape == (1, 1, size, size)


def test_augmented_slices_are_seeded_crops_of_the_source():
    """AugmentedSliceDataset (the 128 px real-CT training data): item i fixed by (seed, i), in [0, 1];
    with no crop, rotation or jitter an item is the area-resized slice or its mirror image."""
    from medrecon.data.datasets import AugmentedSliceDataset

    g = torch.Generator().manual_seed(0)
    src = torch.rand(3, 1, 16, 16, generator=g)
    ds = AugmentedSliceDataset(src, 8, 10, seed=4)
    assert len(ds) == 10 and torch.equal(ds[3], AugmentedSliceDataset(src, 8, 10, seed=4)[3])
    assert not torch.equal(ds[3], AugmentedSliceDataset(src, 8, 10, seed=5)[3])
    assert 0.0 <= float(ds[0].min()) and float(ds[0].max()) <= 1.0 and ds[0].shape == (1, 8, 8)
    plain = AugmentedSliceDataset(src, 8, 20, min_crop=1.0, max_rotation=0.0, jitter=0.0)
    pooled = torch.nn.functional.avg_pool2d(src, 2)  # (3, 1, 8, 8)
    for i in range(20):
        views = [v for k in range(3) for v in (pooled[k, 0], pooled[k, 0].flip(-1))]
        assert any(torch.allclose(plain[i][0], v, atol=1e-5) for v in views)
    val = AugmentedSliceDataset(src, 8, 1, augment=False)
    assert len(val) == 3 and torch.allclose(val[1], pooled[1], atol=1e-6)
    with pytest.raises(ValueError, match="square slices"):
        AugmentedSliceDataset(torch.rand(2, 1, 16, 12), 8, 4)
