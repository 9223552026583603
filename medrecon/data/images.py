"""Ground-truth images for experiments: load from the supported sources, crop/resize to ``size x size``
and normalise to [0, 1] (float32 numpy arrays; the CLI turns them into tensors).

Sources (``kind``):

* ``ct_test``: every ``.npy`` in the bundled ``data/ct_test/`` (see its README card), sorted by name;
* ``shepp_logan``: the Shepp-Logan phantom (``medrecon.data.phantoms.shepp_logan``);
* ``ellipses``: ``n`` random-ellipse phantoms from ``torch.Generator().manual_seed(seed)``;
* ``npy`` / ``png``: one image file (``.npy`` 2-D array; PNG/JPEG/TIFF via Pillow, converted to grey);
* ``dicom``: one DICOM slice (:func:`medrecon.data.dicom.read_dicom_slice`, in HU);
* ``pydicom_example``: a test image that ships inside pydicom (``name``: ``ct`` = CT_small, ``mr`` =
  MR_small; MIT-licensed pydicom test data);
* ``fastmri``: slices of a fastMRI HDF5 file: ``reconstruction_rss`` (multi-coil) or
  ``reconstruction_esc`` (single-coil) when present, else the root-sum-of-squares of the inverse
  FFT of ``kspace``;
* ``real_ct`` / ``real_mri``: slices of the real scans fetched by ``make data``
  (:func:`medrecon.data.real.load_corpus`, already converted to [0, 1]): ``split`` ``train`` or
  ``validation`` (default), ``slices`` ``n`` evenly spaced slices of the split (or a list of positions
  in the split's list, ``data/splits/``), every slice when omitted.

Non-square images are centre-cropped to a square, then resized with anti-aliasing
(``skimage.transform.resize``, order 1); then normalised: with ``window=(lo, hi)`` values are
clipped to the window and mapped linearly to [0, 1] (e.g. ``[-1000, 1000]`` HU for CT); otherwise min-max per image, except for sources that are
already in [0, 1] (``ct_test``, phantoms, and ``.npy`` arrays whose values lie in [0, 1]), kept as they are.
Relative paths are looked up from the working directory first, then from the repository root.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["IMAGE_KINDS", "ImageLoadError", "load_images", "normalize", "resize_square", "resolve_path",
           "REPO_ROOT", "CT_TEST_DIR"]

IMAGE_KINDS = ("ct_test", "shepp_logan", "ellipses", "npy", "png", "dicom", "pydicom_example", "fastmri",
               "real_ct", "real_mri")
REAL_KINDS = {"real_ct": "ct", "real_mri": "mri"}  # image kind -> modality of medrecon.data.real
REPO_ROOT = Path(__file__).resolve().parents[2]
CT_TEST_DIR = REPO_ROOT / "data" / "ct_test"


class ImageLoadError(ValueError):
    """An image source cannot be loaded (missing file, wrong format, bad options)."""


def resolve_path(path: str | Path) -> Path:
    """``path`` as given if it exists, else relative to the repository root; an error naming both otherwise."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        if not p.exists():
            raise ImageLoadError(f"{p} does not exist")
        return p
    alt = REPO_ROOT / p
    if alt.exists():
        return alt
    raise ImageLoadError(f"{path} does not exist (looked in {Path.cwd()} and {REPO_ROOT})")


def normalize(image: np.ndarray, window: Sequence[float] | None = None) -> np.ndarray:
    """Map to [0, 1]: clip to ``window`` and scale linearly, or min-max without a window."""
    image = np.asarray(image, dtype=np.float64)
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise ImageLoadError(f"window must be (lo, hi) with hi > lo, got {tuple(window)}")
    else:
        lo, hi = float(image.min()), float(image.max())
        if hi <= lo:
            return np.zeros(image.shape, dtype=np.float32)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to ``(size, size)`` with anti-aliasing (values clipped to the input range)."""
    from skimage.transform import resize

    h, w = image.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    image = image[top:top + s, left:left + s]
    if s == size:
        return image.astype(np.float32)
    out = resize(image.astype(np.float64), (size, size), order=1, anti_aliasing=s > size, preserve_range=True)
    return np.clip(out, image.min(), image.max()).astype(np.float32)


def _as_2d(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ImageLoadError(f"{what}: expected a 2-D image, got shape {a.shape}")
    if np.iscomplexobj(a):
        a = np.abs(a)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageLoadError(f"{what}: contains NaN or inf")
    return a


def _read_fastmri(path: Path, slices: Sequence[int] | None) -> list[tuple[str, np.ndarray]]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ImageLoadError(f"{path} is not a readable HDF5 file ({exc})") from None
    with f:
        key = next((k for k in ("reconstruction_rss", "reconstruction_esc") if k in f), None)
        if key is None and "kspace" not in f:
            raise ImageLoadError(f"{path}: no 'reconstruction_rss', 'reconstruction_esc' or 'kspace' dataset")
        n = f[key].shape[0] if key else f["kspace"].shape[0]
        chosen = list(range(n)) if slices is None else list(slices)
        out = []
        for s in chosen:
            if not -n <= s < n:
                raise ImageLoadError(f"{path}: slice {s} out of range (the file has {n} slices)")
            if key is not None:
                img = np.asarray(f[key][s])
            else:
                k = np.asarray(f["kspace"][s])  # (coils, H, W) or (H, W) complex
                coil = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
                img = np.sqrt((np.abs(coil) ** 2).sum(0)) if coil.ndim == 3 else np.abs(coil)
            out.append((f"{path.stem}_s{s % n}", _as_2d(img, f"{path}[{s}]")))
    return out


def _real_images(kind: str, split: str | None, slices: int | Sequence[int] | None,
                 size: int) -> list[tuple[str, np.ndarray]]:
    from .real import RealDataError, load_corpus

    try:
        if slices is None or isinstance(slices, int):
            images, ids = load_corpus(REAL_KINDS[kind], split or "validation", size=size, slices=slices)
        else:
            images, ids = load_corpus(REAL_KINDS[kind], split or "validation", size=size)
            if any(not -len(ids) <= i < len(ids) for i in slices):
                raise ImageLoadError(f"{kind}: slices {list(slices)} out of range (the split has {len(ids)})")
            images, ids = images[list(slices)], [ids[i] for i in slices]
    except RealDataError as exc:
        raise ImageLoadError(f"{kind}: {exc}") from None
    return [(i.replace(":", "_s"), img[0].numpy().astype(np.float64)) for i, img in zip(ids, images)]


def _raw_images(kind: str, *, path: str | None, name: str | None, n: int, seed: int,
                slices: Sequence[int] | None, size: int, split: str | None = None) -> list[tuple[str, np.ndarray]]:
    if kind in REAL_KINDS:
        return _real_images(kind, split, slices, size)
    if kind == "ct_test":
        folder = resolve_path(path) if path else CT_TEST_DIR
        files = sorted(folder.glob("*.npy"))
        if not files:
            raise ImageLoadError(f"no .npy images in {folder}")
        return [(f.stem, _as_2d(np.load(f, allow_pickle=False), str(f))) for f in files]
    if kind == "shepp_logan":
        from medrecon.data.phantoms import shepp_logan

        return [("shepp_logan", shepp_logan(size).numpy().astype(np.float64))]
    if kind == "ellipses":
        import torch

        from medrecon.data.phantoms import random_ellipses

        if n < 1:
            raise ImageLoadError(f"ellipses: n must be >= 1, got {n}")
        g = torch.Generator().manual_seed(int(seed))
        batch = random_ellipses(n, size, generator=g)  # (n, 1, S, S)
        return [(f"ellipses_seed{seed}_{i}", batch[i, 0].numpy().astype(np.float64)) for i in range(n)]
    if kind in ("npy", "png", "dicom", "fastmri"):
        if not path:
            raise ImageLoadError(f"image kind {kind!r} needs a path")
        p = resolve_path(path)
        if kind == "npy":
            try:
                arr = np.load(p, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise ImageLoadError(f"{p} is not a readable .npy array ({exc})") from None
            return [(p.stem, _as_2d(arr, str(p)))]
        if kind == "png":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("F"))  # greyscale (ITU-R 601-2 luma for colour)
            except (UnidentifiedImageError, OSError) as exc:
                raise ImageLoadError(f"{p} is not a readable image file ({exc})") from None
            return [(p.stem, _as_2d(arr, str(p)))]
        if kind == "dicom":
            from .dicom import read_dicom_slice

            return [(p.stem, _as_2d(read_dicom_slice(p), str(p)))]
        return _read_fastmri(p, slices)
    if kind == "pydicom_example":
        from pydicom import examples

        from .dicom import read_dicom_slice

        if name not in ("ct", "mr"):
            raise ImageLoadError(f"pydicom_example: name must be 'ct' or 'mr', got {name!r}")
        return [(f"pydicom_{name}", _as_2d(read_dicom_slice(examples.get_path(name)), f"pydicom {name}"))]
    raise ImageLoadError(f"unknown image kind {kind!r}; valid kinds: {', '.join(IMAGE_KINDS)}")


def load_images(kind: str, size: int, *, path: str | None = None, name: str | None = None, n: int = 1,
                seed: int = 0, slices: Sequence[int] | None = None,
                window: Sequence[float] | None = None, split: str | None = None) -> list[tuple[str, np.ndarray]]:
    """``[(name, image (size, size) float32 in [0, 1]), ...]`` from one source (see the module doc)."""
    if size < 2:
        raise ImageLoadError(f"image size must be >= 2, got {size}")
    out = []
    if split is not None and kind not in REAL_KINDS:
        raise ImageLoadError(f"image kind {kind!r} takes no 'split' (only {', '.join(REAL_KINDS)} do)")
    if isinstance(slices, int) and kind not in REAL_KINDS:
        raise ImageLoadError(f"image kind {kind!r}: 'slices' must be a list of slice indices, got {slices}")
    for label, img in _raw_images(kind, path=path, name=name, n=n, seed=seed, slices=slices, size=size,
                                  split=split):
        already_unit = kind in ("ct_test", "shepp_logan", "ellipses", *REAL_KINDS) or (
            kind == "npy" and img.min() >= 0.0 and img.max() <= 1.0)
        img = resize_square(img, size)  # resize first, so min-max normalisation spans the full [0, 1]
        if already_unit and window is None:
            img01 = np.clip(img, 0.0, 1.0).astype(np.float32)
        else:
            img01 = normalize(img, window)
        out.append((label, img01))
    return out
