"""The reconstruction experiment behind ``medrecon reconstruct CONFIG.yaml``.

A config (YAML -> :class:`ExperimentConfig`, strict) names the images, the forward operator with its
noise, the methods with their options, and a seed. :func:`run_experiment` simulates the
measurements, runs every method on all images as one batch, and writes into the output directory:

* ``recon/<method>/<image>.npy``: each reconstruction ``(H, W)`` (complex for MRI);
* ``recon/<method>/<image>.h5`` (MRI only): fastMRI's layout, via ``medrecon.data.fastmri.save_reconstructions``;
* ``metrics.csv``: ``image,method,psnr,ssim,nmse,seconds`` (metrics on magnitudes against the
  ground truth, ``data_range = max(ground truth)`` as in fastMRI; ``seconds`` is the method's wall
  time for the whole batch divided by the number of images);
* ``summary.txt``: the printed table (mean and standard deviation over images, per method);
* ``figure.png``: ground truth, the baseline (FBP for CT, zero-filled for MRI), every method with its
  PSNR, and the absolute error maps;
* ``config.yaml`` (the resolved config) and ``run.json`` (seed, git revision, package versions, command).

Several processes: ``torchrun --nproc_per_node=N -m medrecon.cli.main reconstruct CONFIG`` shards
the images over the ranks (image ``i`` on rank ``i % N``); each rank writes its own ``recon/`` files,
rank 0 gathers the rows (``torch.distributed.all_gather_object``) and writes ``metrics.csv`` (same
rows, same order as one process), ``summary.txt``, ``figure.png``, ``config.yaml`` and ``run.json``.
A failure on any rank (bad image, failing method) is raised on every rank. The results equal a
single-process run's because nothing depends on which images share a batch: each image's noise
comes from its own generator seeded with ``image_seed(seed, name, "noise")``; deterministic methods
run on the rank's images as one batch (batched solvers treat the batch elements independently; the
results can differ from the one-process batch only by float rounding); random methods (those with
a ``generator`` option) run image by image with a generator seeded by ``image_seed(seed, name,
"method")``.

Noise model (``operator.noise_level = r``): ``y = A x + n`` with ``n`` white Gaussian of standard
deviation ``sigma = r * mean(|A x|)`` per image, the mean taken over the measurement entries in the
range of ``A`` (all sinogram entries for CT; the sampled k-space entries for MRI). For complex
(MRI) data the real and imaginary parts each get standard deviation ``sigma``. This ``sigma`` is what
``lam: discrepancy`` uses as ``noise_std`` unless the method's options give one.
"""
from __future__ import annotations

import csv
import io
import json
import pickle
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import ConfigError, dump_config, load_config
from .utils_io import git_revision

__all__ = ["simulate", "ExperimentConfig", "ImageSpec", "OperatorSpec", "MethodSpec", "load_experiment_config",
           "run_experiment", "check_output_dir", "OutputExistsError", "ExperimentError", "validate_methods",
           "image_seed"]


# --------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class ImageSpec:
    """One image source (see :mod:`medrecon.data.images` for the kinds)."""

    kind: str
    path: str | None = None
    name: str | None = None
    n: int = 1
    seed: int = 0
    slices: list[int] | None = None
    window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        from .data.images import IMAGE_KINDS

        if self.kind not in IMAGE_KINDS:
            raise ConfigError(f"unknown image kind {self.kind!r}; valid kinds: {', '.join(IMAGE_KINDS)}")


@dataclass(frozen=True)
class OperatorSpec:
    """The forward operator and the noise.

    CT: ``geometry`` parallel/fan, ``n_angles`` over [0, pi) (parallel) or [0, 2 pi) (fan, as the CT
    operator defines), ``n_detectors`` (default: the operator's), fan radii in pixels.
    MRI: ``mask`` kind (``medrecon.operators.masks.MASK_KINDS``), ``acceleration``,
    ``center_fraction``, ``coils`` (1: single-coil; more: simulated smooth coil maps), ``sensitivities``
    ``known`` (the simulated maps) or ``estimated`` (from the ACS region of the measured k-space).
    ``mask_seed``: defaults to the experiment seed.
    """

    modality: Literal["ct", "mri"]
    noise_level: float = 0.0
    # CT
    geometry: Literal["parallel", "fan"] = "parallel"
    n_angles: int = 30
    n_detectors: int | None = None
    source_radius: float | None = None
    detector_radius: float | None = None
    backend: str = "auto"
    # MRI
    mask: str = "equispaced"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    coils: int = 1
    sensitivities: Literal["known", "estimated"] = "known"
    mask_seed: int | None = None

    def __post_init__(self) -> None:
        if not self.noise_level >= 0:
            raise ConfigError(f"config key 'operator.noise_level' must be >= 0, got {self.noise_level}")
        if self.n_angles < 1:
            raise ConfigError(f"config key 'operator.n_angles' must be >= 1, got {self.n_angles}")
        if self.coils < 1:
            raise ConfigError(f"config key 'operator.coils' must be >= 1, got {self.coils}")


@dataclass(frozen=True)
class MethodSpec:
    """A method by registered name, its keyword options, and an optional label (to run one method twice)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class ExperimentConfig:
    """A reconstruction experiment (``medrecon reconstruct``)."""

    images: list[ImageSpec]
    operator: OperatorSpec
    methods: list[MethodSpec]
    name: str = "experiment"
    seed: int = 0
    image_size: int = 64
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    figure: bool = True
    figure_max_images: int = 4
    threads: int = 1  # torch intra-op CPU threads during the run (1 is fastest for small images)

    def __post_init__(self) -> None:
        if not self.images:
            raise ConfigError("config key 'images' must list at least one image source")
        if not self.methods:
            raise ConfigError("config key 'methods' must list at least one method")
        titles = [m.title for m in self.methods]
        dup = sorted({t for t in titles if titles.count(t) > 1})
        if dup:
            raise ConfigError(f"methods {', '.join(dup)} appear twice; give each a distinct 'label'")
        if self.image_size < 8:
            raise ConfigError(f"config key 'image_size' must be >= 8, got {self.image_size}")
        if self.threads < 1:
            raise ConfigError(f"config key 'threads' must be >= 1, got {self.threads}")


class OutputExistsError(FileExistsError):
    """The output directory exists and --overwrite was not given."""


class ExperimentError(RuntimeError):
    """A method failed while running (the message names it)."""


# options the experiment fills in itself
_AUTO_OPTIONS = ("callback", "x_true", "noise_std", "generator")


def load_experiment_config(source: str | Path | dict, overrides: list[str] = ()) -> ExperimentConfig:
    """Strict load plus :func:`validate_methods` (unknown methods / options are ConfigErrors)."""
    cfg = load_config(source, ExperimentConfig, overrides)
    validate_methods(cfg)
    return cfg


def validate_methods(cfg: ExperimentConfig) -> None:
    """Every method exists and every option is one it accepts (errors list the valid ones)."""
    from .methods import available_methods, get_method, method_options

    for i, m in enumerate(cfg.methods):
        try:
            get_method(m.name)
        except ValueError as exc:
            msg = str(exc)
            if "valid methods" not in msg:
                msg += f"; available methods: {', '.join(available_methods())}"
            raise ConfigError(f"methods.{i}: {msg}") from None
        valid = method_options(m.name)
        unknown = sorted(set(m.options) - set(valid))
        if unknown:
            raise ConfigError(
                f"methods.{i} ({m.name}): unknown option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(v for v in valid if v != 'callback')}"
            )
        reserved = sorted(set(m.options) & {"callback", "x_true"})
        if reserved:
            raise ConfigError(f"methods.{i} ({m.name}): option(s) {', '.join(reserved)} are set by the experiment")


# --------------------------------------------------------------------------- building blocks
def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def build_operator(spec: OperatorSpec, size: int, *, seed: int):
    """The forward operator of ``spec`` for ``size x size`` images (float32)."""
    if spec.modality == "ct":
        from .operators import ct

        kwargs: dict[str, Any] = {"backend": spec.backend}
        if spec.n_detectors is not None:
            kwargs["n_detectors"] = spec.n_detectors
        if spec.geometry == "parallel":
            return ct.ParallelBeamCT(size, spec.n_angles, **kwargs)
        if spec.source_radius is None or spec.detector_radius is None:
            raise ConfigError("operator: geometry 'fan' needs source_radius and detector_radius")
        return ct.FanBeamCT(size, spec.n_angles, source_radius=spec.source_radius,
                            detector_radius=spec.detector_radius, **kwargs)
    from .operators.masks import MASK_KINDS, make_mask
    from .operators.mri import MultiCoilMRI, SingleCoilMRI

    if spec.mask not in MASK_KINDS:
        raise ConfigError(f"config key 'operator.mask': unknown mask kind {spec.mask!r}; valid kinds: {', '.join(MASK_KINDS)}")
    try:
        mask = make_mask(spec.mask, (size, size), spec.acceleration, spec.center_fraction,
                         seed=spec.mask_seed if spec.mask_seed is not None else seed)
    except ValueError as exc:
        raise ConfigError(f"operator: {exc}") from None
    if spec.coils == 1:
        return SingleCoilMRI(mask)
    from .operators.coils import coil_maps

    return MultiCoilMRI(mask, coil_maps((size, size), spec.coils))


def simulate(op, x, noise_level: float, generator):
    """``(y, sigma)``: ``y = A x + n`` with the noise model of the module doc; ``sigma (B,)``.

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


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for pkg in ("medrecon", "torch", "numpy", "scipy", "scikit-image", "pydicom", "h5py", "astra-toolbox", "odl"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


class _Progress:
    """A tqdm bar fed by a method's callback (one tick per solver iteration)."""

    def __init__(self, title: str, total: int | None, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"{title:>14s}", unit="it", leave=False, file=sys.stderr,
                            dynamic_ncols=True)

    def __call__(self, k, x, info) -> None:
        if self.bar is not None:
            self.bar.update(1)
            res = info.get("residual") if isinstance(info, dict) else None
            if res is not None and k % 10 == 0:
                self.bar.set_postfix(residual=f"{float(res.float().mean()):.3g}")
        return None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _default_n_iter(name: str, options: dict) -> int | None:
    import inspect

    from .methods import get_method

    if "n_iter" in options:
        return int(options["n_iter"])
    param = inspect.signature(get_method(name)).parameters.get("n_iter")
    if param is not None and isinstance(param.default, int):
        return param.default
    return None


def _format_table(rows: list[dict], titles: list[str]) -> str:
    head = f"{'method':<14s} {'PSNR [dB]':>15s} {'SSIM':>15s} {'NMSE':>19s} {'seconds':>9s}"
    lines = [head, "-" * len(head)]
    for t in titles:
        r = [row for row in rows if row["method"] == t]
        if not r:
            continue

        def ms(key: str) -> tuple[float, float]:
            v = np.array([row[key] for row in r], dtype=np.float64)
            return float(v.mean()), float(v.std())

        p, s, n, sec = ms("psnr"), ms("ssim"), ms("nmse"), ms("seconds")
        lines.append(f"{t:<14s} {p[0]:7.2f} ± {p[1]:5.2f} {s[0]:7.4f} ± {s[1]:5.3f} "
                     f"{n[0]:9.2e} ± {n[1]:7.1e} {sec[0]:9.3f}")
    return "\n".join(lines)


def _figure(path: Path, names: list[str], truth: np.ndarray, panels: list[tuple[str, np.ndarray, list[float]]],
            max_images: int) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .utils_io import atomic_write

    n_img = min(len(names), max_images)
    n_col = 1 + len(panels)
    fig, axes = plt.subplots(2 * n_img, n_col, figsize=(1.9 * n_col, 2.0 * 2 * n_img), squeeze=False)
    for i in range(n_img):
        ax = axes[2 * i, 0]
        ax.imshow(truth[i], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{names[i][:18]}\nground truth", fontsize=7)
        axes[2 * i + 1, 0].axis("off")
        err_max = max(float(np.abs(rec[i] - truth[i]).max()) for _, rec, _ in panels) or 1.0
        for j, (title, rec, psnrs) in enumerate(panels, start=1):
            ax = axes[2 * i, j]
            ax.imshow(rec[i], cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{title}\n{psnrs[i]:.2f} dB", fontsize=7)
            axes[2 * i + 1, j].imshow(np.abs(rec[i] - truth[i]), cmap="magma", vmin=0, vmax=err_max)
            axes[2 * i + 1, j].set_title("|error|", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=80))
    plt.close(fig)


# --------------------------------------------------------------------------- the run
def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """An existing non-empty ``out_dir`` is an error unless ``overwrite`` (then result files are
    replaced one by one, atomically; nothing else in the directory is deleted)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExistsError(f"output path {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise OutputExistsError(f"output directory {out_dir} already exists and is not empty; "
                                    "pass --overwrite to replace its results, or choose another --out")


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, *, overwrite: bool = False, progress: bool = True,
                   command: list[str] | None = None, echo=print) -> list[dict]:
    """Run ``cfg``, write the outputs into ``out_dir`` (see the module doc) and return the metric rows.

    Under ``torchrun`` every rank runs this with the same arguments: the images are sharded over the
    ranks, rank 0 gathers the rows and writes the shared files, and returns all rows (the other
    ranks return their own rows)."""
    import torch

    from . import distributed

    distributed.init_from_env(cfg.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # many tiny ops: extra threads only spin (8x slower on a busy 2-core box)
    try:
        rows = _run(cfg, Path(out_dir), overwrite=overwrite, progress=progress, command=command, echo=echo)
    except BaseException:
        distributed.shutdown()
        raise
    finally:
        torch.set_num_threads(previous_threads)
    distributed.shutdown(sync=True)
    return rows


def image_seed(seed: int, name: str, purpose: str) -> int:
    """The seed of image ``name``'s generator for ``purpose`` (``"noise"``, ``"method"``): a stable
    32-bit hash (``zlib.crc32``), the same on every rank and in every image order.

    >>> image_seed(0, "shepp_logan", "noise") == image_seed(0, "shepp_logan", "noise")
    True
    """
    return zlib.crc32(f"{int(seed)}/{name}/{purpose}".encode())


def _agree(error: BaseException | None, payload: Any = None) -> list[Any]:
    """All ranks' payloads (indexed by rank); if any rank failed, raise its exception on every rank
    (each rank re-raises its own, the others the first failing rank's)."""
    from . import distributed

    if distributed.world_size() == 1:
        if error is not None:
            raise error
        return [payload]
    sent = error
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an unpicklable exception travels as its message
            sent = ExperimentError(f"{type(error).__name__}: {error}")
    gathered = distributed.all_gather_objects((sent, payload))
    if error is not None:
        raise error
    for r, (err, _) in enumerate(gathered):
        if err is not None:
            raise err
    return [p for _, p in gathered]


def _run(cfg: ExperimentConfig, out_dir: Path, *, overwrite: bool, progress: bool, command: list[str] | None,
         echo) -> list[dict]:
    import torch

    from . import distributed, metrics
    from .data.images import load_images
    from .methods import get_method
    from .utils_io import atomic_save_npy, atomic_write_text

    rank, world = distributed.rank(), distributed.world_size()
    main_rank = rank == 0
    if not main_rank:
        echo, progress = (lambda *a, **k: None), False
    t_start = time.perf_counter()
    # --- inputs (every rank loads the image list; each simulates only its shard)
    error: BaseException | None = None
    try:
        validate_methods(cfg)
        check_output_dir(out_dir, overwrite)
        torch.manual_seed(cfg.seed)  # the CLI seeds once, from the config (methods get their own generators)
        names, images = [], []
        for spec in cfg.images:
            for label, img in load_images(spec.kind, cfg.image_size, path=spec.path, name=spec.name, n=spec.n,
                                          seed=spec.seed, slices=spec.slices, window=spec.window):
                names.append(label)
                images.append(img)
        if len(set(names)) != len(names):
            names = [f"{i:02d}_{n}" for i, n in enumerate(names)]
        dtype = _torch_dtype(cfg.dtype)
        shard = list(range(rank, len(names), world))  # global indices of this rank's images
        op = build_operator(cfg.operator, cfg.image_size, seed=cfg.seed).to(dtype)
        estimated = (cfg.operator.modality == "mri" and cfg.operator.coils > 1
                     and cfg.operator.sensitivities == "estimated")
        needed = sorted(set(shard) | ({0} if estimated else set()))
        truth_all = {i: torch.from_numpy(images[i])[None, None].to(dtype) for i in needed}  # (1, 1, S, S)
        y_all, sigma_all = {}, {}
        for i in needed:  # each image's noise from its own generator: independent of order and rank
            g = torch.Generator().manual_seed(image_seed(cfg.seed, names[i], "noise"))
            y_all[i], s = simulate(op, truth_all[i].to(op.in_dtype), cfg.operator.noise_level, g)
            sigma_all[i] = float(s[0])
        if estimated:
            from .operators.coils import estimate_sensitivities
            from .operators.mri import MultiCoilMRI

            maps = estimate_sensitivities(y_all[0], op.mask if hasattr(op, "mask") else None)
            op = MultiCoilMRI(op.mask, maps[0, 0]).to(dtype)  # the first image's maps (images share the operator)
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank by _agree
        error = exc
    sigmas_by_rank = _agree(error, {i: sigma_all[i] for i in shard} if error is None else None)
    sigma_list = [0.0] * len(names)
    for part in sigmas_by_rank:
        for i, s in part.items():
            sigma_list[i] = s

    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs loaded: a bad config leaves no directory
    device = torch.device(cfg.device)
    op = op.to(device)
    B = len(shard)
    truth = torch.cat([truth_all[i] for i in shard]) if B else torch.zeros((0, 1, cfg.image_size, cfg.image_size),
                                                                             dtype=dtype)
    y = torch.cat([y_all[i] for i in shard]).to(device) if B else None
    x_in = truth.to(op.in_dtype).to(device)
    truth = truth.to(device)
    sigma = torch.tensor([sigma_all[i] for i in shard], dtype=truth.real.dtype)
    echo(f"{cfg.name}: {len(names)} images {cfg.image_size}x{cfg.image_size}, operator {type(op).__name__} "
         f"{op.in_shape}->{op.out_shape}, noise sigma = {cfg.operator.noise_level} x mean|Ax| "
         f"(mean sigma {float(np.mean(sigma_list)):.3g}), seed {cfg.seed}"
         + (f", {world} processes" if world > 1 else ""))

    truth_np = truth[:, 0].cpu().numpy().astype(np.float64)
    fig_ids = set(range(min(len(names), cfg.figure_max_images))) if cfg.figure else set()
    rows: list[dict] = []
    panels: list[tuple[str, np.ndarray, list[float]]] = []
    baseline = "fbp" if callable(getattr(op, "fbp", None)) else "zero-filled"
    titles = [m.title for m in cfg.methods]
    specs = list(cfg.methods)
    if baseline not in [m.name for m in specs]:
        specs = [MethodSpec(baseline)] + specs  # the figure always shows the baseline
        titles = [baseline] + titles
    is_mri = cfg.operator.modality == "mri"
    for spec in specs:
        error, x = None, None
        local_rows: list[dict] = []
        fig_mags: dict[int, np.ndarray] = {}
        try:
            if B:
                x, seconds = _apply_method(spec, op, y, x_in, sigma.to(device), [names[i] for i in shard], cfg,
                                           progress, get_method)
                mag = (x.abs() if x.is_complex() else x)[:, 0].cpu().numpy().astype(np.float64)
                rec_dir = out_dir / "recon" / spec.title
                rec_dir.mkdir(parents=True, exist_ok=True)
                for j, i in enumerate(shard):  # each rank writes its own reconstructions (atomically)
                    name = names[i]
                    local_rows.append({"index": i, "image": name, "method": spec.title,
                                       "psnr": metrics.psnr(truth_np[j], mag[j]),
                                       "ssim": metrics.ssim(truth_np[j], mag[j]),
                                       "nmse": metrics.nmse(truth_np[j], mag[j]), "seconds": seconds})
                    atomic_save_npy(x[j, 0].cpu().numpy(), rec_dir / f"{name}.npy")
                    if i in fig_ids:
                        fig_mags[i] = mag[j]
                if is_mri:
                    _save_h5(rec_dir, [names[i] for i in shard], x)
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank by _agree
            error = exc
        parts = _agree(error, (local_rows, fig_mags))
        method_rows = sorted((r for part, _ in parts for r in part), key=lambda r: r["index"])
        for r in method_rows:
            r.pop("index")
        rows.extend(method_rows)
        if fig_ids:
            mags = {i: m for _, part in parts for i, m in part.items()}
            panels.append((spec.title, np.stack([mags[i] for i in sorted(fig_ids)]),
                           [r["psnr"] for r in method_rows[:len(fig_ids)]]))

    if not main_rank:
        return [r for r in rows if r["image"] in {names[i] for i in shard}]
    # metrics.csv, table, figure, config, provenance (rank 0, after gathering)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "method", "psnr", "ssim", "nmse", "seconds"], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out_dir / "metrics.csv", buf.getvalue())
    table = _format_table(rows, titles)
    footer = (f"mean ± std over {len(names)} images; PSNR/SSIM with data_range = max(ground truth); "
              f"seconds per image")
    atomic_write_text(out_dir / "summary.txt", table + "\n" + footer + "\n")
    if fig_ids:
        fig_truth = np.stack([images[i] for i in sorted(fig_ids)]).astype(np.float64)
        _figure(out_dir / "figure.png", [names[i] for i in sorted(fig_ids)], fig_truth, panels,
                cfg.figure_max_images)
    atomic_write_text(out_dir / "config.yaml", dump_config(cfg))
    run_info = {"seed": cfg.seed, "git_revision": git_revision(mark_dirty=True) or "unknown", "versions": _versions(),
                "command": command or [], "images": names, "noise_sigma": sigma_list, "world_size": world,
                "total_seconds": round(time.perf_counter() - t_start, 3)}
    atomic_write_text(out_dir / "run.json", json.dumps(run_info, indent=2) + "\n")
    echo(table)
    echo(footer)
    echo(f"wrote {out_dir}/ (metrics.csv, summary.txt, figure.png, recon/, config.yaml, run.json) "
         f"in {run_info['total_seconds']:.1f} s")
    return rows


def _apply_method(spec: MethodSpec, op, y, x_in, sigma, names: list[str], cfg: ExperimentConfig, progress: bool,
                  get_method) -> tuple[Any, float]:
    """``(x, seconds per image)`` of one method on this rank's images. Deterministic methods run once
    on the whole batch; random ones (those taking ``generator``) run image by image, each with a
    generator seeded from ``(seed, image name)``, so that a result never depends on which other
    images share the batch (the sharding over ranks, or the image order)."""
    import torch

    fn = get_method(spec.name)
    base = dict(spec.options)
    valid = set(_method_options(spec.name))
    per_image = "generator" in valid and "generator" not in base
    groups = [[j] for j in range(len(names))] if per_image else [list(range(len(names)))]
    outputs, total = [], 0.0
    for group in groups:
        options = dict(base)
        if options.get("lam") == "sweep":
            options["x_true"] = x_in[group]
        if options.get("lam") == "discrepancy" and "noise_std" in valid and "noise_std" not in options:
            options["noise_std"] = sigma[group]
        if per_image:
            options["generator"] = torch.Generator().manual_seed(image_seed(cfg.seed, names[group[0]], "method"))
        bar = _Progress(spec.title, _default_n_iter(spec.name, options), progress)
        if "callback" in valid:
            options["callback"] = bar
        try:
            t0 = time.perf_counter()
            outputs.append(fn(op, y[group], **options).detach())
            total += time.perf_counter() - t0
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            raise ExperimentError(f"method {spec.title!r} failed: {' '.join(str(exc).split())}") from exc
        finally:
            bar.close()
    return torch.cat(outputs), total / len(names)


def _method_options(name: str) -> list[str]:
    from .methods import method_options

    return method_options(name)


def _save_h5(rec_dir: Path, names: list[str], x) -> None:
    """fastMRI layout, one file per image: dataset ``reconstruction`` (1, H, W) float32 magnitudes."""
    try:
        from .data.fastmri import save_reconstructions
    except ImportError:
        save_reconstructions = None
    recons = {f"{name}.h5": (x[i:i + 1, 0].abs() if x.is_complex() else x[i:i + 1, 0]).cpu().numpy().astype(np.float32)
              for i, name in enumerate(names)}
    if save_reconstructions is not None:
        save_reconstructions(recons, rec_dir)
        return
    import h5py

    from .utils_io import atomic_write

    for fname, arr in recons.items():
        def _write(p: Path, arr=arr) -> None:
            with h5py.File(p, "w") as f:
                f.create_dataset("reconstruction", data=arr)

        atomic_write(rec_dir / fname, _write)
