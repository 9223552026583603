"""Sampling masks: fastMRI equality, stability across processes, RNG hygiene."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from fastmri.data.subsample import create_mask_for_mask_type

from medrecon.operators.masks import COLUMN_MASK_KINDS, MASK_KINDS, acs_columns, make_mask, stable_seed


@pytest.mark.parametrize("kind", COLUMN_MASK_KINDS)
@pytest.mark.parametrize("shape", [(7, 33), (8, 64), (5, 41)])
def test_matches_fastmri_for_the_same_seed(kind, shape):
    mask = make_mask(kind, shape, 4, 0.08, seed=123)
    ref, _ = create_mask_for_mask_type(kind, [0.08], [4])((1, *shape, 2), seed=123)
    assert mask.shape == shape and mask.dtype == torch.float32
    torch.testing.assert_close(mask, ref.reshape(1, shape[1]).expand(*shape))


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_seeded_mask_leaves_global_rng_untouched(kind):
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    a = make_mask(kind, (16, 20), 4, 0.1, seed=7)
    b = make_mask(kind, (16, 20), 4, 0.1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch_state, torch.get_rng_state())
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert torch.equal(a, make_mask(kind, (16, 20), 4, 0.1, seed=7))
    assert torch.equal(b, make_mask(kind, (16, 20), 4, 0.1, generator=torch.Generator().manual_seed(1)))


def test_unseeded_masks_are_random():
    g = torch.Generator().manual_seed(0)
    masks = {tuple(make_mask("random", (4, 64), 4, 0.08, generator=g)[0].tolist()) for _ in range(5)}
    assert len(masks) > 1


@pytest.mark.slow  # starts a fresh interpreter (imports torch): a few seconds
def test_validation_masks_are_stable_across_processes():
    seed = stable_seed("file1000001.h5", 17)
    assert seed == stable_seed("file1000001.h5", 17) != stable_seed("file1000001.h5", 18)
    mask = make_mask("random", (6, 40), 4, 0.1, seed=seed)
    code = (
        "from medrecon.operators.masks import make_mask, stable_seed;"
        "m = make_mask('random', (6, 40), 4, 0.1, seed=stable_seed('file1000001.h5', 17));"
        "print(stable_seed('file1000001.h5', 17), ''.join(str(int(v)) for v in m[0]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "random", "OMP_NUM_THREADS": "1", "PATH": ""},
    ).stdout.split()
    assert int(out[0]) == seed
    assert out[1] == "".join(str(int(v)) for v in mask[0])


@pytest.mark.parametrize("shape", [(32, 24), (31, 27)])
def test_gaussian2d(shape):
    mask = make_mask("gaussian2d", shape, 4, 0.2, seed=0)
    h, w = shape
    assert mask.shape == shape
    assert int(mask.sum()) == round(h * w / 4)
    ch, cw = round(h * 0.2), round(w * 0.2)
    h0, w0 = (h - ch + 1) // 2, (w - cw + 1) // 2
    assert bool(mask[h0 : h0 + ch, w0 : w0 + cw].all())
    assert mask[h // 2 - 4 : h // 2 + 4].mean() > mask[:4].mean()  # denser near the centre
    assert not torch.equal(mask, make_mask("gaussian2d", shape, 4, 0.2, seed=1))


@pytest.mark.parametrize("kind", COLUMN_MASK_KINDS)
def test_acceleration_and_acs(kind):
    mask = make_mask(kind, (4, 368), 4, 0.08, seed=0)
    assert mask.mean().item() == pytest.approx(0.25, abs=0.06)
    cols = acs_columns(mask)
    assert cols.stop - cols.start >= round(368 * 0.08)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown mask kind.*random"):
        make_mask("radial", (8, 8), 4, 0.1, seed=0)
    with pytest.raises(ValueError, match="integer acceleration"):
        make_mask("equispaced", (8, 32), 2.5, 0.1, seed=0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        make_mask("random", (8,), 4, 0.1, seed=0)
    with pytest.raises(ValueError, match="center_fraction"):
        make_mask("random", (8, 8), 4, 1.5, seed=0)
    with pytest.raises(ValueError, match="centre column"):
        acs_columns(torch.zeros(8))
