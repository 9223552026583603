"""Make the bundled CT test images in ``data/ct_test/`` (64x64 float32 .npy in [0, 1]).

    .venv/bin/python scripts/make_ct_test_images.py [--out data/ct_test] [--size 64]

* ``ellipses_0..3.npy``: ``medrecon.data.phantoms.random_ellipses(4, size, generator=Generator().manual_seed(HELD_OUT_SEED))``.
  The training data (``medrecon.data.datasets.EllipsesDataset``) seeds each phantom with
  ``zlib.crc32(f"ellipses/{seed}/{i}")``, so these come from a different random stream (held out).
* ``shepp_logan.npy``: ``medrecon.data.phantoms.shepp_logan(size)``.
* ``ct_small.npy``: the real CT slice CT_small.dcm that ships inside pydicom (``pydicom.examples.ct``,
  128x128, MIT-licensed pydicom test data), read in HU (``medrecon.data.dicom``), resized to
  ``size`` with anti-aliasing, then windowed to [-1000, 1000] HU and mapped linearly to [0, 1].

Deterministic: re-running writes identical files (the README card lists their SHA-256).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from medrecon.data.images import REPO_ROOT, load_images
from medrecon.utils_io import atomic_save_npy

HELD_OUT_SEED = 1_000_003  # not a training seed: training uses crc32-derived seeds per item
CT_WINDOW_HU = (-1000.0, 1000.0)


def make_images(size: int) -> dict[str, np.ndarray]:
    from medrecon.data.phantoms import random_ellipses, shepp_logan

    images: dict[str, np.ndarray] = {}
    g = torch.Generator().manual_seed(HELD_OUT_SEED)
    ellipses = random_ellipses(4, size, generator=g)  # (4, 1, size, size)
    for i in range(4):
        images[f"ellipses_{i}"] = ellipses[i, 0].numpy().astype(np.float32)
    images["shepp_logan"] = shepp_logan(size).numpy().astype(np.float32)
    ((_, ct),) = load_images("pydicom_example", size, name="ct", window=CT_WINDOW_HU)
    images["ct_small"] = ct.astype(np.float32)
    for name, img in images.items():
        if img.shape != (size, size) or not (0.0 <= img.min() and img.max() <= 1.0):
            raise RuntimeError(
                f"{name}: expected ({size}, {size}) in [0, 1], got {img.shape} in [{img.min()}, {img.max()}]"
            )
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "ct_test")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, img in make_images(args.size).items():
        path = atomic_save_npy(img, args.out / f"{name}.npy")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path.name:18s} {img.shape} min {img.min():.3f} max {img.max():.3f} sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
