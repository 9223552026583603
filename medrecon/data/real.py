"""Real CT and MRI scans from package archives: fetch (pinned sha256), one documented conversion, splits by subject.

Sources (fetched at set-up time through the ordinary package clients; nothing is downloaded at run time):

=========  ===========================================================  ==============================  ==========
subject    archive (pinned sha256 in :data:`SOURCES`)                   file inside                     licence
=========  ===========================================================  ==============================  ==========
lung1      PyPI sdist ``pyradiomics==3.0.1``                            ``data/lung1_image.nrrd``       BSD-3
lung2      (same archive)                                               ``data/lung2_image.nrrd``       BSD-3
head       Debian ``invesalius-examples=3.1.99998-4``                   ``Cranium.inv3`` -> matrix.dat  GPL-2
colin27    Debian ``mricron-data=1.2.20211006+dfsg-4``                  ``templates/ch2bet.nii.gz``     BSD-3
mni152     PyPI wheel ``nilearn==0.14.1``                               ``mni_icbm152_t1_..._09a...``   BSD-3 (+MNI)
=========  ===========================================================  ==============================  ==========

**The conversion** (one for each modality, applied slice by slice to axial slices):

* CT: ``x = clip((HU + 1000) / 2000, 0, 1)``, a linear map of attenuation (``mu/mu_water = 1 + HU/1000``)
  with air (-1000 HU) -> 0, water (0 HU) -> 0.5, 1000 HU -> 1. Clipped: below -1000 HU (the -1024 padding
  outside the scanner's field of view) to 0, and above 1000 HU (dense cortical bone, teeth, metal: 0.05 %
  of the lung voxels, 2 % of the head voxels) to 1.
* MRI: ``x = clip(magnitude / p99.5, 0, 1)`` where ``p99.5`` is the 99.5th percentile of the subject's
  non-zero voxels (the robust scale; the top 0.5 % of the brightest voxels saturate at 1).
* Each slice is made square (CT: centre-crop, a no-op for these 512x512/256x256 slices; MRI: zero-pad)
  and resized to ``size x size`` with anti-aliasing (``skimage.transform.resize``, order 1,
  ``anti_aliasing=True``); 64, 128 and 256 are cached by :func:`fetch`, other sizes on first use.
* **Empty-slice rule:** a slice is kept when at least 10 % of its pixels (native resolution, after the
  conversion) exceed 0.1 (CT: -800 HU, i.e. body tissue; MRI: a tenth of the robust scale).

**Splits by subject, never by slice** (files ``data/splits/{ct,mri}_{train,validation}.txt``, one
``subject slice_index`` per kept slice, written by ``python -m medrecon.data.real splits``):
CT train = lung2 + head, CT validation = lung1; MRI train = colin27, MRI validation = mni152.

Command line: ``python -m medrecon.data.real fetch`` (the ``make data`` target), ``... status``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "CACHED_SIZES",
    "DATA_ROOT",
    "SOURCES",
    "SPLITS",
    "SPLITS_DIR",
    "SUBJECTS",
    "FetchError",
    "RealCorpus",
    "RealDataError",
    "convert_ct",
    "convert_mri",
    "fetch",
    "is_available",
    "kept_slices",
    "load_corpus",
    "load_volume",
    "split_slices",
    "write_sample",
    "write_splits",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = _REPO_ROOT / "data" / "real"
"""Where fetched corpora live (git-ignored). ``MEDRECON_REAL_DATA`` overrides it."""
SPLITS_DIR = _REPO_ROOT / "data" / "splits"
CACHED_SIZES = (64, 128, 256)
CONVERSION_VERSION = 1  # bump when the conversion changes: cached arrays are then rebuilt from raw files

# The documented conversion constants (see the module docstring).
CT_HU_LOW, CT_HU_HIGH = -1000.0, 1000.0  # x = clip((HU - low) / (high - low), 0, 1)
MRI_PERCENTILE = 99.5  # robust scale: this percentile of the non-zero voxels
EMPTY_THRESHOLD = 0.1  # a pixel is foreground above this (converted) value ...
EMPTY_MIN_FRACTION = 0.1  # ... and a slice is kept when this fraction is foreground


class RealDataError(RuntimeError):
    """The fetched corpora are missing, stale or asked for with bad arguments."""


class FetchError(RealDataError):
    """A source could not be downloaded, failed its checksum, or could not be extracted."""


@dataclass(frozen=True)
class Source:
    """One archive from a package registry. ``kind``: ``pypi`` (``pip download``) or ``debian`` (``apt-get download``)."""

    name: str
    kind: str
    package: str
    version: str
    filename: str
    sha256: str
    members: tuple[str, ...]  # paths inside the archive to keep (raw files)
    licence: str  # path inside the archive of the licence text

    def spec(self) -> str:
        return f"{self.package}=={self.version}" if self.kind == "pypi" else f"{self.package}={self.version}"


@dataclass(frozen=True)
class Subject:
    id: str
    modality: str  # "ct" | "mri"
    source: str  # Source.name
    member: str  # raw file (a Source member)
    reader: str  # "nrrd" | "inv3" | "nifti"


SOURCES: tuple[Source, ...] = (
    Source(
        "pyradiomics",
        "pypi",
        "pyradiomics",
        "3.0.1",
        "pyradiomics-3.0.1.tar.gz",
        "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
        ("pyradiomics-3.0.1/data/lung1_image.nrrd", "pyradiomics-3.0.1/data/lung2_image.nrrd"),
        "pyradiomics-3.0.1/LICENSE.txt",
    ),
    Source(
        "invesalius-examples",
        "debian",
        "invesalius-examples",
        "3.1.99998-4",
        "invesalius-examples_3.1.99998-4_all.deb",
        "f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97",
        ("usr/share/doc/invesalius-examples/examples/Cranium.inv3",),
        "usr/share/doc/invesalius-examples/copyright",
    ),
    Source(
        "mricron-data",
        "debian",
        "mricron-data",
        "1.2.20211006+dfsg-4",
        "mricron-data_1.2.20211006+dfsg-4_all.deb",
        "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
        ("usr/share/mricron/templates/ch2bet.nii.gz",),
        "usr/share/doc/mricron-data/copyright",
    ),
    Source(
        "nilearn",
        "pypi",
        "nilearn",
        "0.14.1",
        "nilearn-0.14.1-py3-none-any.whl",
        "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
        ("nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",),
        "nilearn-0.14.1.dist-info/licenses/LICENSE",
    ),
)

SUBJECTS: dict[str, Subject] = {
    s.id: s
    for s in (
        Subject("lung1", "ct", "pyradiomics", "pyradiomics-3.0.1/data/lung1_image.nrrd", "nrrd"),
        Subject("lung2", "ct", "pyradiomics", "pyradiomics-3.0.1/data/lung2_image.nrrd", "nrrd"),
        Subject(
            "head",
            "ct",
            "invesalius-examples",
            "usr/share/doc/invesalius-examples/examples/Cranium.inv3",
            "inv3",
        ),
        # ch2bet: Colin27 brain-extracted (1 mm), like the population template of the validation split.
        Subject("colin27", "mri", "mricron-data", "usr/share/mricron/templates/ch2bet.nii.gz", "nifti"),
        Subject(
            "mni152",
            "mri",
            "nilearn",
            "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "nifti",
        ),
    )
}

SPLITS: dict[tuple[str, str], tuple[str, ...]] = {
    ("ct", "train"): ("lung2", "head"),
    ("ct", "validation"): ("lung1",),
    ("mri", "train"): ("colin27",),
    ("mri", "validation"): ("mni152",),
}


class RealCorpus(NamedTuple):
    """``images``: (N, 1, S, S) float32 in [0, 1]; ``ids``: ``"subject:slice"`` for each image."""

    images: torch.Tensor
    ids: list[str]


def _root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    env = os.environ.get("MEDRECON_REAL_DATA")
    return Path(env) if env else DATA_ROOT


# --------------------------------------------------------------------------------------------- conversion
def convert_ct(hu: np.ndarray) -> np.ndarray:
    """HU -> ``clip((HU + 1000) / 2000, 0, 1)`` (float32): air 0, water 0.5, 1000 HU and above 1."""
    x = (np.asarray(hu, dtype=np.float32) - CT_HU_LOW) / (CT_HU_HIGH - CT_HU_LOW)
    return np.clip(x, 0.0, 1.0)


def convert_mri(magnitude: np.ndarray) -> np.ndarray:
    """Magnitude -> ``clip(m / p99.5(m[m > 0]), 0, 1)`` (float32), the percentile taken over the whole array."""
    m = np.abs(np.asarray(magnitude, dtype=np.float32))
    nz = m[m > 0]
    if nz.size == 0:
        raise RealDataError("MRI volume is all zeros: no robust scale")
    return np.clip(m / np.float32(np.percentile(nz, MRI_PERCENTILE)), 0.0, 1.0)


def kept_slices(volume: np.ndarray) -> list[int]:
    """Indices of the slices of a converted (Z, H, W) volume that pass the empty-slice rule."""
    frac = (np.asarray(volume) > EMPTY_THRESHOLD).mean(axis=(1, 2))
    return [int(i) for i in np.flatnonzero(frac >= EMPTY_MIN_FRACTION)]


def _square(image: np.ndarray, pad: bool) -> np.ndarray:
    h, w = image.shape
    if h == w:
        return image
    if pad:
        s = max(h, w)
        out = np.zeros((s, s), dtype=image.dtype)
        out[(s - h) // 2 : (s - h) // 2 + h, (s - w) // 2 : (s - w) // 2 + w] = image
        return out
    s = min(h, w)
    return image[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]


def _resize_volume(volume: np.ndarray, size: int, *, pad: bool) -> np.ndarray:
    """(Z, H, W) in [0, 1] -> (Z, size, size) float32: square each slice, resize with anti-aliasing."""
    from skimage.transform import resize

    out = np.empty((volume.shape[0], size, size), dtype=np.float32)
    for k, sl in enumerate(volume):
        sq = _square(sl, pad)
        if sq.shape[0] == size:
            out[k] = sq
        else:
            r = resize(
                sq.astype(np.float64),
                (size, size),
                order=1,
                anti_aliasing=sq.shape[0] > size,
                preserve_range=True,
            )
            out[k] = np.clip(r, 0.0, 1.0)
    return out


def _read_raw(subject: Subject, raw_dir: Path) -> np.ndarray:
    """The subject's volume as (Z, H, W) axial slices, anterior at the top, in HU (CT) or magnitude (MRI)."""
    path = raw_dir / subject.source / subject.member
    if not path.exists():
        raise RealDataError(
            f"raw file {path} is missing: run `make data` (python -m medrecon.data.real fetch)"
        )
    if subject.reader == "nrrd":
        import nrrd

        data, _ = nrrd.read(str(path))  # (x, y, z) in LPS: x to the left, y to posterior
        return np.transpose(data, (2, 1, 0))  # (z, y, x): rows anterior -> posterior
    if subject.reader == "inv3":
        # An InVesalius project: a gzip tar whose main.plist gives the int16 matrix.dat shape (z, y, x).
        import plistlib

        with tarfile.open(path, "r:gz") as tar:
            names = tar.getnames()
            main = next(n for n in names if n.endswith("/main.plist"))
            meta = plistlib.loads(tar.extractfile(main).read())["matrix"]
            mat = next(n for n in names if n.endswith("/" + meta["filename"]))
            raw = tar.extractfile(mat).read()
        return np.frombuffer(raw, dtype="<" + np.dtype(meta["dtype"]).str[1:]).reshape(meta["shape"])
    if subject.reader == "nifti":
        import nibabel as nib

        img = nib.as_closest_canonical(nib.load(str(path)))  # RAS: (x right, y anterior, z superior)
        data = np.asarray(img.dataobj, dtype=np.float32)
        return np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, :])  # (z, y, x), anterior at top
    raise RealDataError(f"unknown reader {subject.reader!r}")


def _converted_volume(subject: Subject, raw_dir: Path) -> np.ndarray:
    raw = _read_raw(subject, raw_dir)
    return convert_ct(raw) if subject.modality == "ct" else convert_mri(raw)


# -------------------------------------------------------------------------------------------------- fetch
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(cmd, 127, "", str(exc))


def _pip_download(source: Source, dest: Path) -> None:
    # --no-build-isolation: pip prepares an sdist's metadata with the setuptools/numpy already installed.
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "-q",
        source.spec(),
        "-d",
        str(dest),
    ]
    r = _run(cmd, dest)
    if r.returncode != 0:
        raise FetchError(
            f"could not download {source.name} ({source.spec()}) from the Python package index with "
            f"`{' '.join(cmd[2:])}`: {_last_line(r)}. Check that the index pip uses is reachable, or put "
            f"{source.filename} (sha256 {source.sha256}) into {dest} and rerun `make data`"
        )


def _apt_download(source: Source, dest: Path) -> None:
    cmd = ["apt-get", "download", source.spec()]
    r = _run(cmd, dest)
    if r.returncode != 0 and r.returncode != 127 and hasattr(os, "geteuid") and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"], dest)  # a fresh machine has no package lists yet
        r = _run(cmd, dest)
    if r.returncode != 0:
        raise FetchError(
            f"could not download {source.name} ({source.spec()}) from the Debian archive with "
            f"`{' '.join(cmd)}`: {_last_line(r)}. Run `apt-get update` (as root) and retry, or put "
            f"{source.filename} (sha256 {source.sha256}) into {dest} and rerun `make data`"
        )


def _last_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (r.stderr or r.stdout or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"exit status {r.returncode}"


DOWNLOADERS: dict[str, Callable[[Source, Path], None]] = {"pypi": _pip_download, "debian": _apt_download}
"""Per source kind: ``download(source, dest_dir)`` leaves ``dest_dir / source.filename`` or raises FetchError."""


def _extract(source: Source, archive: Path, out: Path) -> None:
    """Copy ``source.members`` and its licence from the archive into ``out`` (same relative paths)."""
    wanted = (*source.members, source.licence)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{source.name}-"))
    tmp.chmod(0o755)
    try:
        if archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive, "r:gz") as tar:
                for m in wanted:
                    _write_member(tmp / m, tar.extractfile(m).read())
        elif archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as z:
                for m in wanted:
                    _write_member(tmp / m, z.read(m))
        elif archive.suffix == ".deb":
            unpacked = tmp / "_deb"
            r = _run(["dpkg-deb", "-x", str(archive), str(unpacked)], tmp)
            if r.returncode != 0:
                raise FetchError(f"could not unpack {archive} with `dpkg-deb -x`: {_last_line(r)}")
            for m in wanted:
                _write_member(tmp / m, (unpacked / m).read_bytes())
            shutil.rmtree(unpacked)
        else:
            raise FetchError(f"unknown archive type: {archive}")
    except (KeyError, FileNotFoundError, tarfile.TarError, zipfile.BadZipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"{archive} does not hold the expected files {wanted}: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def _write_member(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _manifest_path(root: Path) -> Path:
    return root / "manifest.json"


def _read_manifest(root: Path) -> dict:
    p = _manifest_path(root)
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _fetch_source(source: Source, root: Path, log: Callable[[str], None]) -> None:
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / source.filename
    if not (archive.exists() and _sha256(archive) == source.sha256):
        if archive.exists():
            archive.unlink()
        t0 = time.perf_counter()
        DOWNLOADERS[source.kind](source, downloads)
        if not archive.exists():
            raise FetchError(f"downloading {source.spec()} did not produce {archive}")
        log(
            f"  downloaded {source.filename} ({archive.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)"
        )
    got = _sha256(archive)
    if got != source.sha256:
        bad = archive.with_name(archive.name + ".sha256-mismatch")
        archive.replace(bad)
        raise FetchError(
            f"sha256 mismatch for {source.filename} ({source.name}): expected {source.sha256}, "
            f"got {got}; the file was kept as {bad} for inspection. The registry served a different "
            "archive than the one pinned in medrecon/data/real.py: do not use it; report it"
        )
    _extract(source, archive, root / "raw" / source.name)
    archive.unlink()  # the raw members and the licence are kept; the archive is not needed any more


def _convert_subject(subject: Subject, root: Path, sizes: Sequence[int]) -> None:
    from medrecon.utils_io import atomic_save_npy

    volume = _converted_volume(subject, root / "raw")
    (root / "cache" / subject.id).mkdir(parents=True, exist_ok=True)
    for size in sizes:
        atomic_save_npy(
            _resize_volume(volume, size, pad=subject.modality == "mri"),
            root / "cache" / subject.id / f"{size}.npy",
        )


def _source_state(source: Source, manifest: dict) -> bool:
    entry = manifest.get("sources", {}).get(source.name, {})
    return (
        entry.get("sha256") == source.sha256
        and entry.get("conversion") == CONVERSION_VERSION
        and entry.get("members") == list(source.members)
    )


def fetch(
    root: str | os.PathLike | None = None,
    *,
    sources: Sequence[Source] | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Download, verify, extract and convert every source into ``root`` (default ``data/real/``). Idempotent.

    A source whose manifest entry matches its pinned sha256 and the conversion version is skipped
    (``force=True`` fetches again). Returns the manifest. Raises :class:`FetchError` naming the source.
    """
    from medrecon.utils_io import atomic_write_text

    root = _root(root)
    root.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: None)
    sources = SOURCES if sources is None else tuple(sources)
    manifest = _read_manifest(root)
    manifest.setdefault("sources", {})
    for source in sources:
        if not force and _source_state(source, manifest):
            log(f"{source.name}: cached in {root}")
            continue
        t0 = time.perf_counter()
        raw_ok = all((root / "raw" / source.name / m).exists() for m in source.members)
        entry = manifest["sources"].get(source.name, {})
        if force or not raw_ok or entry.get("sha256") != source.sha256:
            log(f"{source.name}: fetching {source.spec()} ({source.kind})")
            _fetch_source(source, root, log)
        for subject in SUBJECTS.values():
            if subject.source == source.name:
                _convert_subject(subject, root, CACHED_SIZES)
        manifest["sources"][source.name] = {
            "spec": source.spec(),
            "sha256": source.sha256,
            "conversion": CONVERSION_VERSION,
            "members": list(source.members),
            "subjects": [s.id for s in SUBJECTS.values() if s.source == source.name],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        atomic_write_text(_manifest_path(root), json.dumps(manifest, indent=1))
        log(f"{source.name}: ready ({manifest['sources'][source.name]['seconds']} s)")
    return manifest


def is_available(modality: str | None = None, root: str | os.PathLike | None = None) -> bool:
    """True when the sources of ``modality`` (or of every subject) have been fetched and converted."""
    manifest = _read_manifest(_root(root))
    needed = {s.source for s in SUBJECTS.values() if modality is None or s.modality == modality}
    return all(_source_state(src, manifest) for src in SOURCES if src.name in needed)


# ------------------------------------------------------------------------------------------------- splits
def _split_file(modality: str, split: str) -> Path:
    return SPLITS_DIR / f"{modality}_{split}.txt"


def _check_split(modality: str, split: str) -> None:
    if (modality, split) not in SPLITS:
        raise RealDataError(
            f"unknown corpus {modality!r}/{split!r}: expected modality 'ct' or 'mri' and "
            "split 'train' or 'validation'"
        )


def split_slices(modality: str, split: str = "train") -> list[tuple[str, int]]:
    """The committed list ``[(subject, slice_index), ...]`` of ``data/splits/{modality}_{split}.txt``."""
    _check_split(modality, split)
    out = []
    for line in _split_file(modality, split).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            subject, idx = line.split()
            out.append((subject, int(idx)))
    return out


def write_splits(root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None) -> dict:
    """Apply the empty-slice rule to every subject and write the split files; returns the slice counts."""
    from medrecon.utils_io import atomic_write_text

    raw = _root(root) / "raw"
    out_dir = Path(out_dir) if out_dir is not None else SPLITS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for (modality, split), subjects in SPLITS.items():
        lines = [
            f"# {modality} {split}: subjects {', '.join(subjects)}; one 'subject slice' per kept slice",
            "# (empty-slice rule and conversion: medrecon/data/real.py)",
        ]
        for sid in subjects:
            kept = kept_slices(_converted_volume(SUBJECTS[sid], raw))
            counts[sid] = len(kept)
            lines += [f"{sid} {k}" for k in kept]
        atomic_write_text(out_dir / f"{modality}_{split}.txt", "\n".join(lines) + "\n")
    return counts


# -------------------------------------------------------------------------------------------------- loading
def _cached_volume(subject: Subject, size: int, root: Path) -> np.ndarray:
    if not _source_state(next(s for s in SOURCES if s.name == subject.source), _read_manifest(root)):
        raise RealDataError(
            f"the real-data corpus ({subject.id}, from {subject.source}) is not in {root}: "
            "run `make data` (python -m medrecon.data.real fetch) first"
        )
    path = root / "cache" / subject.id / f"{size}.npy"
    if not path.exists():
        _convert_subject(subject, root, [size])
    return np.load(path, mmap_mode="r")


def load_volume(subject: str, size: int | None = None, root: str | os.PathLike | None = None) -> np.ndarray:
    """The subject's converted volume (Z, H, W) float32 in [0, 1], every axial slice (empty ones included).

    ``size=None``: native in-plane resolution (CT 512/256 px, MRI 181x217 or 197x233, not squared);
    otherwise squared and resized to ``size x size`` as for :func:`load_corpus`.
    """
    if subject not in SUBJECTS:
        raise RealDataError(f"unknown subject {subject!r}: expected one of {sorted(SUBJECTS)}")
    root = _root(root)
    if size is None:
        _cached_volume(SUBJECTS[subject], CACHED_SIZES[0], root)  # checks that the data were fetched
        return _converted_volume(SUBJECTS[subject], root / "raw")
    return np.array(_cached_volume(SUBJECTS[subject], _check_size(size), root))


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= int(size) <= 1024:
        raise RealDataError(f"size must be an integer in [8, 1024], got {size!r}")
    return int(size)


def _spaced(n_total: int, n: int | None) -> list[int]:
    if n is None:
        return list(range(n_total))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise RealDataError(f"slices must be None or a positive integer, got {n!r}")
    if n > n_total:
        raise RealDataError(f"asked for {n} slices but the split has only {n_total}")
    return [int(i) for i in np.rint(np.linspace(0, n_total - 1, n))]


def load_corpus(
    modality: str,
    split: str = "train",
    size: int = 128,
    slices: int | None = None,
    root: str | os.PathLike | None = None,
) -> RealCorpus:
    """Slices of a split as ``(images (N, 1, size, size) float32 in [0, 1], ids ["subject:slice", ...])``.

    ``slices=None`` returns every kept slice of the split's subjects (``data/splits``); ``slices=n``
    returns ``n`` of them spaced evenly over the split's list (neighbouring slices are nearly identical).

    >>> load_corpus("ct", "test")
    Traceback (most recent call last):
    ...
    medrecon.data.real.RealDataError: unknown corpus 'ct'/'test': expected modality 'ct' or 'mri' and split 'train' or 'validation'
    """
    import torch

    _check_split(modality, split)
    size = _check_size(size)
    root = _root(root)
    entries = split_slices(modality, split)
    chosen = [entries[i] for i in _spaced(len(entries), slices)]
    volumes = {sid: _cached_volume(SUBJECTS[sid], size, root) for sid in dict.fromkeys(s for s, _ in chosen)}
    stack = np.stack([volumes[sid][k] for sid, k in chosen])[:, None]  # (N, 1, S, S)
    return RealCorpus(
        torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32)), [f"{sid}:{k}" for sid, k in chosen]
    )


def write_sample(
    out_dir: str | os.PathLike, *, n: int = 6, size: int = 128, root: str | os.PathLike | None = None
) -> list[Path]:
    """Write ``n`` evenly spaced CT validation slices (lung1, BSD-3) as ``.npy`` plus the source's licence.

    This makes the bundled ``data/real_sample/`` (see its README card): ``{subject}_s{slice:02d}.npy``,
    (size, size) float32 in [0, 1], and ``LICENSE.txt`` (pyradiomics' BSD-3 licence).
    """
    from medrecon.utils_io import atomic_save_npy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, ids = load_corpus("ct", "validation", size=size, slices=n, root=root)
    paths = []
    for img, sid in zip(images, ids):
        subject, k = sid.split(":")
        paths.append(atomic_save_npy(img[0].numpy(), out / f"{subject}_s{int(k):02d}.npy"))
    licence = _root(root) / "raw" / "pyradiomics" / SOURCES[0].licence
    shutil.copyfile(licence, out / "LICENSE.txt")
    return paths


# ---------------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrecon.data.real", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download, verify, extract and convert the corpora (idempotent)")
    f.add_argument("--root", default=None, help=f"target folder (default {DATA_ROOT})")
    f.add_argument("--force", action="store_true", help="fetch again even when cached")
    s = sub.add_parser("splits", help="rewrite data/splits/*.txt from the empty-slice rule")
    s.add_argument("--root", default=None)
    st = sub.add_parser("status", help="say what is fetched and the slice counts of each split")
    st.add_argument("--root", default=None)
    sm = sub.add_parser("sample", help="write the bundled CT sample (lung1 validation slices) to --out")
    sm.add_argument("--out", required=True)
    sm.add_argument("--n", type=int, default=6)
    sm.add_argument("--size", type=int, default=128)
    sm.add_argument("--root", default=None)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            t0 = time.perf_counter()
            fetch(args.root, force=args.force)
            print(f"real data ready in {_root(args.root)} ({time.perf_counter() - t0:.1f} s)")
        elif args.cmd == "splits":
            print(json.dumps(write_splits(args.root)))
        elif args.cmd == "sample":
            for p in write_sample(args.out, n=args.n, size=args.size, root=args.root):
                print(p)
        else:
            for (modality, split), subjects in SPLITS.items():
                n = len(split_slices(modality, split))
                print(
                    f"{modality} {split}: {len(subjects)} subject(s) {', '.join(subjects)}; {n} slices; "
                    f"fetched: {is_available(modality, args.root)}"
                )
    except RealDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
