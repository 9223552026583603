"""LoDoPaB-CT files: reading, the matching ``ParallelBeamCT``, its Poisson/log noise model, angle subsampling.

The benchmark (Leuschner et al., *LoDoPaB-CT, a benchmark dataset for low-dose computed tomography
reconstruction*, Sci. Data 8, 109, 2021) ships HDF5 files ``ground_truth_{split}_{k:03d}.hdf5`` and
``observation_{split}_{k:03d}.hdf5`` (``.h5`` is accepted too), ``split`` in train/validation/test, each
with one dataset ``data`` of up to 128 samples: ground truth ``(n, 362, 362)`` float32 in [0, 1]
(``mu / mu_max``) and observations ``(n, 1000, 513)`` float32.

**Geometry (documented):** the image covers ``[-0.13, 0.13]^2`` m (362 x 362 pixels of 0.26/362 m); 2D
parallel beam, 1000 angles at the midpoints of ``[0, pi)`` split in 1000 (``(i + 1/2) pi / 1000``), a
detector of 513 bins spanning ``[-r, r]`` with ``r = 0.13 sqrt(2)`` m (the circle through the image
corners): ``odl.tomo.parallel_beam_geometry`` of that image space with 1000 angles. Arrays are indexed
``[x, y]`` (ODL), so a ground-truth array is ``np.rot90`` of medrecon's ``[row, column]`` image (rows
downwards, ``y`` upwards); both measure angles counter-clockwise from the ``x`` axis, with the same
detector coordinate ``u = x cos(theta) + y sin(theta)``.

**medrecon's operator** (:func:`lodopab_operator`): ``ParallelBeamCT(362, angles=...,
n_detectors=513)``, line integrals in pixels with 1-pixel bins. LoDoPaB's bins are
``2 r / 513 = sqrt(2) 362/513 = 0.99797`` pixel wide, so :func:`observation_to_operator` divides the
observation (line integrals in metres) by the pixel size and resamples each projection linearly onto
1-pixel bins (checked against ODL's own LoDoPaB geometry in ``tests/test_lodopab.py``).

**Noise (documented):** ``N ~ Poisson(N0 exp(-mu_max * A x))`` with ``N0 = 4096`` photons per bin,
``mu_max = 81.35858`` 1/m (3071 HU with ``mu_water = 20``, ``mu_air = 0.02`` 1/m), ``A`` in metres; the
observation is ``-log(max(N, 0.1) / N0) / mu_max`` (zero counts replaced by 0.1 photons).
:func:`poisson_log_noise` applies the same model to line integrals in pixel units.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DETECTOR_SPACING_PX",
    "IMAGE_SIZE",
    "MIN_PHOTON_COUNT",
    "MU_MAX",
    "N_ANGLES",
    "N_DETECTORS",
    "PHOTONS_PER_BIN",
    "PIXEL_SIZE_M",
    "SAMPLES_PER_FILE",
    "LoDoPaBDataset",
    "LoDoPaBError",
    "LoDoPaBSample",
    "from_image",
    "lodopab_angles",
    "lodopab_operator",
    "observation_to_operator",
    "poisson_log_noise",
    "subsample_angles",
    "to_image",
    "write_lodopab_files",
]

IMAGE_SIZE = 362
DOMAIN_M = 0.26  # side of the square image domain [-0.13, 0.13]^2, metres
PIXEL_SIZE_M = DOMAIN_M / IMAGE_SIZE
N_ANGLES = 1000
N_DETECTORS = 513
DETECTOR_SPACING_PX = math.sqrt(2) * IMAGE_SIZE / N_DETECTORS  # 2 r / 513 in pixels, r = 0.13 sqrt(2) m
PHOTONS_PER_BIN = 4096
MU_MAX = 81.35858  # 1/m: 3071 * (20 - 0.02) / 1000 + 20
MIN_PHOTON_COUNT = 0.1
SAMPLES_PER_FILE = 128
SPLITS = ("train", "validation", "test")


class LoDoPaBError(ValueError):
    """LoDoPaB files are missing, malformed, or asked for with bad arguments."""


def lodopab_angles() -> np.ndarray:
    """The 1000 documented projection angles (radians): ``(i + 1/2) pi / 1000``."""
    return (np.arange(N_ANGLES) + 0.5) * math.pi / N_ANGLES


def _angle_step(angle_step: int = 1, n_angles: int | None = None) -> int:
    if n_angles is not None:
        if not isinstance(n_angles, int) or isinstance(n_angles, bool) or not 1 <= n_angles <= N_ANGLES:
            raise LoDoPaBError(f"n_angles must be an integer in [1, {N_ANGLES}], got {n_angles!r}")
        if N_ANGLES % n_angles:
            raise LoDoPaBError(f"n_angles must divide {N_ANGLES} (evenly spaced subset), got {n_angles}")
        angle_step = N_ANGLES // n_angles
    if not isinstance(angle_step, int) or isinstance(angle_step, bool) or not 1 <= angle_step <= N_ANGLES:
        raise LoDoPaBError(f"angle_step must be an integer in [1, {N_ANGLES}], got {angle_step!r}")
    return angle_step


def lodopab_operator(
    angle_step: int = 1,
    *,
    n_angles: int | None = None,
    backend: str = "auto",
    dtype: torch.dtype = torch.float32,
):
    """The ``ParallelBeamCT`` of LoDoPaB (362 px, 513 one-pixel bins), on every ``angle_step``-th angle.

    ``n_angles`` (a divisor of 1000) is the same as ``angle_step = 1000 // n_angles``.
    """
    from medrecon.operators import ParallelBeamCT

    angles = lodopab_angles()[:: _angle_step(angle_step, n_angles)]
    return ParallelBeamCT(
        IMAGE_SIZE, len(angles), angles=angles, n_detectors=N_DETECTORS, backend=backend, dtype=dtype
    )


def subsample_angles(
    observation: Tensor | np.ndarray, angle_step: int = 1, *, n_angles: int | None = None
) -> Tensor | np.ndarray:
    """Every ``angle_step``-th projection of a measured ``(..., 1000, bins)`` sinogram (sparse angle from
    measured data); matches ``lodopab_operator(angle_step)``."""
    if observation.shape[-2] != N_ANGLES:
        raise LoDoPaBError(f"expected {N_ANGLES} angles on axis -2, got shape {tuple(observation.shape)}")
    return observation[..., :: _angle_step(angle_step, n_angles), :]


def _resample_weights(n_in: int, spacing_in: float, n_out: int, spacing_out: float) -> tuple[np.ndarray, ...]:
    """Linear-interpolation indices/weights from centred bins of ``spacing_in`` to centred bins of ``spacing_out``."""
    u = (np.arange(n_out) - (n_out - 1) / 2) * spacing_out  # output bin centres
    p = u / spacing_in + (n_in - 1) / 2  # fractional input index
    i0 = np.floor(p).astype(np.int64)
    w1 = p - i0
    valid0 = (i0 >= 0) & (i0 < n_in)
    valid1 = (i0 + 1 >= 0) & (i0 + 1 < n_in)
    w0 = np.where(valid0, 1 - w1, 0.0)
    w1 = np.where(valid1, w1, 0.0)
    return np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1), w0, w1


def observation_to_operator(observation: Tensor | np.ndarray, *, resample: bool = True) -> Tensor:
    """LoDoPaB observation ``(..., angles, 513)`` in metres -> line integrals in pixels on 1-pixel bins.

    Divides by the pixel size ``0.26/362`` m; with ``resample`` (default) interpolates each projection
    linearly from LoDoPaB's 0.99797-pixel bins to the 1-pixel bins of :func:`lodopab_operator`
    (bins whose centre falls outside LoDoPaB's detector get the nearest-edge weight only, i.e. ~0).
    """
    y = torch.as_tensor(np.asarray(observation) if not isinstance(observation, Tensor) else observation)
    if y.shape[-1] != N_DETECTORS:
        raise LoDoPaBError(
            f"expected {N_DETECTORS} detector bins on the last axis, got shape {tuple(y.shape)}"
        )
    y = y / PIXEL_SIZE_M
    if not resample:
        return y
    i0, i1, w0, w1 = _resample_weights(N_DETECTORS, DETECTOR_SPACING_PX, N_DETECTORS, 1.0)
    w0t = torch.as_tensor(w0, dtype=y.dtype)
    w1t = torch.as_tensor(w1, dtype=y.dtype)
    return y[..., torch.as_tensor(i0)] * w0t + y[..., torch.as_tensor(i1)] * w1t


def poisson_log_noise(
    y: Tensor,
    *,
    photons: float = PHOTONS_PER_BIN,
    mu_max: float = MU_MAX,
    pixel_size_m: float = PIXEL_SIZE_M,
    min_count: float = MIN_PHOTON_COUNT,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Post-log Poisson data from noiseless line integrals ``y`` in pixels (LoDoPaB's model).

    ``N ~ Poisson(photons exp(-s y))`` with ``s = mu_max * pixel_size_m`` (the attenuation of one pixel of
    value 1), returns ``-log(max(N, min_count) / photons) / s`` (in pixels, like ``y``). The mean is
    ``y`` up to the log's bias; the variance is about ``exp(s y) / (photons s^2)``.

    >>> y = torch.full((4000,), 100.0)
    >>> n = poisson_log_noise(y, generator=torch.Generator().manual_seed(0))
    >>> bool(abs(n.mean() - 100.0) < 1.0)
    True
    """
    if not (photons > 0 and mu_max > 0 and pixel_size_m > 0 and min_count > 0):
        raise LoDoPaBError(
            f"photons, mu_max, pixel_size_m and min_count must be > 0, got "
            f"{photons}, {mu_max}, {pixel_size_m}, {min_count}"
        )
    s = mu_max * pixel_size_m
    rate = photons * torch.exp(-s * y.detach().to(torch.float64))
    counts = torch.poisson(rate, generator=generator)
    return (-torch.log(counts.clamp_min(min_count) / photons) / s).to(y.dtype)


def to_image(ground_truth: np.ndarray) -> np.ndarray:
    """LoDoPaB ``[..., x, y]`` array -> medrecon ``[..., row, column]`` image (rows downwards)."""
    return np.ascontiguousarray(np.rot90(ground_truth, 1, axes=(-2, -1)))


def from_image(image: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_image`."""
    return np.ascontiguousarray(np.rot90(image, -1, axes=(-2, -1)))


class LoDoPaBSample(NamedTuple):
    """One slice: ``ground_truth`` (362, 362) medrecon orientation in [0, 1] or None; ``observation``
    (1000, 513) as stored (metres, LoDoPaB bins); ``name`` ``"{split}_{index:05d}"``."""

    ground_truth: np.ndarray | None
    observation: np.ndarray | None
    name: str


_FILE = re.compile(r"^(ground_truth|observation)_(train|validation|test)_(\d{3})\.(hdf5|h5)$")


class LoDoPaBDataset:
    """The samples of one split in a folder of LoDoPaB files (either kind may be absent).

    Sample ``i`` is row ``i % 128`` of file ``i // 128``; files are numbered from 000 without gaps.
    """

    def __init__(self, root: str | Path, split: str = "test") -> None:
        if split not in SPLITS:
            raise LoDoPaBError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.root, self.split = Path(root), split
        if not self.root.is_dir():
            raise LoDoPaBError(f"{self.root} is not a folder")
        files: dict[str, dict[int, Path]] = {"ground_truth": {}, "observation": {}}
        for p in self.root.iterdir():
            m = _FILE.match(p.name)
            if m and m.group(2) == split:
                files[m.group(1)][int(m.group(3))] = p
        if not files["ground_truth"] and not files["observation"]:
            raise LoDoPaBError(
                f"no ground_truth_{split}_NNN.hdf5 / observation_{split}_NNN.hdf5 files in {self.root}"
            )
        self._files = {}
        self._lengths = {}
        for kind, found in files.items():
            if not found:
                continue
            if sorted(found) != list(range(len(found))):
                raise LoDoPaBError(
                    f"{kind}_{split}_NNN files in {self.root} are not numbered 000.."
                    f"{len(found) - 1:03d} without gaps: {sorted(found)}"
                )
            self._files[kind] = [found[k] for k in range(len(found))]
            self._lengths[kind] = self._count(kind)
        if len(set(self._lengths.values())) > 1:
            raise LoDoPaBError(
                f"{split}: {self._lengths['ground_truth']} ground-truth and "
                f"{self._lengths['observation']} observation samples in {self.root}"
            )
        self._n = next(iter(self._lengths.values()))

    def _count(self, kind: str) -> int:
        import h5py

        shape = {"ground_truth": (IMAGE_SIZE, IMAGE_SIZE), "observation": (N_ANGLES, N_DETECTORS)}[kind]
        total = 0
        for k, path in enumerate(self._files[kind]):
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise LoDoPaBError(f"{path}: no dataset 'data'")
                n, *rest = f["data"].shape
            if tuple(rest) != shape:
                raise LoDoPaBError(
                    f"{path}: 'data' has shape {(n, *rest)}, expected (n, {shape[0]}, {shape[1]})"
                )
            last = k == len(self._files[kind]) - 1
            if n > SAMPLES_PER_FILE or (not last and n != SAMPLES_PER_FILE) or n == 0:
                raise LoDoPaBError(f"{path}: {n} samples; every file but the last holds {SAMPLES_PER_FILE}")
            total += n
        return total

    @property
    def has_ground_truth(self) -> bool:
        return "ground_truth" in self._files

    @property
    def has_observation(self) -> bool:
        return "observation" in self._files

    def __len__(self) -> int:
        return self._n

    def _read(self, kind: str, i: int) -> np.ndarray | None:
        import h5py

        if kind not in self._files:
            return None
        with h5py.File(self._files[kind][i // SAMPLES_PER_FILE], "r") as f:
            return np.asarray(f["data"][i % SAMPLES_PER_FILE], dtype=np.float32)

    def __getitem__(self, i: int) -> LoDoPaBSample:
        if not isinstance(i, (int, np.integer)) or not -self._n <= i < self._n:
            raise IndexError(f"sample {i} out of range: {self.split} has {self._n} samples in {self.root}")
        i = int(i) % self._n
        gt = self._read("ground_truth", i)
        return LoDoPaBSample(
            None if gt is None else to_image(gt), self._read("observation", i), f"{self.split}_{i:05d}"
        )


def write_lodopab_files(
    root: str | Path,
    split: str,
    ground_truth: np.ndarray | None = None,
    observation: np.ndarray | None = None,
) -> list[Path]:
    """Write arrays in LoDoPaB's layout (128 samples per ``.hdf5`` file, dataset ``data``, float32).

    ``ground_truth`` ``(n, 362, 362)`` in LoDoPaB's ``[x, y]`` orientation (:func:`from_image`),
    ``observation`` ``(n, 1000, 513)``. For tests and for users' own data in this layout.
    """
    import h5py

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, arr in (("ground_truth", ground_truth), ("observation", observation)):
        if arr is None:
            continue
        arr = np.asarray(arr, dtype=np.float32)
        for k in range(math.ceil(arr.shape[0] / SAMPLES_PER_FILE)):
            path = root / f"{kind}_{split}_{k:03d}.hdf5"
            with h5py.File(path, "w") as f:
                f.create_dataset("data", data=arr[k * SAMPLES_PER_FILE : (k + 1) * SAMPLES_PER_FILE])
            written.append(path)
    return written
