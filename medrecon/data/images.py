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

One rule turns every image into a ``size x size`` ground truth in [0, 1], whatever the file type:

1. **Size.** A non-square image is centre-cropped to a square; a square of another size is resized
   with anti-aliasing (``skimage.transform.resize``, order 1). Images smaller than 8x8 are refused.
2. **Scale.** With ``window=(lo, hi)`` values are clipped to the window and mapped linearly to
   [0, 1] (e.g. ``[-1000, 1000]`` HU for CT). Without a window, an image read from a file (``npy``,
   ``png``, ``dicom``, ``fastmri``, ``ct_test``, ``pydicom_example``) is divided by its maximum:
   zero stays zero and the brightest pixel becomes 1, so a PNG and the ``.npy`` of the same pixels
   give the same ground truth (and ``image * scale`` is the file's own scale again). An image with
   negative values is mapped min-max to [0, 1] (set a window to choose the mapping); an all-zero
   image is refused. Generated sources (``shepp_logan``, ``ellipses``) and the converted real
   scans (``real_ct``, ``real_mri``) are already in [0, 1] and are kept as they are.

Each resize, crop or min-max mapping is reported in the ``notes`` of :func:`load_image_records`
(``medrecon reconstruct`` prints them and keeps them in ``run.json``).
Relative paths are looked up from the working directory first, then from the repository root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CT_TEST_DIR",
    "IMAGE_KINDS",
    "MIN_IMAGE_SIZE",
    "REPO_ROOT",
    "ImageLoadError",
    "ImageRecord",
    "load_image_records",
    "load_images",
    "normalize",
    "resize_square",
    "resolve_path",
]

IMAGE_KINDS = (
    "ct_test",
    "shepp_logan",
    "ellipses",
    "npy",
    "png",
    "dicom",
    "pydicom_example",
    "fastmri",
    "real_ct",
    "real_mri",
)
REAL_KINDS = {"real_ct": "ct", "real_mri": "mri"}  # image kind -> modality of medrecon.data.real
GENERATED_KINDS = ("shepp_logan", "ellipses", *REAL_KINDS)  # already in [0, 1] at the asked size
MIN_IMAGE_SIZE = 8  # smaller inputs are refused rather than blown up
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
    image = image[top : top + s, left : left + s]
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


_MAGIC = {
    b"\x89PNG": "a PNG image (kind: png)",
    b"\x89HDF": "an HDF5 file (kind: fastmri)",
    b"PK\x03\x04": "a zip archive (an .npz? save one array with numpy.save)",
    b"\xff\xd8\xff": "a JPEG image (kind: png)",
    b"II*\x00": "a TIFF image (kind: png)",
    b"MM\x00*": "a TIFF image (kind: png)",
}


def _load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array (never a pickle); a file of another format is named as such."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise ImageLoadError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not head.startswith(b"\x93NUMPY"):
        what = next((w for m, w in _MAGIC.items() if head.startswith(m)), None)
        if what is None and head[128:132] == b"DICM":
            what = "a DICOM file (kind: dicom)"
        raise ImageLoadError(
            f"{path} is not an .npy file" + (f": it is {what}" if what else " (no NumPy header)")
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ImageLoadError(
                f"{path} holds Python objects, not a numeric array (pickles are never loaded)"
            ) from None
        raise ImageLoadError(f"{path} is a damaged .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ImageLoadError(f"{path} is a damaged or truncated .npy file ({exc})") from None
    if arr.dtype.kind not in "biufc":
        raise ImageLoadError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    return arr


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
        if "mask" in f:
            w = f["kspace"].shape[-1] if "kspace" in f else None
            if w is not None and tuple(getattr(f["mask"], "shape", ())) != (w,):
                raise ImageLoadError(
                    f"{path}: 'mask' must be (W,) = ({w},), one 0/1 entry per phase-encoding "
                    f"line, got shape {getattr(f['mask'], 'shape', None)}"
                )
            if key is None:
                raise ImageLoadError(
                    f"{path}: the k-space is undersampled (the file has a 'mask') and there is "
                    "no reconstruction_rss/esc target: no ground truth to simulate from"
                )
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
                coil = np.fft.fftshift(
                    np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
                )
                img = np.sqrt((np.abs(coil) ** 2).sum(0)) if coil.ndim == 3 else np.abs(coil)
            out.append((f"{path.stem}_s{s % n}", _as_2d(img, f"{path}[{s}]")))
    return out


def _real_images(
    kind: str, split: str | None, slices: int | Sequence[int] | None, size: int
) -> list[tuple[str, np.ndarray]]:
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


def _raw_images(
    kind: str,
    *,
    path: str | None,
    name: str | None,
    n: int,
    seed: int,
    slices: Sequence[int] | None,
    size: int,
    split: str | None = None,
) -> list[tuple[str, np.ndarray]]:
    if kind in REAL_KINDS:
        return _real_images(kind, split, slices, size)
    if kind == "ct_test":
        folder = resolve_path(path) if path else CT_TEST_DIR
        files = sorted(folder.glob("*.npy"))
        if not files:
            raise ImageLoadError(f"no .npy images in {folder}")
        return [(f.stem, _as_2d(_load_npy(f), str(f))) for f in files]
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
            return [(p.stem, _as_2d(_load_npy(p), str(p)))]
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


@dataclass(frozen=True)
class ImageRecord:
    """One ground truth and where it came from: ``image`` ``(size, size)`` float32 in [0, 1];
    ``image * scale + offset`` is the source's own scale (for a resized image, at the new size);
    ``source`` the file (None for generated images), ``slice_index`` the slice in a volume file."""

    name: str
    image: np.ndarray
    kind: str
    source: Path | None = None
    slice_index: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    resized: bool = False


def load_image_records(
    kind: str,
    size: int,
    *,
    path: str | None = None,
    name: str | None = None,
    n: int = 1,
    seed: int = 0,
    slices: Sequence[int] | None = None,
    window: Sequence[float] | None = None,
    split: str | None = None,
    notes: list[str] | None = None,
) -> list[ImageRecord]:
    """The images of one source under the rule of the module doc; what the rule changed is appended
    to ``notes`` (one line per image)."""
    if size < MIN_IMAGE_SIZE:
        raise ImageLoadError(f"image size must be >= {MIN_IMAGE_SIZE}, got {size}")
    if split is not None and kind not in REAL_KINDS:
        raise ImageLoadError(f"image kind {kind!r} takes no 'split' (only {', '.join(REAL_KINDS)} do)")
    if isinstance(slices, int) and kind not in REAL_KINDS:
        raise ImageLoadError(f"image kind {kind!r}: 'slices' must be a list of slice indices, got {slices}")
    notes = notes if notes is not None else []
    source = resolve_path(path) if path and kind not in ("shepp_logan", "ellipses", *REAL_KINDS) else None
    out = []
    raw = _raw_images(kind, path=path, name=name, n=n, seed=seed, slices=slices, size=size, split=split)
    for label, img in raw:
        h, w = img.shape
        if min(h, w) < MIN_IMAGE_SIZE:
            raise ImageLoadError(
                f"{label}: a {h}x{w} image is too small to be a ground truth (at least "
                f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}; it would be blown up to {size}x{size})"
            )
        resized = (h, w) != (size, size)
        if resized:
            crop = f"centre-cropped to {min(h, w)}x{min(h, w)} and " if h != w else ""
            notes.append(f"image {label}: {h}x{w} {crop}resized to {size}x{size}")
        img = resize_square(img, size)
        scale, offset = 1.0, 0.0
        if window is not None:
            offset, scale = float(window[0]), float(window[1]) - float(window[0])
            img01 = normalize(img, window)
        elif kind in GENERATED_KINDS:
            img01 = np.clip(img, 0.0, 1.0).astype(np.float32)
        else:
            lo, hi = float(img.min()), float(img.max())
            if hi == 0.0 and lo == 0.0:
                raise ImageLoadError(f"{label}: the image is all zero: nothing to reconstruct")
            if lo >= 0.0:
                scale = hi
            else:
                if hi <= lo:
                    raise ImageLoadError(f"{label}: the image is constant ({lo:g}): nothing to reconstruct")
                offset, scale = lo, hi - lo
                notes.append(
                    f"image {label}: has negative values: [{lo:.4g}, {hi:.4g}] mapped to [0, 1] "
                    "(set window: [lo, hi] to choose the mapping)"
                )
            img01 = np.clip((img - offset) / scale, 0.0, 1.0).astype(np.float32)
        slice_index = None
        if kind == "fastmri":
            slice_index = int(label.rsplit("_s", 1)[1])
        out.append(ImageRecord(label, img01, kind, source, slice_index, scale, offset, resized))
    return out


def load_images(
    kind: str,
    size: int,
    *,
    path: str | None = None,
    name: str | None = None,
    n: int = 1,
    seed: int = 0,
    slices: Sequence[int] | None = None,
    window: Sequence[float] | None = None,
    split: str | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``[(name, image (size, size) float32 in [0, 1]), ...]`` from one source (see the module doc)."""
    return [
        (r.name, r.image)
        for r in load_image_records(
            kind, size, path=path, name=name, n=n, seed=seed, slices=slices, window=window, split=split
        )
    ]
