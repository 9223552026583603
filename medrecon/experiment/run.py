"""Running an experiment: inputs on every rank, each method on the rank's images, the shared files on rank 0."""

from __future__ import annotations

import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import dump_config
from ..utils_io import git_revision
from .build import (
    build_operator,
    check_resources,
    image_seed,
    load_config_images,
    simulate,
    simulate_poisson_log,
    torch_dtype,
)
from .config import (
    ExperimentConfig,
    ExperimentError,
    MethodSpec,
    MRIOperatorSpec,
    OutputExistsError,
    validate_methods,
)
from .measured import load_measured
from .report import (
    VOLUME_FIELDS,
    MethodProgress,
    MethodStatus,
    format_table,
    previous_method_seconds,
    save_figure,
    save_h5,
    versions,
    write_metrics_csv,
)

__all__ = ["RESULT_NAMES", "check_output_dir", "publish", "run_experiment", "work_dir"]


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """An existing non-empty ``out_dir`` is an error unless ``overwrite`` (then the old results are
    replaced by the new ones as a whole once the run completes; nothing else in the directory is deleted)."""
    out_dir = Path(out_dir)
    cwd = Path.cwd().resolve()
    if out_dir.exists() and (out_dir.resolve() == cwd or out_dir.resolve() in cwd.parents):
        raise OutputExistsError(
            f"output directory {out_dir} is the working directory or contains it; results are "
            "swapped in as a whole folder: choose a dedicated --out"
        )
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExistsError(f"output path {out_dir} exists and is not a directory")
        if any(out_dir.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"output directory {out_dir} already exists and is not empty; "
                "pass --overwrite to replace its results, or choose another --out"
            )


#: what a run writes into its output folder (everything else there belongs to the user and is kept)
RESULT_NAMES = (
    "metrics.csv",
    "metrics_volumes.csv",
    "summary.txt",
    "figure.png",
    "config.yaml",
    "run.json",
    "recon",
)


def work_dir(out_dir: Path) -> Path:
    """The sibling folder a run into ``out_dir`` is built in before :func:`publish` moves it into place."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.medrecon-tmp"


def _remove_tree(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def publish(work: Path, out_dir: Path) -> None:
    """Move a complete run from ``work`` to ``out_dir``: ``out_dir`` holds the complete old run or the
    complete new one at every moment a reader can see. The user's own files in an existing ``out_dir``
    (anything not in ``RESULT_NAMES``) are linked (or copied) into the new folder first, then the two
    folders are swapped by renames and the old one removed."""
    import os
    import shutil

    out_dir = Path(out_dir)
    if not out_dir.exists():
        os.replace(work, out_dir)
        return
    for entry in out_dir.iterdir():
        if entry.name in RESULT_NAMES:
            continue
        target = work / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)
    old = out_dir.parent / f".{out_dir.name}.medrecon-old"
    _remove_tree(old)
    os.replace(out_dir, old)
    os.replace(work, out_dir)
    _remove_tree(old)


def _link_or_copy(src, dst) -> None:
    import os
    import shutil

    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    command: list[str] | None = None,
    echo=print,
) -> list[dict]:
    """Run ``cfg``, write the outputs into ``out_dir`` (see the module doc) and return the metric rows.

    Under ``torchrun`` every rank runs this with the same arguments: the images are sharded over the
    ranks, rank 0 gathers the rows and writes the shared files, and returns all rows (the other
    ranks return their own rows)."""
    import torch

    from .. import distributed

    check_resources(cfg)  # a device this machine lacks is a config error, before joining a process group
    distributed.init_from_env(cfg.device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(
        cfg.threads
    )  # many tiny ops: extra threads only spin (8x slower on a busy 2-core box)
    try:
        rows = _run(cfg, Path(out_dir), overwrite=overwrite, progress=progress, command=command, echo=echo)
    except BaseException:
        if distributed.rank() == 0:
            _remove_tree(work_dir(Path(out_dir)))  # a failed run leaves no trace
        distributed.shutdown()
        raise
    finally:
        torch.set_num_threads(previous_threads)
    distributed.shutdown(sync=True)
    return rows


def unique_names(names: list[str], notes: list[str]) -> list[str]:
    """``names`` with repeats renamed ``<name>_2``, ``<name>_3``, ... (each renaming added to ``notes``)."""
    seen: set[str] = set()
    out = []
    for name in names:
        new, k = name, 1
        while new in seen:
            k += 1
            new = f"{name}_{k}"
        if new != name:
            notes.append(f"image {name}: the name appears more than once; this one is saved as {new}")
        seen.add(new)
        out.append(new)
    return out


def _agree(error: BaseException | None, payload: Any = None) -> list[Any]:
    """All ranks' payloads (indexed by rank); if any rank failed, raise its exception on every rank
    (each rank re-raises its own, the others the first failing rank's)."""
    from .. import distributed

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
    for err, _ in gathered:
        if err is not None:
            raise err
    return [p for _, p in gathered]


def _run(
    cfg: ExperimentConfig, out_dir: Path, *, overwrite: bool, progress: bool, command: list[str] | None, echo
) -> list[dict]:
    import torch

    from .. import distributed, metrics
    from ..methods import get_method
    from ..utils_io import atomic_save_npy, atomic_write_text

    rank, world = distributed.rank(), distributed.world_size()
    main_rank = rank == 0
    if not main_rank:
        echo, progress = (lambda *a, **k: None), False

    def note(line: str) -> None:  # what the image rule changed: said once, on stderr
        if main_rank:
            print(f"note: {line}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    # --- inputs (every rank loads the image list; each simulates only its shard)
    error: BaseException | None = None
    try:
        validate_methods(cfg)
        check_resources(cfg)
        check_output_dir(out_dir, overwrite)
        torch.manual_seed(cfg.seed)  # the CLI seeds once, from the config (methods get their own generators)
        notes: list[str] = []
        records = load_config_images(cfg, notes)
        measured = load_measured(cfg, notes) if cfg.measured is not None else None
        if measured is not None:  # a file's own measurements: records carry the targets (or None)
            records = measured.records
        names = unique_names([r.name for r in records], notes)
        images = [r.image for r in records]
        for line in notes:
            note(line)
        dtype = torch_dtype(cfg.dtype)
        shard = list(range(rank, len(names), world))  # global indices of this rank's images
        op = (
            measured.ops[0]
            if measured is not None
            else build_operator(cfg.operator, cfg.image_size, seed=cfg.seed).to(dtype)
        )
        estimated = (
            isinstance(cfg.operator, MRIOperatorSpec)
            and cfg.operator.coils > 1
            and cfg.operator.sensitivities == "estimated"
        )
        needed = sorted(set(shard) | ({0} if estimated else set()))
        truth_all = {
            i: torch.from_numpy(images[i])[None, None].to(dtype)
            if images[i] is not None
            else torch.zeros((1, 1, 1, 1), dtype=dtype)
            for i in needed
        }  # (1, 1, S, S)
        y_all, sigma_all = {}, {}
        for i in needed:  # each image's noise from its own generator: independent of order and rank
            if measured is not None:  # measured: no simulation, the noise level is unknown
                y_all[i], sigma_all[i] = measured.y[i], 0.0
                continue
            g = torch.Generator().manual_seed(image_seed(cfg.seed, names[i], "noise"))
            if getattr(cfg.operator, "noise", "gaussian") == "poisson_log":
                y_all[i], s = simulate_poisson_log(
                    op, truth_all[i].to(op.in_dtype), cfg.operator, cfg.image_size, g
                )
            else:
                y_all[i], s = simulate(op, truth_all[i].to(op.in_dtype), cfg.operator.noise_level, g)
            sigma_all[i] = float(s[0])
        if estimated:
            from ..operators.coils import estimate_sensitivities
            from ..operators.mri import MultiCoilMRI

            maps = estimate_sensitivities(
                y_all[0], op.mask if hasattr(op, "mask") else None, method=cfg.operator.sensitivity_method
            )
            op = MultiCoilMRI(op.mask, maps[0, 0]).to(
                dtype
            )  # the first image's maps (images share the operator)
    except Exception as exc:  # noqa: BLE001 - re-raised on every rank by _agree
        error = exc
    sigmas_by_rank = _agree(error, {i: sigma_all[i] for i in shard} if error is None else None)
    sigma_list = [0.0] * len(names)
    for part in sigmas_by_rank:
        for i, s in part.items():
            sigma_list[i] = s

    # Everything is written into a sibling work folder, moved into place only when complete: a run
    # that fails (or is killed) leaves out_dir as it was, old results included.
    work = work_dir(out_dir)
    if main_rank:
        _remove_tree(work)  # a leftover of a killed run
        work.mkdir(parents=True)
    distributed.barrier()
    device = torch.device(cfg.device)
    op = op.to(device)
    B = len(shard)
    truth = (
        torch.cat([truth_all[i] for i in shard])
        if B
        else torch.zeros((0, 1, cfg.image_size, cfg.image_size), dtype=dtype)
    )
    y = torch.cat([y_all[i] for i in shard]).to(device) if B else None
    x_in = truth.to(op.in_dtype).to(device)
    truth = truth.to(device)
    sigma = torch.tensor([sigma_all[i] for i in shard], dtype=truth.real.dtype)
    noise = (
        "the file's own measurements (noise level unknown)"
        if measured is not None
        else f"noise sigma = {cfg.operator.noise_level} x mean|Ax| (mean sigma {float(np.mean(sigma_list)):.3g})"
    )
    echo(
        f"{cfg.name}: {len(names)} images {'x'.join(map(str, op.in_shape[-2:]))}, operator {type(op).__name__} "
        f"{op.in_shape}->{op.out_shape}, {noise}, seed {cfg.seed}"
        + (f", {world} processes" if world > 1 else "")
    )

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
    volume_rows: list[dict] = []  # MRI: per-volume metrics as fastMRI's evaluate computes them
    status = MethodStatus(
        [sp.title for sp in specs], enabled=progress, expected=previous_method_seconds(out_dir)
    )
    for k, spec in enumerate(specs, start=1):
        status.start(k, spec.title)
        error, x = None, None
        local_rows: list[dict] = []
        fig_mags: dict[int, np.ndarray] = {}
        h5_mags: dict[int, np.ndarray] = {}
        try:
            if B:
                x, seconds = _apply_method(
                    spec,
                    op,
                    y,
                    x_in,
                    sigma.to(device),
                    [names[i] for i in shard],
                    cfg,
                    progress,
                    get_method,
                    ops=None if measured is None else [measured.ops[i].to(device) for i in shard],
                )
                mag = (x.abs() if x.is_complex() else x)[:, 0].cpu().numpy().astype(np.float64)
                if measured is not None:
                    mag = measured.crop(mag)  # fastMRI: the target's centre crop
                rec_dir = work / "recon" / spec.title
                rec_dir.mkdir(parents=True, exist_ok=True)
                for j, i in enumerate(shard):  # each rank writes its own reconstructions (atomically)
                    name = names[i]
                    scored = images[i] is not None  # no ground truth: the metrics are left empty
                    local_rows.append(
                        {
                            "index": i,
                            "image": name,
                            "method": spec.title,
                            "psnr": metrics.psnr(truth_np[j], mag[j]) if scored else None,
                            "ssim": metrics.ssim(truth_np[j], mag[j]) if scored else None,
                            "nmse": metrics.nmse(truth_np[j], mag[j]) if scored else None,
                            "seconds": seconds,
                        }
                    )
                    atomic_save_npy(x[j, 0].cpu().numpy(), rec_dir / f"{name}.npy")
                    if i in fig_ids:
                        fig_mags[i] = mag[j]
                    if is_mri:  # on the ground truth's own file scale, for fastMRI's tools
                        rec = records[i]
                        h5_mags[i] = (mag[j] * rec.scale + rec.offset).astype(np.float32)
        except Exception as exc:  # noqa: BLE001 - re-raised on every rank by _agree
            error = exc
        status.done(k, spec.title)
        parts = _agree(error, (local_rows, fig_mags, h5_mags))
        if is_mri and main_rank:
            volume_rows += [
                {**r, "method": spec.title}
                for r in save_h5(
                    work / "recon" / spec.title,
                    records,
                    names,
                    {i: m for _, _, part in parts for i, m in part.items()},
                )
            ]
        method_rows = sorted((r for part, _, _ in parts for r in part), key=lambda r: r["index"])
        for r in method_rows:
            r.pop("index")
        rows.extend(method_rows)
        if fig_ids:
            mags = {i: m for _, part, _ in parts for i, m in part.items()}
            panels.append(
                (
                    spec.title,
                    np.stack([mags[i] for i in sorted(fig_ids)]),
                    [r["psnr"] for r in method_rows[: len(fig_ids)]],
                )
            )

    if not main_rank:
        return [r for r in rows if r["image"] in {names[i] for i in shard}]
    # metrics.csv, table, figure, config, provenance (rank 0, after gathering)
    write_metrics_csv(work / "metrics.csv", rows)
    if volume_rows:
        write_metrics_csv(work / "metrics_volumes.csv", volume_rows, fields=VOLUME_FIELDS)
    table = format_table(rows, titles)
    footer = (
        f"mean ± std over {len(names)} images; PSNR/SSIM with data_range = max(ground truth); "
        f"seconds per image"
    )
    atomic_write_text(work / "summary.txt", table + "\n" + footer + "\n")
    if fig_ids:
        fig_truth = (
            np.stack([images[i] for i in sorted(fig_ids)]).astype(np.float64)
            if all(images[i] is not None for i in fig_ids)
            else None
        )
        save_figure(
            work / "figure.png", [names[i] for i in sorted(fig_ids)], fig_truth, panels, cfg.figure_max_images
        )
    atomic_write_text(work / "config.yaml", dump_config(cfg))
    run_info = {
        "notes": notes,
        "seed": cfg.seed,
        "git_revision": git_revision(mark_dirty=True) or "unknown",
        "versions": versions(),
        "command": command or [],
        "images": names,
        "noise_sigma": sigma_list,
        "world_size": world,
        "method_seconds": status.method_seconds,
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    atomic_write_text(work / "run.json", json.dumps(run_info, indent=2) + "\n")
    publish(work, out_dir)
    echo(table)
    echo(footer)
    written = ", ".join(n for n in RESULT_NAMES if (out_dir / n).exists())
    echo(f"wrote {out_dir}/ ({written}) in {run_info['total_seconds']:.1f} s")
    return rows


def _apply_method(
    spec: MethodSpec,
    op,
    y,
    x_in,
    sigma,
    names: list[str],
    cfg: ExperimentConfig,
    progress: bool,
    get_method,
    ops: list | None = None,
) -> tuple[Any, float]:
    """``(x, seconds per image)`` of one method on this rank's images, run image by image (random
    methods, those taking ``generator``, each with a generator seeded from ``(seed, image name)``), so
    that a result never depends on which other images share a batch: the sharding over ranks, the image
    order, or the other images of the config (batched solvers may stop when the whole batch has
    converged, e.g. PDHG-TV)."""
    import torch

    from ..methods import method_options

    fn = get_method(spec.name)
    base = dict(spec.options)
    valid = set(method_options(spec.name))
    per_image = "generator" in valid and "generator" not in base
    groups = [[j] for j in range(len(names))]
    outputs, total = [], 0.0
    for group in groups:
        options = dict(base)
        if options.get("lam") == "sweep":
            options["x_true"] = x_in[group]
        # the rules that need the noise level get the simulated one unless the config gives it
        if (
            options.get("lam") in ("discrepancy", "noise")
            and "noise_std" in valid
            and "noise_std" not in options
        ):
            options["noise_std"] = sigma[group]
        if per_image:
            options["generator"] = torch.Generator().manual_seed(
                image_seed(cfg.seed, names[group[0]], "method")
            )
        bar = MethodProgress(spec.title, _default_n_iter(spec.name, options), progress)
        if "callback" in valid:
            options["callback"] = bar
        try:
            t0 = time.perf_counter()
            outputs.append(fn(op if ops is None else ops[group[0]], y[group], **options).detach())
            total += time.perf_counter() - t0
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            raise ExperimentError(f"method {spec.title!r} failed: {' '.join(str(exc).split())}") from exc
        finally:
            bar.close()
    return torch.cat(outputs), total / len(names)


def _default_n_iter(name: str, options: dict) -> int | None:
    import inspect

    from ..methods import get_method

    if "n_iter" in options:
        return int(options["n_iter"])
    param = inspect.signature(get_method(name)).parameters.get("n_iter")
    if param is not None and isinstance(param.default, int):
        return param.default
    return None
