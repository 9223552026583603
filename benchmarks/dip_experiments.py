"""Deep Image Prior experiments: sparse-angle CT, single-coil MRI 4x/8x and image restoration, on CPU.

    python benchmarks/dip_experiments.py                 # everything (about 15-25 min on 1 CPU thread)
    python benchmarks/dip_experiments.py --part ct       # one part: ct, mri, restoration
    python benchmarks/dip_experiments.py --merge         # combine the parts into dip.json + dip.md

Writes ``benchmarks/results/dip_<part>.json`` per part and ``benchmarks/results/dip.json`` +
``benchmarks/results/dip.md`` (the tables of the README). One torch thread (the CPU is shared; two
OpenMP threads on a loaded 2-core machine were far slower), seed 0 everywhere.

Data: exactly the experiment configs' simulation (``medrecon.experiment.build_operator`` / ``simulate``)
of ``configs/ct_sparse_angle_30.yaml`` and ``configs/mri_singlecoil_4x.yaml`` (8x: the same with
``operator.acceleration=8, operator.center_fraction=0.04``, as ``configs/dip_mri_singlecoil_8x.yaml``),
on a SUBSET of their images to fit the CPU budget (named in the tables). Restoration: scikit-image's
``camera()`` resized to 64x64 (anti-aliased), in [0, 1].
Baselines use the solvers engineer's methods through ``medrecon.reconstruct`` with the configs' options.
DIP PSNR traces use the ground truth only for reporting, never for stopping.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import medrecon
from medrecon.metrics import psnr, ssim
from medrecon.priors.dip import fit_dip

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# CPU budget: the machine was shared (load average about 12 on 2 cores while this ran), so these runs
# use 32 channels (the library default is 64, the paper's 128) and at most 500 steps.
N_ITER = 500
CHANNELS = 32
CT_IMAGES = ("ct_small", "shepp_logan")
MRI_SLICES = ("file_mr_small_multicoil_s1",)


def _load_problem(config: str, overrides: list[str], names: tuple[str, ...] | None):
    from medrecon.data.images import load_images
    from medrecon.experiment import build_operator, load_experiment_config, simulate

    cfg = load_experiment_config(REPO / config, overrides)
    imgs = []
    for spec in cfg.images:
        imgs += load_images(spec.kind, cfg.image_size, path=spec.path, name=spec.name, n=spec.n, seed=spec.seed,
                            slices=spec.slices, window=spec.window)
    op = build_operator(cfg.operator, cfg.image_size, seed=cfg.seed)
    truth = torch.from_numpy(np.stack([im for _, im in imgs]))[:, None].float()
    x_in = truth.to(op.in_dtype)
    y, sigma = simulate(op, x_in, cfg.operator.noise_level, torch.Generator().manual_seed(cfg.seed))
    keep = [i for i, (n, _) in enumerate(imgs) if names is None or n in names]
    return cfg, op, [imgs[i][0] for i in keep], x_in[keep], y[keep], sigma[keep]


def _metrics(truth: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    t = truth.abs()[0].numpy().astype(np.float64)
    p = x.detach().abs()[0].numpy().astype(np.float64)
    return psnr(t, p), ssim(t, p)


def _row(task, image, method, truth, x, seconds, trace=None) -> dict:
    p, s = _metrics(truth, x)
    row = {"task": task, "image": image, "method": method, "psnr": round(p, 3), "ssim": round(s, 4),
           "seconds": round(seconds, 2)}
    if trace is not None:
        best_step, best = trace.best_psnr
        row.update(steps=trace.n_steps, returned_step=trace.returned_step, best_step=best_step,
                   best_psnr_trace=round(best, 3), gap_to_best_db=round(best - trace.psnr_returned, 3),
                   psnr_last=round(trace.psnr_ema[-1], 3),
                   ms_per_step=round(1000 * trace.seconds / trace.n_steps, 1), stop_reason=trace.stop_reason)
    print(json.dumps(row), flush=True)
    return row


def _run_baseline(task, names, op, y, truth, method, label=None, **options):
    rows = []
    t0 = time.perf_counter()
    x = medrecon.reconstruct(op, y, method, **options)
    sec = (time.perf_counter() - t0) / len(names)
    for i, n in enumerate(names):
        rows.append(_row(task, n, label or method, truth[i : i + 1, 0], x[i : i + 1, 0], sec))
    return rows


def _run_dip(task, names, op, y, truth, label, **options):
    rows, traces = [], {}
    for i, n in enumerate(names):
        res = fit_dip(op, y[i : i + 1], x_true=truth[i : i + 1], generator=torch.Generator().manual_seed(0),
                      channels=CHANNELS, **options)
        tr = res.traces[0]
        rows.append(_row(task, n, label, truth[i : i + 1, 0], res.x[:, 0], tr.seconds, tr))
        traces[f"{task}/{n}/{label}"] = {"psnr_ema": [round(v, 3) for v in tr.psnr_ema],
                                         "variance": tr.variance, "loss": tr.loss}
    return rows, traces


def part_ct() -> tuple[list[dict], dict]:
    cfg, op, names, truth, y, sigma = _load_problem("configs/ct_sparse_angle_30.yaml", [], CT_IMAGES)
    rows = _run_baseline("ct30", names, op, y, truth, "fbp")
    rows += _run_baseline("ct30", names, op, y, truth, "tv", lam=5e-5, n_iter=300)  # the config's TV
    r, tr1 = _run_dip("ct30", names[:1], op, y[:1], truth[:1], "dip", n_iter=N_ITER)  # ct_small only (CPU)
    r2, tr2 = _run_dip("ct30", names, op, y, truth, "dip-tv", n_iter=N_ITER, tv_weight=5e-5)
    return rows + r + r2, {**tr1, **tr2}


def part_mri() -> tuple[list[dict], dict]:
    rows, traces = [], {}
    for task, ov in (("mri4x", []), ("mri8x", ["operator.acceleration=8", "operator.center_fraction=0.04"])):
        cfg, op, names, truth, y, sigma = _load_problem("configs/mri_singlecoil_4x.yaml", ov, MRI_SLICES)
        rows += _run_baseline(task, names, op, y, truth, "zero-filled")
        rows += _run_baseline(task, names, op, y, truth, "tv", lam=3e-3, n_iter=300)  # the config's TV
        r, t1 = [], {}
        if task == "mri4x":  # plain DIP at 4x only (CPU)
            r, t1 = _run_dip(task, names, op, y, truth, "dip", n_iter=N_ITER)
        r2, t2 = _run_dip(task, names, op, y, truth, "dip-tv", n_iter=N_ITER, tv_weight=3e-3)
        rows += r + r2
        traces.update(t1)
        traces.update(t2)
    return rows, traces


def part_restoration() -> tuple[list[dict], dict]:
    from skimage import data
    from skimage.transform import resize

    from medrecon.operators.restoration import Denoising, Downsampling, Inpainting, random_pixel_mask

    img = resize(data.camera().astype(np.float64) / 255.0, (64, 64), anti_aliasing=True)
    truth = torch.from_numpy(img).float()[None, None]
    g = torch.Generator().manual_seed(0)
    problems = [
        ("denoise", Denoising((64, 64)), 0.1),  # sigma = 0.1 (about 25/255)
        ("inpaint50", Inpainting(random_pixel_mask((64, 64), 0.5, generator=g)), 0.02),  # 50% pixels missing
        ("sr4x-box", Downsampling((64, 64), 4, "box"), 0.02),  # 64x64 -> 16x16
    ]
    rows, traces = [], {}
    for task, op, sigma in problems:
        clean = op(truth)
        y = clean + sigma * torch.randn(clean.shape, generator=g)
        if task == "inpaint50":
            y = op(y)  # missing pixels stay zero
        rows += _run_baseline(task, ["camera64"], op, y, truth, "tv", label="tv-discrepancy",
                              lam="discrepancy", noise_std=sigma, n_iter=300)
        r, t = _run_dip(task, ["camera64"], op, y, truth, "dip", n_iter=N_ITER)
        rows += r
        traces.update(t)
    return rows, traces


def _replay(traces: dict, warmups=(0, 150, 250), patience: int = 300) -> dict:
    """Offline replay of ES-WMV with a warm-up on the RECORDED variance traces (in-sample, and a trace
    that stopped is cut at its stop step): the step it would return and its gap to the best PSNR."""
    out = {}
    for key, t in traces.items():
        v = [math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else x for x in t["variance"]]
        ps = t["psnr_ema"]
        res = {}
        for warm in warmups:
            best, step = math.inf, len(v) - 1
            for i in range(warm, len(v)):
                if v[i] < best:
                    best, step = v[i], i
                elif i - step >= patience:
                    break
            res[f"warmup_{warm}"] = {"step": step, "gap_db": round(max(ps) - ps[step], 2)}
        out[key] = res
    return out


PARTS = {"ct": part_ct, "mri": part_mri, "restoration": part_restoration}


def _markdown(rows: list[dict]) -> str:
    lines = ["| task | image | method | PSNR [dB] | SSIM | s / image | stop step (best) | gap to best [dB] |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        stop = f"{r['returned_step']} / {r['steps']} ({r['best_step']})" if "steps" in r else ""
        gap = f"{r['gap_to_best_db']:.2f}" if "gap_to_best_db" in r else ""
        lines.append(f"| {r['task']} | {r['image']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{r['seconds']:.1f} | {stop} | {gap} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=sorted(PARTS), action="append")
    ap.add_argument("--merge", action="store_true", help="only merge existing part files")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from medrecon.utils_io import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.merge:
        for part in args.part or sorted(PARTS):
            t0 = time.perf_counter()
            rows, traces = PARTS[part]()
            atomic_write_text(RESULTS / f"dip_{part}.json", json.dumps(
                {"rows": rows, "traces": traces, "wall_seconds": round(time.perf_counter() - t0, 1)}))
    rows, walls, traces = [], {}, {}
    for part in sorted(PARTS):
        f = RESULTS / f"dip_{part}.json"
        if f.exists():
            d = json.loads(f.read_text())
            rows += d["rows"]
            traces.update(d["traces"])
            walls[part] = d["wall_seconds"]
    meta = {"torch_threads": 1, "n_iter_max": N_ITER, "channels": CHANNELS, "torch": torch.__version__, "wall_seconds": walls,
            "ct_images": CT_IMAGES, "mri_slices": MRI_SLICES,
            "stop_within_1db": all(r["gap_to_best_db"] <= 1.0 for r in rows if "gap_to_best_db" in r)}
    meta["wmv_warmup_replay"] = _replay(traces)
    atomic_write_text(RESULTS / "dip.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    atomic_write_text(RESULTS / "dip.md", _markdown(rows))
    print(_markdown(rows))
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
