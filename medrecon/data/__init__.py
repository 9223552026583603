"""Data: phantoms, DICOM slices, image files, fastMRI HDF5, real CT/MRI scans (``real``), and training datasets.

Heavy modules (h5py, pydicom) load on first use.
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "shepp_logan": "phantoms",
    "random_ellipses": "phantoms",
    "odl_phantom": "phantoms",
    "read_dicom_slice": "dicom",
    "DicomError": "dicom",
    "load_images": "images",
    "resolve_path": "images",
    "ImageLoadError": "images",
    "FastMRISliceDataset": "fastmri",
    "write_fastmri_h5": "fastmri",
    "save_reconstructions": "fastmri",
    "read_metadata": "fastmri",
    "FastMRIDataError": "fastmri",
    "load_corpus": "real",
    "load_volume": "real",
    "RealDataError": "real",
    "LoDoPaBDataset": "lodopab",
    "lodopab_operator": "lodopab",
    "poisson_log_noise": "lodopab",
    "LoDoPaBError": "lodopab",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'medrecon.data' has no attribute {name!r}")
