"""Read one DICOM image slice as Hounsfield units (CT) or rescaled values, with clear errors.

``HU = stored_value * RescaleSlope + RescaleIntercept`` (DICOM PS3.3 C.11.1.1.2, Modality LUT;
slope 1 and intercept 0 when the tags are absent, as for most MR images).

>>> from pydicom import examples
>>> hu = read_dicom_slice(examples.get_path("ct"))
>>> hu.shape, str(hu.dtype)
((128, 128), 'float32')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["DicomError", "read_dicom_slice"]


class DicomError(ValueError):
    """A file is not a readable single DICOM image slice (the message says why)."""


def read_dicom_slice(
    source: str | os.PathLike, *, frame: int | None = None, rescale: bool = True
) -> np.ndarray:
    """The pixel data of a DICOM file as ``(H, W)`` float32, rescaled to HU (``rescale=True``).

    Args:
        source: a path to a DICOM file (or a ``pydicom.Dataset``).
        frame: for multi-frame files, which frame; required when there are several.
        rescale: apply RescaleSlope / RescaleIntercept.

    Raises:
        DicomError: missing file, not DICOM, no PixelData, truncated or corrupt pixel data,
            colour images, or a multi-frame file without ``frame``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, pydicom.Dataset):
        ds, name = source, getattr(source, "filename", None) or "<dataset>"
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise DicomError(f"DICOM file {name} does not exist")
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            raise DicomError(
                f"{name} is not a DICOM file (no 'DICM' marker after the 128-byte preamble)"
            ) from None
        except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
            raise DicomError(
                f"{name} is truncated or corrupt: cannot parse its DICOM header ({exc})"
            ) from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomError(f"{name} has no PixelData element: it is not an image (or the file is incomplete)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises ValueError/AttributeError/RuntimeError/... for bad pixel data
        msg = " ".join(str(exc).split())
        if len(msg) > 200:
            msg = msg[:197] + "..."
        raise DicomError(
            f"{name}: cannot decode its pixel data, the file may be truncated or corrupt ({msg})"
        ) from None
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise DicomError(
            f"{name} is a colour image ({ds.SamplesPerPixel} samples per pixel); a greyscale slice is expected"
        )
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if n_frames > 1:
        if frame is None:
            raise DicomError(f"{name} has {n_frames} frames; pass frame= to choose one")
        if not 0 <= frame < n_frames:
            raise DicomError(f"{name}: frame {frame} out of range (0 .. {n_frames - 1})")
        pixels = pixels[frame]
    elif frame not in (None, 0):
        raise DicomError(f"{name} has a single frame; frame={frame} is out of range")
    if pixels.ndim != 2:
        raise DicomError(f"{name}: expected a 2-D slice, got pixel data of shape {pixels.shape}")
    image = pixels.astype(np.float32)
    if rescale:
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        image = image * np.float32(slope) + np.float32(intercept)
    if not np.isfinite(image).all():
        raise DicomError(f"{name}: pixel data contains non-finite values")
    return image
