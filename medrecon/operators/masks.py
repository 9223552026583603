"""k-space sampling masks: fastMRI's column masks (through ``fastmri.data.subsample``) and 2-D
variable-density masks.

``make_mask(kind, shape, acceleration, center_fraction, *, seed=None)`` returns a float32 ``(H, W)``
0/1 tensor. Column kinds (fastMRI, Zbontar et al. arXiv:1811.08839; "magic": Defazio,
arXiv:1912.01101) sample phase-encoding columns (the last axis, ``W``): ``random``, ``equispaced``,
``equispaced_fraction``, ``magic``, ``magic_fraction``. They are exactly fastMRI's masks: for a seed,
``make_mask`` equals ``create_mask_for_mask_type(kind, [cf], [acc])((1, H, W, 2), seed=seed)``
broadcast over rows. The 2-D kind ``gaussian2d`` samples ``round(H W / acceleration)`` points without
replacement with a Gaussian density (std ``VD_SIGMA_FRACTION`` of each axis), after a fully
sampled centre rectangle of ``center_fraction`` of each axis (the calibration region).

Randomness: a given ``seed`` makes the mask reproducible and touches no global RNG state
(fastMRI's ``MaskFunc`` draws from its own ``numpy.random.RandomState``, reseeded inside its
``temp_seed``). With ``seed=None`` a seed is drawn from ``generator`` (or, without one, from torch's
default generator, so that a run seeded once by the CLI is reproducible): training masks.
Validation masks are fixed per slice by ``stable_seed(fname, slice_idx)`` (``zlib.crc32``, the
same in every process; Python's ``hash()`` is salted per process).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["make_mask", "stable_seed", "MASK_KINDS", "COLUMN_MASK_KINDS", "acs_columns"]

COLUMN_MASK_KINDS = ("random", "equispaced", "equispaced_fraction", "magic", "magic_fraction")
MASK_KINDS = COLUMN_MASK_KINDS + ("gaussian2d",)

#: std of the 2-D Gaussian sampling density as a fraction of each k-space axis length.
VD_SIGMA_FRACTION = 0.25


def stable_seed(fname: str, slice_idx: int) -> int:
    """A seed for ``(file, slice)`` that is the same in every process: ``zlib.crc32(f"{fname}/{slice}")``."""
    return zlib.crc32(f"{fname}/{int(slice_idx)}".encode())


def _draw_seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def make_mask(
    kind: str,
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """An undersampling mask ``(H, W)`` float32 of 0/1.

    Args:
        kind: one of ``MASK_KINDS``.
        shape: ``(H, W)`` of the k-space (columns are the last axis).
        acceleration: undersampling factor (an integer for the equispaced and magic kinds).
        center_fraction: fraction of low-frequency columns (or, for ``gaussian2d``, of each axis)
            sampled fully, in [0, 1].
        seed: fixes the mask; ``None`` draws one from ``generator``.
        generator: used only when ``seed`` is None.

    >>> m = make_mask("equispaced", (8, 32), 4, 0.125, seed=0)
    >>> tuple(m.shape), int(m[0].sum()) == int(m[5].sum())
    ((8, 32), True)
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; valid kinds: {', '.join(MASK_KINDS)}")
    if len(shape) != 2 or any(int(s) <= 0 for s in shape):
        raise ValueError(f"mask shape must be (H, W) with positive sizes, got {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    if not acceleration >= 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if not 0.0 <= center_fraction <= 1.0:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction}")
    if seed is None:
        seed = _draw_seed(generator)
    if kind == "gaussian2d":
        return _gaussian2d(h, w, float(acceleration), float(center_fraction), int(seed))
    return _fastmri_columns(kind, w, acceleration, center_fraction, seed).expand(h, w).contiguous()


def _fastmri_columns(
    kind: str, n_cols: int, acceleration: float, center_fraction: float, seed: int
) -> Tensor:
    from fastmri.data.subsample import create_mask_for_mask_type

    if kind != "random":
        if float(acceleration) != int(acceleration):
            raise ValueError(f"mask kind {kind!r} needs an integer acceleration, got {acceleration}")
        acceleration = int(acceleration)
    func = create_mask_for_mask_type(kind, [center_fraction], [acceleration])
    mask, _ = func((1, 1, n_cols, 2), seed=seed)  # fastMRI's shape (..., rows, cols, 2) -> (1, 1, cols, 1)
    return mask.reshape(n_cols).to(torch.float32)


def _gaussian2d(h: int, w: int, acceleration: float, center_fraction: float, seed: int) -> Tensor:
    rng = np.random.default_rng(seed)  # local: no global state
    mask = np.zeros((h, w), dtype=bool)
    ch, cw = round(h * center_fraction), round(w * center_fraction)
    h0, w0 = (h - ch + 1) // 2, (w - cw + 1) // 2  # same centring as fastMRI's centre columns
    mask[h0 : h0 + ch, w0 : w0 + cw] = True
    n_target = max(round(h * w / acceleration), int(mask.sum()))
    n_more = n_target - int(mask.sum())
    if n_more > 0:
        ky = (np.arange(h) - h // 2) / (VD_SIGMA_FRACTION * h)
        kx = (np.arange(w) - w // 2) / (VD_SIGMA_FRACTION * w)
        density = np.exp(-0.5 * (ky[:, None] ** 2 + kx[None, :] ** 2))
        density[mask] = 0.0
        candidates = np.flatnonzero(density)
        p = density.ravel()[candidates]
        chosen = rng.choice(candidates, size=min(n_more, candidates.size), replace=False, p=p / p.sum())
        mask.ravel()[chosen] = True
    return torch.from_numpy(mask.astype(np.float32))


def acs_columns(mask: Tensor) -> slice:
    """The contiguous run of fully sampled columns around the centre ``W // 2`` (the ACS region).

    ``mask`` is ``(H, W)`` or ``(W,)``; a column counts when every row samples it. Raises
    ValueError when the centre column is not sampled.
    """
    cols = mask if mask.dim() == 1 else (mask != 0).all(dim=0)
    cols = cols != 0
    w = cols.shape[0]
    c = w // 2
    if not bool(cols[c]):
        raise ValueError("the mask does not sample the centre column: no auto-calibration (ACS) region")
    lo, hi = c, c + 1
    while lo > 0 and bool(cols[lo - 1]):
        lo -= 1
    while hi < w and bool(cols[hi]):
        hi += 1
    return slice(lo, hi)
