"""Multi-coil MRI data as fastMRI users meet it, simulated from magnitude images.

The real MRI corpora (:mod:`medrecon.data.real`: Colin27 = train, MNI152 = validation) are magnitude
images without k-space. This module turns a stack of them into a fastMRI multi-coil volume at the
real sizes:

* **phase:** each slice gets a smooth, seeded random phase (:func:`smooth_random_phase`): real MR
  images have phase from B0 inhomogeneity, receive-chain delays and the coil combination; a
  magnitude-only source would give real images, which no real scan does;
* **geometry:** the ``320 x 320`` image sits in the centre of a ``640 x 368`` grid (fastMRI's knee
  k-space size: the readout, axis ``H``, oversampled by 2; 368 phase encodes, axis ``W``), so
  ``ifft2c(kspace)`` cropped to ``320 x 320`` is the image, as in fastMRI;
* **coils:** 15 smooth simulated receive coils placed around the ``320 x 320`` head
  (:func:`medrecon.operators.coils.coil_maps` with ``field_of_view=(320, 320)``, ``sum_c |S_c|^2 = 1``);
* **noise:** complex white Gaussian noise of standard deviation ``noise`` per k-space sample and coil
  (``fft2c`` is orthonormal, so also per pixel of each coil image), in units of the image maximum;
* **file:** :func:`write_fastmri_multicoil_volume` writes it with the project's writer
  (:func:`medrecon.data.fastmri.write_fastmri_h5`): ``kspace (slices, 15, 640, 368)`` complex64,
  ``reconstruction_rss (slices, 320, 320)`` (the root-sum-of-squares of the fully sampled coil images,
  centre-cropped, as fastMRI made its targets), ``ismrmrd_header`` (encoded 640 x 368, recon 320 x 320)
  and the attributes ``acquisition``, ``max``, ``norm``, ``patient_id``. ``fastmri.data.SliceDataset``
  reads it and derives ``padding_left``/``padding_right``/``encoding_size``/``recon_size`` from the header.

Command line (writes one volume per split, see ``--help``)::

    python -m medrecon.data.mri_sim --out data/fastmri_fullsize --slices 4

Randomness: every random draw (phase, noise) comes from a ``torch.Generator`` argument; nothing
seeds or reads torch's global generator.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_NOISE",
    "FASTMRI_COILS",
    "FASTMRI_KSPACE_SHAPE",
    "FASTMRI_RECON_SIZE",
    "PHASE_AMPLITUDE",
    "PHASE_MAX_FREQUENCY",
    "crop_readout",
    "simulate_fastmri_multicoil",
    "smooth_random_phase",
    "write_fastmri_multicoil_volume",
]

#: fastMRI knee k-space: 640 readout samples (oversampled by 2) x 368 phase encodes.
FASTMRI_KSPACE_SHAPE = (640, 368)
#: fastMRI's reconstruction (target) size.
FASTMRI_RECON_SIZE = (320, 320)
#: coils of a fastMRI knee acquisition (brain volumes have 4 to 20, most 16).
FASTMRI_COILS = 15
#: highest spatial frequency of the random phase, in cycles across the image (a smooth field).
PHASE_MAX_FREQUENCY = 2
#: the random phase spans about +-pi around its (random) mean: the largest deviation is pi.
PHASE_AMPLITUDE = math.pi
#: k-space noise std per sample and coil, in units of the image maximum (gives an RSS background of
#: about sqrt(15) * 0.004 = 1.5 % of the maximum, a visible noise floor as in fastMRI's targets).
DEFAULT_NOISE = 0.004


def _fresh_generator() -> torch.Generator:
    """A generator seeded from the OS (non-deterministic), leaving torch's global generator alone."""
    gen = torch.Generator()
    gen.seed()
    return gen


def smooth_random_phase(
    shape: tuple[int, int],
    *,
    max_frequency: int = PHASE_MAX_FREQUENCY,
    amplitude: float = PHASE_AMPLITUDE,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """A smooth random phase ``phi (H, W)`` in radians.

    ``phi(r) = phi_0 + amplitude * f(r) / max|f|`` with ``f(r) = Re sum_k c_k exp(2 pi i <k, r>)`` over
    the integer frequencies ``k = (k_y, k_x)``, ``|k_y|, |k_x| <= max_frequency`` cycles per image
    (``r`` in ``[-1/2, 1/2)^2``), complex Gaussian ``c_k`` with standard deviation ``1 / (1 + |k|^2)``
    (smoother than white), and ``phi_0`` uniform in ``[-pi, pi)``. So the phase varies by up to
    ``2 * amplitude`` across the image but only over the scale of the image divided by ``max_frequency``.
    Draws from ``generator`` only (None: a generator seeded from the OS, never torch's global one).

    >>> phi = smooth_random_phase((8, 6), generator=torch.Generator().manual_seed(0))
    >>> tuple(phi.shape), bool((phi - phi.mean()).abs().max() <= 2 * math.pi)
    ((8, 6), True)
    """
    if max_frequency < 1:
        raise ValueError(f"max_frequency must be >= 1, got {max_frequency}")
    if not amplitude >= 0:
        raise ValueError(f"amplitude must be >= 0, got {amplitude}")
    gen = generator if generator is not None else _fresh_generator()
    h, w = shape
    ks = torch.arange(-max_frequency, max_frequency + 1, dtype=torch.float64)
    ky, kx = torch.meshgrid(ks, ks, indexing="ij")  # (n, n)
    std = 1.0 / (1.0 + ky**2 + kx**2)
    coef = (
        torch.complex(
            torch.randn(ky.shape, generator=gen, dtype=torch.float64),
            torch.randn(ky.shape, generator=gen, dtype=torch.float64),
        )
        * std
    )
    offset = (torch.rand((), generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
    y = (torch.arange(h, dtype=torch.float64) - h // 2) / h
    x = (torch.arange(w, dtype=torch.float64) - w // 2) / w
    ey = torch.exp(2j * math.pi * ky[:, 0, None] * y[None, :])  # (n, H)
    ex = torch.exp(2j * math.pi * kx[0, :, None] * x[None, :])  # (n, W)
    field = torch.einsum("ab,ay,bx->yx", coef, ey, ex).real
    field = field - field.mean()
    field = field / field.abs().max().clamp_min(1e-12)
    return (offset + amplitude * field).to(dtype)


def crop_readout(kspace: Tensor, rows: int) -> Tensor:
    """Remove readout oversampling: ``(..., H, W) -> (..., rows, W)`` k-space whose image is the centre.

    ``ifft2c`` of the result equals the centre ``rows`` rows of ``ifft2c(kspace)`` (cut where
    ``fastmri.data.transforms.center_crop`` cuts): a centred orthonormal inverse FFT along the readout
    (axis -2, always fully sampled), the crop, and the FFT back. Exact, and white noise stays white of
    the same standard deviation. Column (phase-encode) masks are unchanged. fastMRI's 640-sample readout
    holds the 320 x 320 target in its centre half, so ``crop_readout(k, 320)`` halves every FFT.
    """
    h = kspace.shape[-2]
    if not 0 < rows <= h:
        raise ValueError(f"crop_readout: rows must be in [1, {h}], got {rows}")
    img = torch.fft.fftshift(
        torch.fft.ifft(torch.fft.ifftshift(kspace, dim=-2), dim=-2, norm="ortho"), dim=-2
    )
    top = (h - rows) // 2
    img = img[..., top : top + rows, :]
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(img, dim=-2), dim=-2, norm="ortho"), dim=-2)


def _embed(images: Tensor, shape: tuple[int, int]) -> Tensor:
    """Zero-pad ``(..., h, w)`` into the centre of ``(..., H, W)`` (fastMRI's centre crop is the inverse)."""
    h, w = images.shape[-2:]
    big_h, big_w = shape
    if h > big_h or w > big_w:
        raise ValueError(f"images of size {(h, w)} do not fit in the k-space grid {shape}")
    out = images.new_zeros((*images.shape[:-2], big_h, big_w))
    top, left = (big_h - h) // 2, (big_w - w) // 2  # where fastmri.data.transforms.center_crop cuts
    out[..., top : top + h, left : left + w] = images
    return out


def simulate_fastmri_multicoil(
    images: Tensor,
    *,
    kspace_shape: tuple[int, int] = FASTMRI_KSPACE_SHAPE,
    n_coils: int = FASTMRI_COILS,
    noise: float = DEFAULT_NOISE,
    phase: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fully sampled multi-coil k-space of magnitude images, fastMRI geometry: ``(kspace, maps, images)``.

    Args:
        images: ``(slices, h, w)`` or ``(slices, 1, h, w)`` real magnitudes (any scale; the noise is
            relative to their maximum). ``h x w`` is the reconstruction size (320 x 320 in fastMRI).
        kspace_shape: ``(H, W)`` of the k-space grid; the images sit in its centre.
        n_coils: receive coils, placed around the ``h x w`` field of view.
        noise: complex noise std per k-space sample and coil, relative to ``images.max()``.
        phase: multiply each slice by ``exp(i smooth_random_phase)``; False keeps the images real.
        generator: draws the phases (one per slice, in slice order) and then the noise.

    Returns:
        ``kspace (slices, coils, H, W)`` complex64, ``maps (coils, H, W)`` complex64 (the true
        sensitivities), and the complex images ``(slices, h, w)`` complex64 (magnitude times phase).
    """
    if (
        not isinstance(images, Tensor)
        or images.is_complex()
        or images.dim() not in (3, 4)
        or (images.dim() == 4 and images.shape[1] != 1)
    ):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(
            f"simulate_fastmri_multicoil: images must be real (slices, h, w) or (slices, 1, h, w), got {shape}"
        )
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    from medrecon.operators.coils import coil_maps
    from medrecon.operators.mri import fft2c

    gen = generator if generator is not None else _fresh_generator()
    mags = images.reshape(images.shape[0], *images.shape[-2:]).to(torch.float64)
    h, w = mags.shape[-2:]
    if phase:
        phases = torch.stack([smooth_random_phase((h, w), generator=gen) for _ in range(mags.shape[0])])
        x = torch.polar(mags, phases)
    else:
        x = mags.to(torch.complex128)
    maps = coil_maps(tuple(kspace_shape), n_coils, field_of_view=(h, w), dtype=torch.complex64)
    scale = float(mags.max()) if float(mags.max()) > 0 else 1.0
    kspace = torch.empty((x.shape[0], n_coils, *kspace_shape), dtype=torch.complex64)
    for s in range(x.shape[0]):  # one slice at a time: 15 x 640 x 368 complex128 is 56 MB
        k = fft2c(_embed(x[s], tuple(kspace_shape))[None] * maps.to(torch.complex128))  # (coils, H, W)
        if noise > 0:
            n = torch.randn((*k.shape, 2), generator=gen, dtype=torch.float64)
            k = k + torch.view_as_complex(n) * (noise * scale / math.sqrt(2))
        kspace[s] = k.to(torch.complex64)
    return kspace, maps, x.to(torch.complex64)


def write_fastmri_multicoil_volume(
    path: str | os.PathLike,
    images: Tensor,
    *,
    patient_id: str,
    acquisition: str = "AXT1",
    recon_size: tuple[int, int] = FASTMRI_RECON_SIZE,
    kspace_shape: tuple[int, int] = FASTMRI_KSPACE_SHAPE,
    n_coils: int = FASTMRI_COILS,
    noise: float = DEFAULT_NOISE,
    phase: bool = True,
    generator: torch.Generator | None = None,
) -> Path:
    """Simulate (:func:`simulate_fastmri_multicoil`) and write one fastMRI multi-coil volume; returns the path.

    ``images (slices, h, w)`` must be ``recon_size``; the file is written atomically by
    :func:`medrecon.data.fastmri.write_fastmri_h5` with the RSS target and ``acquisition`` (fastMRI
    brain: AXT1, AXT1PRE, AXT1POST, AXT2, AXFLAIR).
    """
    from .fastmri import write_fastmri_h5

    mags = images.reshape(images.shape[0], *images.shape[-2:])
    if tuple(mags.shape[-2:]) != tuple(recon_size):
        raise ValueError(f"images must be {tuple(recon_size)} (the recon size), got {tuple(mags.shape[-2:])}")
    kspace, _, _ = simulate_fastmri_multicoil(
        mags, kspace_shape=kspace_shape, n_coils=n_coils, noise=noise, phase=phase, generator=generator
    )
    return write_fastmri_h5(
        path, kspace, recon_size=tuple(recon_size), acquisition=acquisition, patient_id=patient_id
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medrecon.data.mri_sim``: one fastMRI multi-coil volume per split of the real MRI corpus."""
    parser = argparse.ArgumentParser(prog="python -m medrecon.data.mri_sim", description=main.__doc__)
    parser.add_argument("--out", required=True, help="output folder (one <split>/<subject>.h5 per split)")
    parser.add_argument("--slices", type=int, default=4, help="slices per volume, evenly spaced (default 4)")
    parser.add_argument(
        "--splits", nargs="+", default=["validation", "train"], choices=["train", "validation"]
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the phase and noise generator")
    parser.add_argument("--noise", type=float, default=DEFAULT_NOISE)
    parser.add_argument("--coils", type=int, default=FASTMRI_COILS)
    args = parser.parse_args(argv)
    import zlib

    from .real import load_corpus

    for split in args.splits:
        corpus = load_corpus("mri", split, size=FASTMRI_RECON_SIZE[0], slices=args.slices)
        subject = corpus.ids[0].split(":")[0]
        gen = torch.Generator().manual_seed(zlib.crc32(f"{args.seed}/{subject}".encode()))
        path = Path(args.out) / split / f"{subject}.h5"
        write_fastmri_multicoil_volume(
            path, corpus.images, patient_id=subject, n_coils=args.coils, noise=args.noise, generator=gen
        )
        print(
            f"{path}: {len(corpus.ids)} slices ({', '.join(corpus.ids)}), {args.coils} coils, "
            f"k-space {FASTMRI_KSPACE_SHAPE}, target {FASTMRI_RECON_SIZE}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
