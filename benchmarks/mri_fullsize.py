"""Full-size multi-coil MRI: ESPIRiT maps against the known maps, and seconds per slice per method.

Data: the fastMRI-format volumes of ``python -m medrecon.data.mri_sim`` (made here when missing):
the real MRI validation subject (MNI152 template, :mod:`medrecon.data.real`), 320 x 320 slices in a
640 x 368 k-space grid (readout oversampled by 2), 15 simulated coils, a smooth random phase per slice,
k-space noise (``DEFAULT_NOISE``). Read with fastMRI's own ``SliceDataset``.

Per slice and acceleration (equispaced, 4x with 8 % and 8x with 4 % centre columns, the mask fixed by
``stable_seed(file, slice)`` as fastMRI fixes validation masks):

* maps: ``known`` (the simulated coils; unit norm over the whole grid, background included),
  ``espirit`` (default :func:`~medrecon.operators.coils.estimate_sensitivities`), ``lowres``
  (the cheap estimator), and ``known-cropped`` (the known maps zeroed where ESPIRiT crops, to separate
  the effect of the crop from that of the estimate);
* methods: zero-filled, CG-SENSE (``SENSE_ITERS``), TV (PDHG on the complex image, no positivity,
  ``TV_LAM`` relative to ||A||^2, ``TV_ITERS`` iterations), optionally DIP (``--dip-steps``);
* metrics as fastMRI computes them: magnitudes centre-cropped to 320 x 320 against
  ``reconstruction_rss``, PSNR/SSIM with ``maxval`` = the volume maximum (``attrs["max"]``), via
  ``fastmri.evaluate``;
* time: wall and CPU seconds per slice with ``--threads`` (default 2) torch threads, with the 1-minute
  load average before and after (the machine may be shared); the operator norm (power iteration, used by
  TV for its steps and weight) is timed apart.

    python benchmarks/mri_fullsize.py [--slices 1 2] [--threads 2] [--dip-steps 0]

Writes benchmarks/results/mri_fullsize.json and .md. ``--figure`` instead draws the README figure from the
CLI runs of ``configs/mri_fullsize_{4x,8x}.yaml`` (their fastMRI leaderboard files and metrics):

    python benchmarks/mri_fullsize.py --figure outputs/mri_fullsize_4x outputs/mri_fullsize_8x
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ACCELERATIONS = {4: 0.08, 8: 0.04}  # fastMRI's equispaced settings
SENSE_ITERS = 10
TV_LAM = 1e-3
TV_ITERS = 50
RECON = (320, 320)


class _Timer:
    def __enter__(self):
        self.load0 = os.getloadavg()[0]
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        self.load = (self.load0, os.getloadavg()[0])


def _metrics(rec: torch.Tensor, target: np.ndarray, maxval: float) -> dict:
    from fastmri.evaluate import nmse, psnr, ssim

    from medrecon.data.fastmri import center_crop

    mag = center_crop(rec.abs().reshape(rec.shape[-2:]), RECON).numpy().astype(np.float64)[None]
    gt = target.astype(np.float64)[None]
    return {
        "psnr": float(psnr(gt, mag, maxval=maxval)),
        "ssim": np.asarray(ssim(gt, mag, maxval=maxval)).item(),
        "nmse": float(nmse(gt, mag)),
    }


def _ensure_data(data: Path) -> Path:
    vol = data / "validation" / "mni152.h5"
    if not vol.exists():
        from medrecon.data.mri_sim import main as make

        make(["--out", str(data), "--slices", "4", "--splits", "validation"])
    return vol


def run(args) -> dict:
    from fastmri.data import SliceDataset

    from medrecon.data.mri_sim import crop_readout
    from medrecon.methods import reconstruct
    from medrecon.operators.coils import coil_maps, estimate_sensitivities
    from medrecon.operators.masks import make_mask, stable_seed
    from medrecon.operators.mri import MultiCoilMRI

    torch.set_num_threads(args.threads)
    vol = _ensure_data(Path(args.data))
    ds = SliceDataset(vol.parent, challenge="multicoil", transform=None, use_dataset_cache=False)
    rows = []
    for s in args.slices:
        kspace, _, target, attrs, fname, slice_idx = ds[s]
        maxval = float(attrs["max"])
        for grid in args.grids:
            k = torch.from_numpy(kspace)  # (15, 640, 368) complex64: the file's k-space
            if grid == "cropped":  # readout oversampling removed: (15, 320, 368)
                k = crop_readout(k, RECON[0])
            h, w = k.shape[-2:]
            known = coil_maps((640, w), k.shape[0], field_of_view=RECON)
            known = known[..., (640 - h) // 2 : (640 - h) // 2 + h, :]
            for acc, cf in ACCELERATIONS.items():
                mask = make_mask("equispaced", (h, w), acc, cf, seed=stable_seed(fname, slice_idx))
                y = (k * mask)[None, None]
                base = {
                    "file": fname,
                    "slice": slice_idx,
                    "grid": f"{h}x{w}",
                    "acceleration": acc,
                    "center_fraction": cf,
                }
                maps = {"known": known}
                for name in ("espirit", "lowres") if grid == "full" else ("espirit",):
                    with _Timer() as t:
                        maps[name] = estimate_sensitivities(y[0, 0], mask, method=name)
                    rows.append(
                        dict(
                            base,
                            maps=name,
                            method="estimate-maps",
                            wall_s=t.wall,
                            cpu_s=t.cpu,
                            load_before=t.load[0],
                            load_after=t.load[1],
                        )
                    )
                    print(
                        f"slice {slice_idx} {h}x{w} {acc}x {name:>13s} maps: {t.wall:6.2f} s wall "
                        f"{t.cpu:6.2f} s CPU (load {t.load[0]:.1f}->{t.load[1]:.1f})",
                        flush=True,
                    )
                if grid == "full":
                    maps["known-cropped"] = known * (maps["espirit"].abs().sum(0) > 0)
                for mname, m in maps.items():
                    op = MultiCoilMRI(mask, m)
                    with _Timer() as t_norm:
                        op.norm()
                    runs = [("zero-filled", {})] if mname == "known" else []
                    runs += [
                        ("sense", {"n_iter": SENSE_ITERS}),
                        ("tv", {"lam": TV_LAM, "n_iter": TV_ITERS, "nonneg": False, "tol": 0.0}),
                    ]
                    if args.dip_steps and mname == "espirit":
                        runs.append(
                            (
                                "dip",
                                {
                                    "n_iter": args.dip_steps,
                                    "stopping": "none",
                                    "generator": torch.Generator().manual_seed(0),
                                },
                            )
                        )
                    for method, opts in runs:
                        with _Timer() as t:
                            x = reconstruct(op, y, method, **opts)
                        row = dict(
                            base,
                            maps=mname,
                            method=method,
                            **_metrics(x, target, maxval),
                            wall_s=t.wall,
                            cpu_s=t.cpu,
                            load_before=t.load[0],
                            load_after=t.load[1],
                        )
                        if method == "tv":
                            row["norm_wall_s"], row["norm_cpu_s"] = t_norm.wall, t_norm.cpu
                        rows.append(row)
                        print(
                            f"slice {slice_idx} {h}x{w} {acc}x {mname:>13s} {method:>11s}: PSNR {row['psnr']:6.2f} "
                            f"SSIM {row['ssim']:.4f}  {t.wall:6.2f} s wall {t.cpu:6.2f} s CPU "
                            f"(load {t.load[0]:.1f}->{t.load[1]:.1f})",
                            flush=True,
                        )
    return {
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "sense_iters": SENSE_ITERS,
        "tv_lam": TV_LAM,
        "tv_iters": TV_ITERS,
        "volume": str(vol.relative_to(ROOT) if vol.is_relative_to(ROOT) else vol),
        "rows": rows,
    }


def _markdown(result: dict) -> str:
    rows = [r for r in result["rows"] if r["method"] != "estimate-maps"]
    lines = [
        (
            f"Full-size multi-coil MRI ({result['volume']}), {result['threads']} torch threads; "
            "PSNR/SSIM as fastMRI (magnitude, 320x320, maxval = volume max); mean over slices."
        ),
        "",
        "| k-space | accel | maps | method | PSNR [dB] | SSIM | wall s/slice | CPU s/slice | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["grid"], r["acceleration"], r["maps"], r["method"]) for r in rows},
        key=lambda k: (
            -int(k[0].split("x")[0]),
            k[1],
            ["zero-filled", "sense", "tv", "dip"].index(k[3]),
            k[2],
        ),
    )
    for grid, acc, maps, method in keys:
        sel = [
            r
            for r in rows
            if (r["grid"], r["acceleration"], r["maps"], r["method"]) == (grid, acc, maps, method)
        ]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in ("psnr", "ssim", "wall_s", "cpu_s")}
        load = max(max(r["load_before"], r["load_after"]) for r in sel)
        lines.append(
            f"| {grid} | {acc}x | {maps} | {method} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | "
            f"{mean['wall_s']:.2f} | {mean['cpu_s']:.2f} | <= {load:.1f} |"
        )
    est = [r for r in result["rows"] if r["method"] == "estimate-maps"]
    norms = [r for r in rows if "norm_cpu_s" in r]
    lines.append("")
    for grid in sorted({r["grid"] for r in est}, key=lambda g: -int(g.split("x")[0])):
        lines.append(
            f"{grid}: map estimation per slice: "
            + ", ".join(
                f"{m} {np.mean([r['wall_s'] for r in est if r['maps'] == m and r['grid'] == grid]):.2f} s wall / "
                f"{np.mean([r['cpu_s'] for r in est if r['maps'] == m and r['grid'] == grid]):.2f} s CPU"
                for m in ("espirit", "lowres")
                if any(r["maps"] == m and r["grid"] == grid for r in est)
            )
            + "; operator norm (power iteration, once per slice, used by TV): "
            f"{np.mean([r['norm_wall_s'] for r in norms if r['grid'] == grid]):.2f} s wall / "
            f"{np.mean([r['norm_cpu_s'] for r in norms if r['grid'] == grid]):.2f} s CPU"
        )
    return "\n".join(lines) + "\n"


FIGURE_METHODS = ("zero-filled", "sense", "tv")
PRIORS = ("patchnr", "dip", "dip-tv", "flow", "vae-soft", "csgm")


def figure(run_dirs: list[str], out: Path, slice_pos: int = 0) -> Path:
    """Target, zero-filled, SENSE, TV and the best prior (highest volume PSNR) of each run, |error| below
    each, one grey and one error colour bar; slice ``slice_pos`` of each run's volume."""
    import csv

    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medrecon.utils_io import atomic_write

    rows_of = []
    for d in map(Path, run_dirs):
        with open(d / "metrics_volumes.csv") as f:
            vols = {r["method"]: r for r in csv.DictReader(f)}
        priors = [m for m in vols if m.split("-")[0] in {p.split("-")[0] for p in PRIORS}]
        best = max(priors, key=lambda m: float(vols[m]["psnr"])) if priors else None
        methods = [m for m in FIGURE_METHODS if m in vols] + ([best] if best else [])
        volume = vols[methods[0]]["volume"]
        import yaml

        cfg = yaml.safe_load((d / "config.yaml").read_text())
        with h5py.File(ROOT / cfg["measured"]["path"], "r") as f:
            slices = cfg["measured"]["slices"]
            target = f["reconstruction_rss"][slices[slice_pos]]
            vmax = float(f.attrs["max"])
        recs = {}
        for m in methods:
            with h5py.File(d / "recon" / m / volume, "r") as f:
                recs[m] = f["reconstruction"][slice_pos]
        label = f"{cfg['operator']['acceleration']:g}x"
        rows_of.append((label, target, vmax, methods, recs, vols))
    n_col = 1 + max(len(r[3]) for r in rows_of)
    panel = 1.6
    fig, axes = plt.subplots(
        2 * len(rows_of),
        n_col + 1,
        figsize=(panel * n_col + 0.5, panel * 1.12 * 2 * len(rows_of)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * n_col + [0.06]},
    )
    err_max = (
        max(float(np.abs(rec - t).max()) for _, t, _, ms, recs, _ in rows_of for rec in recs.values()) / 4
    )
    for r, (label, target, vmax, methods, recs, vols) in enumerate(rows_of):
        top, bottom = axes[2 * r], axes[2 * r + 1]
        grey = top[0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
        top[0].set_title(f"{label}: target (RSS)", fontsize=7)
        bottom[0].axis("off")
        for j, m in enumerate(methods, start=1):
            top[j].imshow(recs[m], cmap="gray", vmin=0, vmax=vmax)
            top[j].set_title(f"{label} {m}: {float(vols[m]['psnr']):.2f} dB", fontsize=7)
            err = bottom[j].imshow(np.abs(recs[m] - target), cmap="magma", vmin=0, vmax=err_max)
        for j in range(len(methods) + 1, n_col):
            top[j].axis("off")
            bottom[j].axis("off")
        for ax in (*top[:n_col], *bottom[:n_col]):
            ax.set_xticks([])
            ax.set_yticks([])
        cb = fig.colorbar(grey, cax=top[n_col])
        cb.ax.tick_params(labelsize=6)
        cb = fig.colorbar(err, cax=bottom[n_col])
        cb.ax.tick_params(labelsize=6)
        bottom[1].set_ylabel("|error|", fontsize=7)
    fig.subplots_adjust(left=0.02, right=0.95, top=0.95, bottom=0.02, wspace=0.05, hspace=0.18)
    out.parent.mkdir(parents=True, exist_ok=True)
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    small = Image.open(buf).convert("RGB").quantize(colors=128)  # a palette PNG: about a third of the bytes
    atomic_write(out, lambda p: small.save(p, format="PNG", optimize=True))
    plt.close(fig)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(ROOT / "outputs" / "fastmri_fullsize"))
    parser.add_argument(
        "--slices", type=int, nargs="+", default=[1, 2], help="slices of the validation volume"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--grids",
        nargs="+",
        default=["full", "cropped"],
        choices=["full", "cropped"],
        help="full: the file's 640x368 k-space; cropped: readout oversampling removed (320x368)",
    )
    parser.add_argument(
        "--dip-steps", type=int, default=0, help="also time DIP (ESPIRiT maps) for this many steps"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mri_fullsize"))
    parser.add_argument(
        "--figure", nargs="+", metavar="RUN_DIR", help="draw the README figure from these runs"
    )
    parser.add_argument("--figure-out", default=str(ROOT / "docs" / "mri_fullsize.png"))
    args = parser.parse_args(argv)
    if args.figure:
        print(figure(args.figure, Path(args.figure_out)))
        return 0
    result = run(args)
    from medrecon.utils_io import atomic_write_text

    atomic_write_text(Path(args.out + ".json"), json.dumps(result, indent=1))
    md = _markdown(result)
    atomic_write_text(Path(args.out + ".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
