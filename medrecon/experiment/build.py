"""Building blocks of an experiment: the forward operator of a spec, the noisy measurements, the seeds."""
from __future__ import annotations

import zlib
from typing import Any

from ..config import ConfigError
from .config import CTOperatorSpec, MRIOperatorSpec

__all__ = ["build_operator", "simulate", "image_seed", "torch_dtype"]


def torch_dtype(name: str):
    """``"float32"`` / ``"float64"`` -> the torch dtype."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


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
    return ct.FanBeamCT(size, spec.n_angles, source_radius=spec.source_radius,
                        detector_radius=spec.detector_radius, **kwargs)


def _build_mri(spec: MRIOperatorSpec, size: int, *, seed: int):
    from ..operators.masks import make_mask
    from ..operators.mri import MultiCoilMRI, SingleCoilMRI

    mask = make_mask(spec.mask, (size, size), spec.acceleration, spec.center_fraction,
                     seed=spec.mask_seed if spec.mask_seed is not None else seed)
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
