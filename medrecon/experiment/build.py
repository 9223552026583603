"""Building blocks of an experiment: the forward operator of a spec, the noisy measurements, the seeds."""

from __future__ import annotations

import zlib
from typing import Any

from ..config import ConfigError
from .config import CTOperatorSpec, ExperimentConfig, MRIOperatorSpec

__all__ = [
    "build_operator",
    "check_resources",
    "image_seed",
    "load_config_images",
    "memory_estimate",
    "simulate",
    "simulate_poisson_log",
    "torch_dtype",
]


def torch_dtype(name: str):
    """``"float32"`` / ``"float64"`` -> the torch dtype."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def load_config_images(cfg: ExperimentConfig, notes: list[str] | None = None) -> list:
    """The ``ImageRecord`` list of every ``images:`` entry of ``cfg`` at ``cfg.image_size``, in order;
    what the image rule changed is appended to ``notes`` (see :mod:`medrecon.data.images`)."""
    from ..data.images import load_image_records

    records = []
    for spec in cfg.images:
        records += load_image_records(
            spec.kind,
            cfg.image_size,
            path=spec.path,
            name=spec.name,
            n=spec.n,
            seed=spec.seed,
            slices=spec.slices,
            window=spec.window,
            split=spec.split,
            notes=notes,
        )
    return records


def build_operator(spec: CTOperatorSpec | MRIOperatorSpec, size: int, *, seed: int):
    """The forward operator of ``spec`` for ``size x size`` images (float32).

    A spec the operator refuses (a geometry that cannot work, a backend that is not installed) is a
    :class:`~medrecon.config.ConfigError` naming the ``operator`` section."""
    try:
        if isinstance(spec, CTOperatorSpec):
            return _build_ct(spec, size)
        return _build_mri(spec, size, seed=seed)
    except ConfigError:
        raise
    except (ValueError, RuntimeError, ImportError) as exc:
        raise ConfigError(f"operator ({spec.modality}): {' '.join(str(exc).split())}") from None


def _build_ct(spec: CTOperatorSpec, size: int):
    from ..operators import ct

    kwargs: dict[str, Any] = {"backend": spec.backend}
    if spec.n_detectors is not None:
        kwargs["n_detectors"] = spec.n_detectors
    if spec.geometry == "parallel":
        return ct.ParallelBeamCT(size, spec.n_angles, **kwargs)
    if spec.source_radius is None or spec.detector_radius is None:
        raise ConfigError("operator: geometry 'fan' needs source_radius and detector_radius")
    return ct.FanBeamCT(
        size, spec.n_angles, source_radius=spec.source_radius, detector_radius=spec.detector_radius, **kwargs
    )


def _build_mri(spec: MRIOperatorSpec, size: int, *, seed: int):
    from ..operators.masks import make_mask
    from ..operators.mri import MultiCoilMRI, SingleCoilMRI

    mask = make_mask(
        spec.mask,
        (size, size),
        spec.acceleration,
        spec.center_fraction,
        seed=spec.mask_seed if spec.mask_seed is not None else seed,
    )
    if spec.coils == 1:
        return SingleCoilMRI(mask)
    from ..operators.coils import coil_maps

    return MultiCoilMRI(mask, coil_maps((size, size), spec.coils))


def simulate(op, x, noise_level: float, generator):
    """``(y, sigma)``: ``y = A x + n`` with the noise model of :mod:`medrecon.experiment`; ``sigma (B,)``.

    ``generator`` is a CPU ``torch.Generator``; the noise is drawn on the CPU (so a seed gives the same
    noise on every device) and moved to the operator's device.
    """
    import torch

    with torch.no_grad():
        clean = op(x)
        ones = torch.ones((1, 1, *op.out_shape), dtype=op.out_dtype, device=op.device)
        support = op(op.adjoint(ones)).abs() > 0  # entries in the range of A: (1, 1, *out_shape)
        support_f = support.to(clean.real.dtype)
        count = support_f.sum()
        mean_abs = (clean.abs() * support_f).flatten(1).sum(1) / count  # (B,)
        sigma = noise_level * mean_abs
        shape = clean.shape
        real = clean.real.dtype if clean.is_complex() else clean.dtype
        n = torch.randn(shape, generator=generator, dtype=real)
        if clean.is_complex():
            n = torch.complex(n, torch.randn(shape, generator=generator, dtype=real))
        n = n.to(clean.device) * support_f * sigma.reshape(-1, *([1] * (len(shape) - 1)))
        return clean + n.to(clean.dtype), sigma


def image_seed(seed: int, name: str, purpose: str) -> int:
    """The seed of image ``name``'s generator for ``purpose`` (``"noise"``, ``"method"``): a stable
    32-bit hash (``zlib.crc32``), the same on every rank and in every image order.

    >>> image_seed(0, "shepp_logan", "noise") == image_seed(0, "shepp_logan", "noise")
    True
    """
    return zlib.crc32(f"{int(seed)}/{name}/{purpose}".encode())


#: working copies of one image and its measurements a method may hold at once (iterates, gradients,
#: residuals, solver state, the network's activations are not counted): a deliberately low bound
_WORKING_COPIES = 8


def memory_estimate(cfg: ExperimentConfig) -> int:
    """A lower bound of the bytes one image of ``cfg`` needs while a method runs: image and measurements
    (CT: angles x detectors; MRI: coils x the image, complex) times a few working copies."""
    s = cfg.image_size
    real = 4 if cfg.dtype == "float32" else 8
    if isinstance(cfg.operator, CTOperatorSpec):
        n_det = cfg.operator.n_detectors or int(1.5 * s) + 2  # about the image diagonal (the CT default)
        measurement = cfg.operator.n_angles * n_det * real
        image = s * s * real
    else:
        measurement = cfg.operator.coils * s * s * 2 * real
        image = s * s * 2 * real
    return _WORKING_COPIES * (image + measurement)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_resources(cfg: ExperimentConfig) -> None:
    """ConfigErrors for what this machine cannot run: a device it does not have, images too large for its memory."""
    from ..config import check_device

    check_device(cfg.device, "device")
    need = memory_estimate(cfg)
    have = _available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"config key 'image_size': {cfg.image_size}x{cfg.image_size} images need at least "
            f"{need / 2**30:.1f} GiB while a method runs (estimate), this machine has "
            f"{have / 2**30:.1f} GiB available; choose a smaller image_size"
        )


def simulate_poisson_log(op, x, spec: CTOperatorSpec, image_size: int, generator):
    """``(y, sigma)``: LoDoPaB-CT's post-log Poisson data from ``x`` (``mu / mu_max``) in the operator's
    pixel units (:func:`medrecon.data.lodopab.poisson_log_noise`, ``spec.photons`` per bin, pixel side
    ``spec.field_of_view_m / image_size`` metres); ``sigma (B,)`` is the rms of ``y - A x`` (what the
    discrepancy principle needs). The noise is drawn on the CPU from ``generator``."""
    import torch

    from ..data.lodopab import MU_MAX, poisson_log_noise

    with torch.no_grad():
        clean = op(x)
        y = poisson_log_noise(
            clean.cpu(),
            photons=spec.photons,
            mu_max=MU_MAX,
            pixel_size_m=spec.field_of_view_m / image_size,
            generator=generator,
        ).to(clean.device)
        sigma = (y - clean).flatten(1).pow(2).mean(1).sqrt()
    return y, sigma
