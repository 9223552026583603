"""GAN-prior experiments: Yeh et al.'s restoration table and sparse-angle CT, on 28x28 MNIST digits.

Writes ``benchmarks/results/gan.json`` and prints markdown tables.

Restoration (Yeh, Lim, Chen, Schwing, Hasegawa-Johnson and Do, ICASSP 2018, Table 1 used 64x64 faces):

* ``inpaint``: missing centre block, 14x14 of 28x28 (the paper's 32x32 of 64x64 scaled proportionally);
* ``inpaint8``: a smaller 8x8 centre hole (supplementary: the 14x14 hole removes most of a digit's strokes);
* ``sr4``: 4x super-resolution, 4x4 block mean (``Downsampling(kernel="box")``), 28x28 -> 7x7;
* ``denoise``: additive Gaussian noise, sigma 0.1 (images in [0, 1]);
* ``quant5``: quantisation to 5 levels ``round(4 x) / 4``. Not linear: treated as denoising of the
  quantised image (operator = identity, y = the quantised image).

CT: parallel-beam, 10 and 30 angles over [0, pi), y = A x + n, n ~ N(0, sigma^2) with
sigma = 0.02 mean(|A x|) per image (the noise model of ``configs/ct_sparse_angle_*.yaml``).

Protocol: each method's weight (and the discriminator weight) is chosen from a small grid by mean PSNR
on ``N_VAL`` validation digits from the training split, then run once on the ``N_TEST`` test digits (one
per class from ``MNIST_TEST_INDICES``, never seen in training). Blending variants are computed from the
same G(z) as their unblended method (blending is a post-processing step). ``gan-d`` with ``d_weight=0``
and ``lam = 2 l`` is exactly ``csgm`` with ``lam = l`` (same objective, same starts), so the csgm
column is the ablation of the discriminator term.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gan_experiments.py [--tasks inpaint sr4 ...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import medrecon  # noqa: E402
from medrecon.data.datasets import MNISTDataset  # noqa: E402
from medrecon.methods.gan import blend_measured  # noqa: E402
from medrecon.metrics import psnr, ssim  # noqa: E402
from medrecon.operators.restoration import (  # noqa: E402
    Denoising,
    Downsampling,
    Inpainting,
    center_block_mask,
)
from medrecon.priors.gan import load_gan  # noqa: E402
from medrecon.utils_io import git_revision  # noqa: E402

SIZE = 28
HOLE = 14  # 32/64 of the side, as in Yeh et al.
N_TEST = 10  # one digit per class
N_VAL = 4
SEED = 0
RESTARTS, N_ITER, LR = 4, 200, 0.05
GRIDS = {
    "tv": [{"lam": v} for v in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)],
    "csgm": [{"lam": v} for v in (3e-3, 1e-2, 3e-2)],
    # lam = 2 x the csgm grid (the bracket holds ||z||^2 / 2); d_weight 1 is the paper's objective.
    "gan-d": [{"lam": v, "d_weight": d} for v in (6e-3, 2e-2, 6e-2) for d in (1.0, 3.0)],
}


def _short(path: str) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def digits(split: str, n: int) -> torch.Tensor:
    """(n, 1, 28, 28) in [0, 1], evenly spaced over the split (sorted by label): test: one per class."""
    ds = MNISTDataset(split)
    step = len(ds) // n
    return torch.stack([ds[i * step] for i in range(n)]).float()


def make_problem(task: str, x: torch.Tensor, gen: torch.Generator):
    """(op, y) for a task; y from x (B, 1, 28, 28)."""
    if task.startswith("inpaint"):  # "inpaint": the scaled 14x14 hole; "inpaint8": a smaller 8x8 one
        op = Inpainting(center_block_mask((SIZE, SIZE), int(task[7:] or HOLE)))
        return op, op(x)
    if task == "sr4":
        op = Downsampling((SIZE, SIZE), 4, "box")
        return op, op(x)
    if task == "denoise":
        return Denoising((SIZE, SIZE)), x + 0.1 * torch.randn(x.shape, generator=gen)
    if task == "quant5":
        return Denoising((SIZE, SIZE)), torch.round(4 * x) / 4
    if task.startswith("ct"):
        from medrecon.operators.ct import ParallelBeamCT

        op = ParallelBeamCT(SIZE, int(task[2:]))
        with torch.no_grad():
            ax = op(x)
        sigma = 0.02 * ax.abs().mean(dim=(1, 2, 3), keepdim=True)
        return op, ax + sigma * torch.randn(ax.shape, generator=gen)
    raise ValueError(task)


def run_method(method: str, op, y, params: dict, gan) -> torch.Tensor:
    if method == "tv":
        return medrecon.reconstruct(op, y, "tv", n_iter=300, **params)
    if method == "fbp":
        return medrecon.reconstruct(op, y, method)
    if method == "vae-range":  # the VAE prior with its own defaults (data/weights/vae_mnist28.pt)
        return medrecon.reconstruct(op, y, method, generator=torch.Generator().manual_seed(SEED))
    return medrecon.reconstruct(
        op,
        y,
        method,
        weights=gan,
        restarts=RESTARTS,
        n_iter=N_ITER,
        lr=LR,
        generator=torch.Generator().manual_seed(SEED),
        **params,
    )


def scores(x_true: torch.Tensor, x: torch.Tensor) -> tuple[list[float], list[float]]:
    x = x.real if x.is_complex() else x
    x = x.detach().clamp(0, 1)
    p = [psnr(x_true[i, 0], x[i, 0], data_range=1.0) for i in range(len(x))]
    s = [ssim(x_true[i, 0], x[i, 0], data_range=1.0) for i in range(len(x))]
    return p, s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tasks", nargs="+", default=["inpaint", "inpaint8", "sr4", "denoise", "quant5", "ct10", "ct30"]
    )
    ap.add_argument("--weights", default=str(ROOT / "data/weights/gan_mnist28.pt"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gan.json"))
    ap.add_argument("--quick", action="store_true", help="first grid point only, 2 test digits (smoke run)")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="run only these (default: tv, csgm, gan-d; CT adds fbp and vae-range)",
    )
    ap.add_argument(
        "--ablation",
        action="store_true",
        help="instead of the tables: the discriminator-weight sweep on inpainting (test digits)",
    )
    ap.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="JSON",
        help="merge result files of runs over disjoint --tasks into --out (no computation)",
    )
    args = ap.parse_args(argv)
    if args.merge:
        from medrecon.utils_io import atomic_write_text

        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        merged = {
            "tasks": {},
            "settings": parts[0]["settings"],
            "provenance": [p["provenance"] for p in parts],
        }
        for part in parts:  # method by method, so a later run can add methods to a task
            for task, entry in part["tasks"].items():
                merged["tasks"].setdefault(task, {"methods": {}, "seconds": 0.0})
                merged["tasks"][task]["methods"].update(entry["methods"])
                merged["tasks"][task]["seconds"] += entry["seconds"]
            merged.update({k: v for k, v in part.items() if k == "ablation"})
        atomic_write_text(args.out, json.dumps(merged, indent=1))
        print(table(merged))
        return 0
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    gan = load_gan(args.weights)
    x_val, x_test = digits("train", N_VAL), digits("test", N_TEST if not args.quick else 2)
    out = {
        "tasks": {},
        "settings": {
            "image_size": SIZE,
            "hole": HOLE,
            "n_test": len(x_test),
            "n_val": N_VAL,
            "restarts": RESTARTS,
            "n_iter": N_ITER,
            "lr": LR,
            "grids": GRIDS,
            "weights": _short(args.weights),
        },
    }
    if args.ablation:
        out["ablation"] = ablation(gan, x_test, x_val)
        args.tasks = []
    for task in args.tasks:
        t_task = time.perf_counter()
        op_v, y_v = make_problem(task, x_val, torch.Generator().manual_seed(SEED + 1))
        op_t, y_t = make_problem(task, x_test, torch.Generator().manual_seed(SEED + 2))
        methods = ["tv", "csgm", "gan-d"] + (["fbp", "vae-range"] if task.startswith("ct") else [])
        methods = [m for m in methods if args.methods is None or m in args.methods]
        res = {}
        for m in methods:
            grid = GRIDS.get(m, [{}])[: 1 if args.quick else None]
            best, best_p, tuning = grid[0], -np.inf, []
            if len(grid) > 1:
                for params in grid:
                    p_val = float(np.mean(scores(x_val, run_method(m, op_v, y_v, params, gan))[0]))
                    tuning.append({**params, "val_psnr": round(p_val, 3)})
                    if p_val > best_p:
                        best, best_p = params, p_val
            t_m = time.perf_counter()
            x = run_method(m, op_t, y_t, best, gan)
            sec = time.perf_counter() - t_m
            variants = {m: x}
            if task.startswith("inpaint") and m in ("csgm", "gan-d"):
                variants[f"{m}+copy"] = blend_measured(op_t, x, y_t, "copy")
                variants[f"{m}+poisson"] = blend_measured(op_t, x, y_t, "poisson")
            for name, xv in variants.items():
                p, s = scores(x_test, xv)
                res[name] = {
                    "psnr": float(np.mean(p)),
                    "psnr_std": float(np.std(p)),
                    "ssim": float(np.mean(s)),
                    "ssim_std": float(np.std(s)),
                    "params": best,
                    "seconds": round(sec, 1),
                    "per_image_psnr": [round(v, 3) for v in p],
                    "tuning": tuning if name == m else None,
                }
            print(
                f"{task:8s} {m:8s} {best} PSNR {res[m]['psnr']:.2f} SSIM {res[m]['ssim']:.4f} ({sec:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        if task.startswith("inpaint"):  # the measured-data baseline: zeros in the hole
            p, s = scores(x_test, y_t)
            res["masked input"] = {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "params": {}}
        out["tasks"][task] = {"methods": res, "seconds": round(time.perf_counter() - t_task, 1)}
    out["provenance"] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git": git_revision(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seconds": round(time.perf_counter() - t0, 1),
        "threads": torch.get_num_threads(),
    }
    if not args.quick:
        from medrecon.utils_io import atomic_write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(out, indent=1))
    print(table(out))
    return 0


ABLATION_D_WEIGHTS = (0.0, 1.0, 3.0, 10.0, 30.0, 100.0)


def ablation(gan, x_test: torch.Tensor, x_val: torch.Tensor) -> dict:
    """gan-d on the two inpainting tasks: d_weight swept at fixed lam = 0.06, p = 2 and p = 1 (test digits;
    reported as a sweep, not used to pick anything), plus the range's representation error: csgm with
    A = identity and lam = 0 on the clean digits (the best PSNR any range method can reach)."""
    res = {"lam": 0.06, "d_weights": list(ABLATION_D_WEIGHTS), "rows": []}
    for task in ("inpaint", "inpaint8"):
        op, y = make_problem(task, x_test, torch.Generator().manual_seed(SEED + 2))
        for p_norm in (2.0, 1.0):
            for dw in ABLATION_D_WEIGHTS:
                x = run_method("gan-d", op, y, {"lam": 0.06, "d_weight": dw, "p": p_norm}, gan)
                ps, ss = scores(x_test, x)
                pb, sb = scores(x_test, blend_measured(op, x, y, "copy"))
                with torch.no_grad():
                    d_out = torch.sigmoid(gan.discriminate(x.clamp(0, 1))).mean()
                res["rows"].append(
                    {
                        "task": task,
                        "p": p_norm,
                        "d_weight": dw,
                        "psnr": float(np.mean(ps)),
                        "ssim": float(np.mean(ss)),
                        "psnr_copy": float(np.mean(pb)),
                        "ssim_copy": float(np.mean(sb)),
                        "mean_D": float(d_out),
                    }
                )
                print(res["rows"][-1], file=sys.stderr, flush=True)
    op = Denoising((SIZE, SIZE))
    x = run_method("csgm", op, x_test, {"lam": 0.0}, gan)
    ps, ss = scores(x_test, x)
    res["range_error"] = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss))}
    with torch.no_grad():
        res["mean_D_real_test"] = float(torch.sigmoid(gan.discriminate(x_test)).mean())
    return res


def table(out: dict) -> str:
    tasks = list(out["tasks"])
    names = []
    for t in tasks:
        for n in out["tasks"][t]["methods"]:
            if n not in names:
                names.append(n)
    lines = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for n in names:
        cells = []
        for t in tasks:
            r = out["tasks"][t]["methods"].get(n)
            cells.append(f"{r['psnr']:.2f} / {r['ssim']:.3f}" if r else "")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "PSNR (dB) / SSIM, mean over the test digits\n\n" + "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
