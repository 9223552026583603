"""Build data/fastmri_sample/: a tiny multi-coil fastMRI-layout file from a real MR image.

Source: pydicom's bundled test image MR_small (``pydicom.examples.mr``, 64x64, MIT licence).
Slices: the image itself and two neighbours made by sub-pixel shifts and a small rotation
(so the "volume" varies between slices), each given a smooth phase (a linear plus quadratic ramp,
as real MR images have). Coils: ``medrecon.operators.coils.simulate_multicoil`` (8 Biot-Savart-like
coils, sum of squares 1) with complex Gaussian noise, seeded. The readout axis is oversampled
(8 zero rows above and below -> 80x64 k-space) and the reconstruction size is 64x64, so cropping
matters as in real fastMRI data. Deterministic: running it twice gives identical arrays.

    python scripts/make_fastmri_sample.py [--out data/fastmri_sample]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medrecon.data.fastmri import write_fastmri_h5
from medrecon.operators.coils import simulate_multicoil

SEED = 20240601
N_COILS = 8
NOISE = 0.01  # std per complex k-space sample, image max = 1
PAD_ROWS = 8  # readout oversampling: 64 -> 80 rows
FNAME = "file_mr_small_multicoil.h5"


def make_volume() -> np.ndarray:
    from pydicom import examples

    image = examples.mr.pixel_array.astype(np.float64)
    image = image / image.max()
    slices = [
        image,
        ndimage.shift(ndimage.rotate(image, 3.0, reshape=False, order=3), (0.5, -0.7), order=3),
        ndimage.shift(ndimage.rotate(image, -3.0, reshape=False, order=3), (-0.6, 0.4), order=3),
    ]
    vol = np.clip(np.stack(slices), 0.0, None)  # (3, 64, 64)
    h, w = vol.shape[-2:]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    phase = 0.6 * xx - 0.4 * yy + 0.5 * (xx**2 + yy**2)
    vol = vol * np.exp(1j * phase)
    return np.pad(vol, ((0, 0), (PAD_ROWS, PAD_ROWS), (0, 0)))  # (3, 80, 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "fastmri_sample"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vol = torch.from_numpy(make_volume()).to(torch.complex64)[:, None]  # (3, 1, 80, 64)
    kspace, _ = simulate_multicoil(vol, N_COILS, noise=NOISE, generator=torch.Generator().manual_seed(SEED))
    path = write_fastmri_h5(
        Path(args.out) / FNAME,
        kspace[:, 0],
        recon_size=(64, 64),
        acquisition="AXT2",
        patient_id="pydicom-MR_small",
        attrs={"medrecon_seed": SEED, "medrecon_noise": NOISE},
    )
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
