"""Bundled default weights: chosen by image size and, where a size has one file per modality, by the
operator's kind (real -> CT, complex -> MRI); a missing entry is an error that names what is bundled."""

from __future__ import annotations

import pytest

from medrecon.operators import Identity, ParallelBeamCT, SingleCoilMRI, make_mask
from medrecon.priors.base import bundled_sizes, modality_of, resolve_weights
from medrecon.priors.flow import DEFAULT_WEIGHTS as FLOW_DEFAULTS
from medrecon.priors.vae import DEFAULT_WEIGHTS as VAE_DEFAULTS

TABLE = {28: "a28.pt", 128: {"ct": "c128.pt", "mri": "m128.pt"}, 256: {"ct": "c256.pt"}}


def test_modality_follows_the_operator_kind():
    assert modality_of(ParallelBeamCT(8, 4)) == "ct"
    assert modality_of(Identity((4, 4))) == "ct"
    assert modality_of(SingleCoilMRI(make_mask("equispaced", (8, 8), 4, 0.25, seed=0))) == "mri"


def test_resolve_picks_size_then_modality():
    assert resolve_weights(None, 28, TABLE, "VAE", modality="mri").name == "a28.pt"
    assert resolve_weights(None, 128, TABLE, "VAE", modality="ct").name == "c128.pt"
    assert resolve_weights(None, 128, TABLE, "VAE", modality="mri").name == "m128.pt"
    assert resolve_weights("mine.pt", 128, TABLE, "VAE", modality="mri").name == "mine.pt"


def test_missing_default_names_what_is_bundled():
    with pytest.raises(
        ValueError, match=r"no bundled VAE weights for mri images of 256x256 .*256x256 \(ct\)"
    ):
        resolve_weights(None, 256, TABLE, "VAE", modality="mri")
    with pytest.raises(ValueError, match="no bundled flow weights for 64x64 images"):
        resolve_weights(None, 64, TABLE, "flow", modality="ct")
    assert bundled_sizes(TABLE) == "28x28, 128x128 (ct, mri), 256x256 (ct)"


@pytest.mark.parametrize("defaults", [VAE_DEFAULTS, FLOW_DEFAULTS], ids=["vae", "flow"])
@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_real_anatomy_weights_are_the_128_defaults(defaults, modality):
    """A 128x128 CT or MRI problem needs no weights=: the prior trained by `medrecon train` on that
    modality's real train split is the default, with its card beside it."""
    path = resolve_weights(None, 128, defaults, "prior", modality=modality)
    assert path.name.endswith(f"_{modality}128.pt") and path.is_file()
    assert path.with_suffix(".md").is_file()


@pytest.mark.parametrize("modality", ["ct", "mri"])
def test_methods_use_the_modalitys_default(modality):
    """vae-range with no weights= on a 128x128 problem gives what weights=<that modality's file> gives."""
    import torch

    import medrecon

    op = (
        ParallelBeamCT(128, 4)
        if modality == "ct"
        else SingleCoilMRI(make_mask("equispaced", (128, 128), 4, 0.08, seed=0))
    )
    x = torch.zeros(1, 1, 128, 128)
    x[..., 40:90, 30:100] = 0.5
    y = op(x.to(op.in_dtype))
    opts = dict(n_iter=2, restarts=1)
    own = medrecon.reconstruct(op, y, "vae-range", generator=torch.Generator().manual_seed(0), **opts)
    path = resolve_weights(None, 128, VAE_DEFAULTS, "VAE", modality=modality)
    given = medrecon.reconstruct(
        op, y, "vae-range", weights=str(path), generator=torch.Generator().manual_seed(0), **opts
    )
    other = resolve_weights(None, 128, VAE_DEFAULTS, "VAE", modality="mri" if modality == "ct" else "ct")
    wrong = medrecon.reconstruct(
        op, y, "vae-range", weights=str(other), generator=torch.Generator().manual_seed(0), **opts
    )
    torch.testing.assert_close(own, given)
    assert not torch.allclose(own, wrong)
