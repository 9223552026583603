"""Measured data: reconstruct a file's own measurements instead of simulating them from an image.

A config with a ``measured:`` section (and ``images: []``) reconstructs

* ``kind: fastmri``: the k-space of a fastMRI file (``path``; ``slices``, default all), with the mask of
  the ``operator`` section (``mask``, ``acceleration``, ``center_fraction``; fixed per slice by
  ``stable_seed(file, slice)`` as fastMRI fixes validation masks) applied to it, or the file's own
  ``mask`` when it has one (test/challenge files); multi-coil files get coil maps estimated per slice
  from the slice's ACS lines (ESPIRiT). The result is centre-cropped to the target's size and compared
  with ``reconstruction_esc`` / ``reconstruction_rss``, when the file has one;
  ``readout_crop: 320`` keeps the centre 320 readout rows of the image (fastMRI's readout is oversampled by
  2 and its 320 x 320 target sits in the centre half): exact for column masks, and half the work;
* ``kind: lodopab``: LoDoPaB-CT observations (``path`` = the folder, ``split``, ``slices`` = sample
  indices, default ``[0]``), every ``angle_step``-th of the 1000 measured angles, on the documented
  geometry (:mod:`medrecon.data.lodopab`), compared with the ground-truth file when present;
* ``kind: sinogram``: a user's sinogram ``.npy`` ``(angles, detectors)`` or ``(n, angles, detectors)`` on
  the geometry of the ``operator`` section (``image_size`` the reconstruction size);
* ``kind: kspace``: a user's k-space ``.npy`` ``(H, W)`` / ``(n, H, W)`` complex (single coil), with the
  ``operator`` section's mask applied.

``target`` (sinogram/kspace): an optional ``.npy`` ground truth ``(S, S)`` / ``(n, S, S)``. Without a
ground truth the metrics are left empty and the figure shows the reconstructions without error maps.

**Scale.** Each measurement is divided by ``s`` = the 99.9th percentile of ``|direct(y)|`` (the FBP or
zero-filled image) so that method weights mean the same as on [0, 1] images; reconstructions and
targets are compared after the same division, which leaves PSNR (data range = max of the target), SSIM
(the same data range) and NMSE unchanged, i.e. the metrics are those on the target's own scale. The
``.h5`` outputs are multiplied back by ``s`` (the file's scale). The noise level of measured data is
unknown: ``lam: discrepancy``, ``noise`` and ``sweep`` need a simulation and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import ConfigError

__all__ = ["MeasuredSpec", "MeasuredProblem", "load_measured", "MEASURED_KINDS"]

MEASURED_KINDS = ("fastmri", "lodopab", "sinogram", "kspace")
SCALE_PERCENTILE = 99.9


@dataclass(frozen=True)
class MeasuredSpec:
    """The ``measured:`` section (see the module doc)."""

    kind: Literal["fastmri", "lodopab", "sinogram", "kspace"]
    path: str
    slices: list[int] | None = None
    split: Literal["train", "validation", "test"] = "test"
    angle_step: int = 1
    target: str | None = None
    readout_crop: int | None = None  # fastmri: keep this many centre readout rows (remove oversampling)

    def __post_init__(self) -> None:
        if self.angle_step < 1:
            raise ConfigError(f"config key 'measured.angle_step' must be >= 1, got {self.angle_step}")
        if self.target is not None and self.kind not in ("sinogram", "kspace"):
            raise ConfigError(
                f"config key 'measured.target' is for kinds sinogram and kspace; a {self.kind} "
                "file brings its own ground truth"
            )
        if self.angle_step != 1 and self.kind != "lodopab":
            raise ConfigError("config key 'measured.angle_step' is for kind lodopab (1000 measured angles)")
        if self.readout_crop is not None and (self.kind != "fastmri" or self.readout_crop < 1):
            raise ConfigError(
                "config key 'measured.readout_crop' is a positive number of readout rows, for kind "
                f"fastmri; got {self.readout_crop} for kind {self.kind}"
            )


@dataclass
class MeasuredProblem:
    """Measurements ready for the methods: per image ``ops[i]``, ``y[i]`` ``(1, 1, *out_shape)`` divided by
    ``scales[i]``; ``truth[i]`` ``(h, w)`` divided by the same scale, or None; ``crop`` maps a batch of
    reconstructed magnitudes ``(B, H, W)`` to the target's size."""

    names: list[str]
    ops: list[Any]
    y: list[Any]
    truth: list[np.ndarray] | None
    scales: list[float]
    records: list[Any]
    crop_size: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)

    def crop(self, mag: np.ndarray) -> np.ndarray:
        if self.crop_size is None:
            return mag
        h, w = self.crop_size
        H, W = mag.shape[-2:]
        top, left = (H - h) // 2, (W - w) // 2
        return mag[..., top : top + h, left : left + w]


def _refuse_unknown_noise(cfg) -> None:
    for i, m in enumerate(cfg.methods):
        if m.options.get("lam") in ("discrepancy", "sweep", "noise"):
            raise ConfigError(
                f"methods.{i} ({m.title}): lam: {m.options['lam']} needs a simulated noise level "
                "(discrepancy, noise) or a simulation (sweep); with measured data give lam a number"
            )


def _scale(op, y) -> float:
    import torch

    with torch.no_grad():
        d = op.direct(y).abs()
    s = float(torch.quantile(d.flatten().double()[:2_000_000], SCALE_PERCENTILE / 100))
    return s if s > 0 else 1.0


def load_measured(cfg, notes: list[str]) -> MeasuredProblem:
    """The :class:`MeasuredProblem` of ``cfg.measured`` (errors are ConfigErrors naming the section)."""
    from ..data.images import ImageLoadError, resolve_path

    spec: MeasuredSpec = cfg.measured
    _refuse_unknown_noise(cfg)
    want = "mri" if spec.kind in ("fastmri", "kspace") else "ct"
    if cfg.operator.modality != want:
        raise ConfigError(
            f"measured kind {spec.kind} needs operator.modality {want!r}, got {cfg.operator.modality!r}"
        )
    try:
        path = resolve_path(spec.path)
    except ImageLoadError as exc:
        raise ConfigError(f"config key 'measured.path': {exc}") from None
    loader = {"fastmri": _fastmri, "lodopab": _lodopab, "sinogram": _sinogram, "kspace": _kspace}[spec.kind]
    try:
        problem = loader(cfg, spec, path, notes)
    except (ValueError, OSError, KeyError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"measured ({spec.kind}, {path}): {' '.join(str(exc).split())}") from None
    dtype = {"float32": __import__("torch").float32, "float64": __import__("torch").float64}[cfg.dtype]
    problem.ops = [op.to(dtype) for op in problem.ops]
    for i, (op, y) in enumerate(zip(problem.ops, problem.y)):
        y = y.to(op.out_dtype)
        s = _scale(op, y)
        problem.y[i] = y / s
        problem.scales[i] = s
        if problem.truth is not None:
            problem.truth[i] = (problem.truth[i] / s).astype(np.float32)
        problem.records[i] = replace(
            problem.records[i], scale=s, image=problem.truth[i] if problem.truth is not None else None
        )
    return problem


def _record(name: str, image, kind: str, source: Path | None, slice_index: int | None):
    from ..data.images import ImageRecord

    return ImageRecord(name=name, image=image, kind=kind, source=source, slice_index=slice_index)


def _fastmri(cfg, spec: MeasuredSpec, path: Path, notes: list[str]) -> MeasuredProblem:
    import torch

    from ..data.fastmri import FastMRISliceDataset
    from ..operators.mri import MultiCoilMRI, SingleCoilMRI

    op_spec = cfg.operator
    ds = FastMRISliceDataset(
        [path],
        mask_kind=op_spec.mask,
        acceleration=op_spec.acceleration,
        center_fraction=op_spec.center_fraction,
        fixed_masks=True,
    )
    n = len(ds)
    chosen = list(range(n)) if spec.slices is None else list(spec.slices)
    bad = [s for s in chosen if not 0 <= s < n]
    if bad:
        raise ConfigError(f"config key 'measured.slices': {bad} out of range ({path.name} has {n} slices)")
    names, ops, ys, truth, records = [], [], [], [], []
    crop = None
    for s in chosen:
        sample = ds[s]
        k = sample.masked_kspace  # (coils, H, W), the file's own k-space times the mask
        mask = sample.mask if sample.mask is not None else torch.ones(k.shape[-2:])
        if spec.readout_crop is not None:
            k, mask = _crop_readout(k, mask, spec.readout_crop, path)
        if k.shape[0] == 1:
            op = SingleCoilMRI(mask)
            y = k[None]  # (1, 1, H, W)
        else:
            from ..operators.coils import estimate_sensitivities

            maps = estimate_sensitivities(k, mask, method=op_spec.sensitivity_method)
            op = MultiCoilMRI(mask, maps)
            y = k[None, None]  # (1, 1, coils, H, W)
        name = f"{path.stem}_s{s}"
        names.append(name)
        ops.append(op)
        ys.append(y)
        records.append(_record(name, None, "fastmri", path, s))
        if sample.target is not None:
            truth.append(sample.target.numpy().astype(np.float64))
            crop = tuple(sample.target.shape[-2:])
        else:
            crop = tuple(sample.recon_size)
    has_truth = len(truth) == len(chosen)
    notes.append(
        f"measured: {path.name}, {len(chosen)} slice(s), {'multi' if ys[0].dim() == 5 else 'single'}-coil "
        f"k-space {tuple(ys[0].shape[-2:])}, reconstructions centre-cropped to {crop}"
        + ("" if has_truth else "; the file has no target: metrics are left empty")
    )
    return MeasuredProblem(names, ops, ys, truth if has_truth else None, [1.0] * len(names), records, crop)


def _crop_readout(k, mask, rows: int, path: Path):
    """Remove readout oversampling (:func:`medrecon.data.mri_sim.crop_readout`): exact for column masks,
    which are the same on every readout row; the mask keeps its columns."""
    from ..data.mri_sim import crop_readout

    if rows > k.shape[-2]:
        raise ConfigError(
            f"config key 'measured.readout_crop': {rows} rows, but {path.name} has {k.shape[-2]}"
        )
    if not bool((mask == mask[:1]).all()):
        raise ConfigError(
            "config key 'measured.readout_crop' needs a column mask (the same on every readout "
            "row); this mask varies along the readout"
        )
    return crop_readout(k, rows), mask[:rows]


def _lodopab(cfg, spec: MeasuredSpec, path: Path, notes: list[str]) -> MeasuredProblem:
    import torch

    from ..data import lodopab as L

    ds = L.LoDoPaBDataset(path, spec.split)
    if not ds.has_observation:
        raise ConfigError(f"measured (lodopab): no observation_{spec.split}_NNN files in {path}")
    chosen = [0] if spec.slices is None else list(spec.slices)
    bad = [s for s in chosen if not 0 <= s < len(ds)]
    if bad:
        raise ConfigError(
            f"config key 'measured.slices': {bad} out of range ({spec.split} has {len(ds)} samples)"
        )
    op = L.lodopab_operator(spec.angle_step, backend=cfg.operator.backend)
    names, ys, truth, records = [], [], [], []
    for s in chosen:
        sample = ds[s]
        obs = L.subsample_angles(torch.from_numpy(sample.observation), spec.angle_step)
        ys.append(L.observation_to_operator(obs)[None, None])  # (1, 1, angles, 513) in pixels
        names.append(f"lodopab_{sample.name}")
        records.append(_record(names[-1], None, "lodopab", path, s))
        if sample.ground_truth is not None:
            truth.append(sample.ground_truth.astype(np.float64))
    notes.append(
        f"measured: LoDoPaB-CT {spec.split} samples {chosen}, {op.out_shape[0]} of the 1000 measured "
        "angles, 362x362 on the documented geometry (operator geometry keys are not used)"
    )
    return MeasuredProblem(
        names,
        [op] * len(chosen),
        ys,
        truth if len(truth) == len(chosen) else None,
        [1.0] * len(chosen),
        records,
    )


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"config key 'measured.{what}': {path} is not a readable .npy array ({exc})"
        ) from None


def _targets(cfg, spec: MeasuredSpec, n: int, shape: tuple[int, int]) -> list[np.ndarray] | None:
    from ..data.images import ImageLoadError, resolve_path

    if spec.target is None:
        return None
    try:
        p = resolve_path(spec.target)
    except ImageLoadError as exc:
        raise ConfigError(f"config key 'measured.target': {exc}") from None
    t = _load_npy(p, "target")
    t = t[None] if t.ndim == 2 else t
    if t.shape != (n, *shape):
        raise ConfigError(
            f"config key 'measured.target': expected shape {(n, *shape)} (or {shape} for one "
            f"image), got {t.shape}"
        )
    return [np.abs(a).astype(np.float64) for a in t]


def _sinogram(cfg, spec: MeasuredSpec, path: Path, notes: list[str]) -> MeasuredProblem:
    import torch

    from .build import build_operator

    sino = _load_npy(path, "path")
    sino = sino[None] if sino.ndim == 2 else sino
    op = build_operator(cfg.operator, cfg.image_size, seed=cfg.seed)
    if sino.ndim != 3 or tuple(sino.shape[1:]) != tuple(op.out_shape) or np.iscomplexobj(sino):
        raise ConfigError(
            f"config key 'measured.path': {path.name} has shape {sino.shape}; the operator section "
            f"gives sinograms (angles, detectors) = {tuple(op.out_shape)}: set operator.n_angles "
            "and operator.n_detectors to the file's"
        )
    n = sino.shape[0]
    names = [f"{path.stem}_{i}" if n > 1 else path.stem for i in range(n)]
    ys = [torch.from_numpy(np.ascontiguousarray(s, dtype=np.float64))[None, None] for s in sino]
    truth = _targets(cfg, spec, n, (cfg.image_size, cfg.image_size))
    notes.append(
        f"measured: {n} sinogram(s) from {path.name} on the operator section's geometry"
        + ("" if truth is not None else "; no target: metrics are left empty")
    )
    records = [_record(nm, None, "sinogram", path, i) for i, nm in enumerate(names)]
    return MeasuredProblem(names, [op] * n, ys, truth, [1.0] * n, records)


def _kspace(cfg, spec: MeasuredSpec, path: Path, notes: list[str]) -> MeasuredProblem:
    import torch

    from ..operators.masks import make_mask
    from ..operators.mri import SingleCoilMRI

    k = _load_npy(path, "path")
    k = k[None] if k.ndim == 2 else k
    if k.ndim != 3 or not np.iscomplexobj(k):
        raise ConfigError(
            f"config key 'measured.path': {path.name} must hold complex single-coil k-space "
            f"(H, W) or (n, H, W), got {k.dtype} {k.shape}"
        )
    o = cfg.operator
    mask = make_mask(
        o.mask,
        k.shape[-2:],
        o.acceleration,
        o.center_fraction,
        seed=o.mask_seed if o.mask_seed is not None else cfg.seed,
    )
    op = SingleCoilMRI(mask)
    n = k.shape[0]
    names = [f"{path.stem}_{i}" if n > 1 else path.stem for i in range(n)]
    ys = [(mask * torch.from_numpy(np.ascontiguousarray(a, dtype=np.complex128)))[None, None] for a in k]
    truth = _targets(cfg, spec, n, tuple(k.shape[-2:]))
    notes.append(
        f"measured: {n} k-space slice(s) from {path.name}, mask {o.mask} x{o.acceleration:g} applied"
        + ("" if truth is not None else "; no target: metrics are left empty")
    )
    records = [_record(nm, None, "kspace", path, i) for i, nm in enumerate(names)]
    return MeasuredProblem(names, [op] * n, ys, truth, [1.0] * n, records)
