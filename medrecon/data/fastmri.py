"""fastMRI HDF5 files: a slice dataset, a writer of the same layout, and leaderboard output.

The on-disk layout (fastMRI, Zbontar et al. arXiv:1811.08839, and ``fastmri.data.mri_data``):

* ``kspace``: ``(slices, H, W)`` single-coil or ``(slices, coils, H, W)`` multi-coil, complex64;
  ``H`` is the (oversampled) readout, ``W`` the phase-encoding axis that masks subsample.
* ``reconstruction_esc`` (single-coil) / ``reconstruction_rss`` (multi-coil): ``(slices, h, w)``
  float32 targets at the reconstruction size (absent in test/challenge files).
* ``ismrmrd_header``: ISMRMRD XML; fastMRI reads ``encoding/encodedSpace/matrixSize`` (x, y, z),
  ``encoding/reconSpace/matrixSize`` (x, y, z) and ``encoding/encodingLimits/kspace_encoding_step_1``
  (center, maximum).
* ``mask`` (optional; fastMRI's test and challenge files): ``(W,)`` 0/1, the phase-encoding lines
  that ``kspace`` holds (the rest is zero). A file's mask is used when no other mask is asked for;
  one of another shape is an error.
* attributes ``acquisition``, ``max``, ``norm``, ``patient_id``.

``FastMRISliceDataset`` indexes slices once (each file opened and closed), then opens the file
inside every ``__getitem__``: no handle is held, so it is safe with DataLoader workers (fork or
spawn). Validation masks are fixed per ``(file, slice)`` by ``stable_seed``; training masks are
random (drawn from ``generator`` or torch's default generator).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as etree
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor

from medrecon.operators.masks import make_mask, stable_seed

__all__ = [
    "FastMRIDataError",
    "FastMRISample",
    "FastMRISliceDataset",
    "apply_mask",
    "center_crop",
    "ismrmrd_header",
    "read_metadata",
    "save_reconstructions",
    "write_fastmri_h5",
]

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
RECON_KEYS = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}


class FastMRIDataError(ValueError):
    """A fastMRI file is missing something or has the wrong layout; the message names the file."""


# --------------------------------------------------------------------------- helpers
def _atomic_write(path: Path, writer: Callable[[str], None]) -> None:
    """medrecon.utils_io.atomic_write (temp file in the same directory, then os.replace), creating
    the directory first; ``writer`` receives the temporary path as a string (h5py wants str/Path)."""
    from medrecon.utils_io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: writer(str(tmp)))


def center_crop(x: Tensor | np.ndarray, size: tuple[int, int]) -> Tensor:
    """Centre crop of the last two axes to ``size`` (``fastmri.data.transforms.center_crop``)."""
    from fastmri.data.transforms import center_crop as _crop

    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    if t.shape[-2] < size[0] or t.shape[-1] < size[1]:
        raise ValueError(f"cannot crop images of shape {tuple(t.shape[-2:])} to {tuple(size)}")
    return _crop(t, tuple(size))


def ismrmrd_header(
    encoded_size: tuple[int, int, int],
    recon_size: tuple[int, int, int],
    *,
    fov_mm: tuple[float, float, float] | None = None,
) -> bytes:
    """A minimal ISMRMRD XML header with the fields fastMRI reads.

    ``encoded_size`` / ``recon_size`` are ``(x, y, z)`` = (readout ``H``, phase encodes ``W``, 1).
    ``kspace_encoding_step_1`` spans the ``W`` phase encodes with its centre at ``W // 2``, so
    fastMRI's padding (``enc_y // 2 - center``) is 0.
    """
    ex, ey, ez = (int(v) for v in encoded_size)
    rx, ry, rz = (int(v) for v in recon_size)
    fx, fy, fz = fov_mm if fov_mm is not None else (float(ex), float(ey), 1.0)
    rfx, rfy = fx * rx / ex, fy * ry / ey

    def space(name, m, f):
        return (
            f"<{name}><matrixSize><x>{m[0]}</x><y>{m[1]}</y><z>{m[2]}</z></matrixSize>"
            f"<fieldOfView_mm><x>{f[0]}</x><y>{f[1]}</y><z>{f[2]}</z></fieldOfView_mm></{name}>"
        )

    xml = (
        f'<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}">'
        "<encoding>"
        + space("encodedSpace", (ex, ey, ez), (fx, fy, fz))
        + space("reconSpace", (rx, ry, rz), (rfx, rfy, fz))
        + "<encodingLimits>"
        f"<kspace_encoding_step_1><minimum>0</minimum><maximum>{ey - 1}</maximum><center>{ey // 2}</center>"
        "</kspace_encoding_step_1>"
        "<kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>"
        "<slice><minimum>0</minimum><maximum>0</maximum><center>0</center></slice>"
        "</encodingLimits><trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
    )
    return xml.encode()


def _rss_target(kspace: np.ndarray, recon_size: tuple[int, int]) -> np.ndarray:
    from medrecon.operators.mri import ifft2c

    images = ifft2c(torch.from_numpy(kspace)).abs()  # (S, [coils,] H, W)
    if kspace.ndim == 4:
        images = images.pow(2).sum(1).sqrt()
    return center_crop(images, recon_size).numpy().astype(np.float32)


# --------------------------------------------------------------------------- writing
def write_fastmri_h5(
    path: str | os.PathLike,
    kspace: np.ndarray | Tensor,
    *,
    reconstruction: np.ndarray | Tensor | None = None,
    recon_size: tuple[int, int] | None = None,
    acquisition: str = "CORPD_FBK",
    patient_id: str = "medrecon-synthetic",
    attrs: Mapping[str, object] | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write ``kspace`` in fastMRI's layout (atomically) and return the path.

    Args:
        kspace: ``(slices, H, W)`` (single-coil) or ``(slices, coils, H, W)`` (multi-coil), complex;
            stored as complex64.
        reconstruction: the target ``(slices, h, w)``; by default the RSS (multi-coil) or
            magnitude (single-coil) of ``ifft2c(kspace)`` centre-cropped to ``recon_size``, as
            fastMRI made its targets. Stored as ``reconstruction_rss`` / ``reconstruction_esc``.
        recon_size: ``(h, w)`` of the reconstruction; default ``(min(H, W), min(H, W))``.
        attrs: extra file attributes. ``max`` and ``norm`` are computed from the target
            (``max`` its maximum, ``norm`` its Frobenius norm).
    """
    k = kspace.detach().cpu().numpy() if isinstance(kspace, Tensor) else np.asarray(kspace)
    if not np.iscomplexobj(k) or k.ndim not in (3, 4):
        raise ValueError(
            f"kspace must be complex (slices, H, W) or (slices, coils, H, W), got {k.dtype} {k.shape}"
        )
    k = k.astype(np.complex64)
    h, w = k.shape[-2:]
    if recon_size is None:
        recon_size = (min(h, w), min(h, w))
    challenge = "multicoil" if k.ndim == 4 else "singlecoil"
    if reconstruction is None:
        target = _rss_target(k, recon_size)
    else:
        target = (
            reconstruction.detach().cpu().numpy()
            if isinstance(reconstruction, Tensor)
            else np.asarray(reconstruction)
        )
        target = target.astype(np.float32)
        if target.ndim != 3 or target.shape[0] != k.shape[0]:
            raise ValueError(f"reconstruction must be (slices={k.shape[0]}, h, w), got {target.shape}")
        recon_size = target.shape[-2:]
    header = ismrmrd_header((h, w, 1), (recon_size[0], recon_size[1], 1))

    def writer(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=k, compression=compression)
            f.create_dataset(RECON_KEYS[challenge], data=target, compression=compression)
            f.create_dataset("ismrmrd_header", data=np.bytes_(header))
            f.attrs["acquisition"] = acquisition
            f.attrs["max"] = float(target.max())
            f.attrs["norm"] = float(np.linalg.norm(target))
            f.attrs["patient_id"] = patient_id
            for key, value in (attrs or {}).items():
                f.attrs[key] = value

    _atomic_write(Path(path), writer)
    return Path(path)


def save_reconstructions(
    reconstructions: Mapping[str, np.ndarray | Tensor], out_dir: str | os.PathLike
) -> list[Path]:
    """fastMRI leaderboard layout: ``out_dir/<fname>`` per volume, dataset ``reconstruction`` ``(S, H, W)`` float32.

    Each file is written atomically. ``fname`` is the input file's name (``.h5`` is appended when
    missing); complex volumes are an error (submit magnitudes).
    """
    out_dir = Path(out_dir)
    written = []
    for fname, volume in reconstructions.items():
        arr = volume.detach().cpu().numpy() if isinstance(volume, Tensor) else np.asarray(volume)
        if np.iscomplexobj(arr):
            raise ValueError(f"reconstruction for {fname} is complex; save magnitudes (abs)")
        if arr.ndim != 3:
            raise ValueError(f"reconstruction for {fname} must be (slices, H, W), got shape {arr.shape}")
        name = Path(fname).name
        if not name.endswith(".h5"):
            name += ".h5"
        arr = arr.astype(np.float32)

        def writer(tmp: str, arr=arr) -> None:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("reconstruction", data=arr)

        _atomic_write(out_dir / name, writer)
        written.append(out_dir / name)
    return written


# --------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class FileMetadata:
    """What the index keeps per file."""

    path: Path
    num_slices: int
    challenge: str  # "singlecoil" | "multicoil"
    kspace_shape: tuple[int, ...]  # (slices, [coils,] H, W)
    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    attrs: dict = field(default_factory=dict)
    has_mask: bool = False  # the file holds a 'mask' (W,): its k-space is already undersampled


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise FastMRIDataError(f"{path}: no such file") from None
    except OSError as exc:
        raise FastMRIDataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from None


def read_metadata(path: str | os.PathLike) -> FileMetadata:
    """Check a fastMRI file's layout and read its metadata; raises FastMRIDataError naming the file."""
    from fastmri.data.mri_data import et_query

    path = Path(path)
    with _open(path) as f:
        if "kspace" not in f:
            raise FastMRIDataError(
                f"{path}: missing dataset 'kspace' (found: {', '.join(f.keys()) or 'nothing'})"
            )
        ds = f["kspace"]
        if ds.ndim not in (3, 4):
            raise FastMRIDataError(
                f"{path}: 'kspace' must be (slices, H, W) or (slices, coils, H, W), got shape {ds.shape}"
            )
        if ds.dtype.kind != "c":
            raise FastMRIDataError(f"{path}: 'kspace' must be complex, got dtype {ds.dtype}")
        if "ismrmrd_header" not in f:
            raise FastMRIDataError(f"{path}: missing dataset 'ismrmrd_header' (the ISMRMRD XML header)")
        try:
            root = etree.fromstring(f["ismrmrd_header"][()])
            enc = tuple(int(et_query(root, ["encoding", "encodedSpace", "matrixSize", a])) for a in "xyz")
            rec = tuple(int(et_query(root, ["encoding", "reconSpace", "matrixSize", a])) for a in "xyz")
        except (etree.ParseError, RuntimeError, ValueError, TypeError) as exc:
            raise FastMRIDataError(
                f"{path}: bad ismrmrd_header (need encoding/encodedSpace and reconSpace matrixSize x, y, z): {exc}"
            ) from None
        challenge = "multicoil" if ds.ndim == 4 else "singlecoil"
        h, w = ds.shape[-2:]
        if rec[0] > h or rec[1] > w:
            raise FastMRIDataError(
                f"{path}: reconSpace matrixSize {rec[:2]} is larger than the k-space {(h, w)}"
            )
        target_key = RECON_KEYS[challenge]
        if target_key in f:
            t = f[target_key]
            if t.ndim != 3 or t.shape[0] != ds.shape[0]:
                raise FastMRIDataError(
                    f"{path}: '{target_key}' must be (slices={ds.shape[0]}, h, w), got shape {t.shape}"
                )
        has_mask = "mask" in f
        if has_mask and (not isinstance(f["mask"], h5py.Dataset) or tuple(f["mask"].shape) != (w,)):
            shape = getattr(f["mask"], "shape", None)
            raise FastMRIDataError(
                f"{path}: 'mask' must be (W,) = ({w},), one 0/1 entry per phase-encoding "
                f"line of the k-space, got shape {shape}"
            )
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        return FileMetadata(path, int(ds.shape[0]), challenge, tuple(ds.shape), enc, rec, attrs, has_mask)


@dataclass
class FastMRISample:
    """One slice. Shapes: ``kspace`` ``(coils, H, W)`` (``coils = 1`` for single-coil) complex64."""

    kspace: Tensor  # fully sampled (as stored)
    masked_kspace: Tensor  # mask * kspace (equal to kspace when no mask is used)
    mask: Tensor | None  # (H, W) float32 0/1, or None
    target: Tensor | None  # (h, w) float32 at the recon size, or None when the file has none
    fname: str
    slice_idx: int
    max_value: float | None  # the volume's attrs["max"] (fastMRI's PSNR/SSIM data range)
    recon_size: tuple[int, int]
    attrs: dict


class FastMRISliceDataset(torch.utils.data.Dataset):
    """Slices of fastMRI files (single- or multi-coil, knee or brain).

    Args:
        files: a directory (all ``*.h5`` in it, sorted) or an iterable of file paths.
        challenge: "singlecoil" or "multicoil": in a directory, only files of that kind are used;
            a listed file of the other kind is an error. None accepts what each file is.
        mask_kind, acceleration, center_fraction: sample a mask per slice with ``make_mask``
            (None: the file's own ``mask`` if it has one, else no mask).
        fixed_masks: validation mode: the mask of a slice is fixed by ``stable_seed(fname, slice)``.
            Otherwise (training) masks are random, drawn from ``generator``.
        sample_rate: keep this fraction of volumes, chosen by a stable hash of the file name
            (the same subset in every process and run).
        slice_filter: ``fn(meta: FileMetadata, slice_idx) -> bool`` keeps the slices it accepts.
        generator: for training masks (torch's default generator when None).
        mask: a fixed mask ``(H, W)`` or ``(W,)`` for every slice instead of ``mask_kind``; a
            mask that does not fit a file's k-space raises FastMRIDataError naming the file.
    """

    def __init__(
        self,
        files: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        challenge: str | None = None,
        mask_kind: str | None = None,
        acceleration: float = 4,
        center_fraction: float = 0.08,
        fixed_masks: bool = True,
        sample_rate: float = 1.0,
        slice_filter: Callable[[FileMetadata, int], bool] | None = None,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> None:
        if mask is not None and mask_kind is not None:
            raise ValueError("give either mask_kind or a fixed mask, not both")
        if challenge not in (None, "singlecoil", "multicoil"):
            raise ValueError(f"challenge must be 'singlecoil', 'multicoil' or None, got {challenge!r}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        from_dir = isinstance(files, (str, os.PathLike))
        if from_dir:
            root = Path(files)
            if not root.is_dir():
                raise FastMRIDataError(f"{root}: not a directory of fastMRI .h5 files")
            paths = sorted(root.glob("*.h5"))
            if not paths:
                raise FastMRIDataError(f"{root}: contains no .h5 files")
        else:
            paths = [Path(p) for p in files]
        if sample_rate < 1.0:
            paths = [p for p in paths if zlib.crc32(p.name.encode()) / 2**32 < sample_rate]
        self.mask_kind = mask_kind
        self.acceleration = acceleration
        self.center_fraction = center_fraction
        self.fixed_masks = fixed_masks
        self.generator = generator
        self.fixed_mask = None if mask is None else mask.to(torch.float32)
        self.files: list[FileMetadata] = []
        self._index: list[tuple[int, int]] = []
        for p in paths:
            meta = read_metadata(p)
            if challenge is not None and meta.challenge != challenge:
                if from_dir:
                    continue
                raise FastMRIDataError(f"{p}: a {meta.challenge} file, but the dataset is {challenge}")
            fi = len(self.files)
            self.files.append(meta)
            self._index.extend(
                (fi, s) for s in range(meta.num_slices) if slice_filter is None or slice_filter(meta, s)
            )

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> FastMRISample:
        fi, s = self._index[i]
        meta = self.files[fi]
        target_key = RECON_KEYS[meta.challenge]
        with _open(meta.path) as f:  # opened per item: nothing is held across forks
            try:
                kspace = torch.from_numpy(np.asarray(f["kspace"][s], dtype=np.complex64))  # ([coils,] H, W)
                target = (
                    torch.from_numpy(np.asarray(f[target_key][s], dtype=np.float32))
                    if target_key in f
                    else None
                )
                file_mask = (
                    torch.from_numpy(np.asarray(f["mask"], dtype=np.float32)) if meta.has_mask else None
                )
            except (OSError, KeyError) as exc:
                raise FastMRIDataError(
                    f"{meta.path}: cannot read slice {s} (truncated or corrupt?): {exc}"
                ) from None
        if kspace.dim() == 2:
            kspace = kspace[None]  # (1, H, W)
        h, w = kspace.shape[-2:]
        mask = None
        masked = kspace
        if self.mask_kind is not None:
            seed = stable_seed(meta.path.name, s) if self.fixed_masks else None
            mask = make_mask(
                self.mask_kind,
                (h, w),
                self.acceleration,
                self.center_fraction,
                seed=seed,
                generator=self.generator,
            )
            masked = kspace * mask
        elif self.fixed_mask is not None:
            masked = apply_mask(kspace, self.fixed_mask, fname=str(meta.path))
            mask = torch.broadcast_to(self.fixed_mask, (h, w))
        elif file_mask is not None:  # the file's own sampling (test/challenge files)
            masked = apply_mask(kspace, file_mask, fname=str(meta.path))
            mask = torch.broadcast_to(file_mask, (h, w)).clone()
        max_value = meta.attrs.get("max")
        return FastMRISample(
            kspace=kspace,
            masked_kspace=masked,
            mask=mask,
            target=target,
            fname=meta.path.name,
            slice_idx=s,
            max_value=None if max_value is None else float(max_value),
            recon_size=(meta.recon_size[0], meta.recon_size[1]),
            attrs=dict(meta.attrs),
        )


def apply_mask(kspace: Tensor, mask: Tensor, *, fname: str = "<k-space>") -> Tensor:
    """mask * kspace with a clear error when the mask ``(H, W)`` / ``(W,)`` does not fit ``(..., H, W)``."""
    try:
        torch.broadcast_shapes(tuple(mask.shape), tuple(kspace.shape[-2:]))
    except RuntimeError:
        raise FastMRIDataError(
            f"{fname}: mask of shape {tuple(mask.shape)} does not fit k-space of shape {tuple(kspace.shape)}"
        ) from None
    if mask.dim() > 2:
        raise FastMRIDataError(f"{fname}: mask must be (H, W) or (W,), got shape {tuple(mask.shape)}")
    return kspace * mask
