"""The 128x128 real-CT VAE and flow priors against FBP and TV on held-out slices (issue 16).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/priors_ct128.py            # 16 lung1 slices, 30 and 10 angles
    OMP_NUM_THREADS=1 python benchmarks/priors_ct128.py --quick              # smoke run (2 slices, 10 iterations)
    # or one process per setting, then: python benchmarks/priors_ct128.py --merge a30.json a10.json

Priors: ``data/weights/vae_ct128.pt`` and ``flow_ct128.pt`` (trained on the CT TRAIN split, lung2 + head,
``configs/train_{vae,flow}_ct128.yaml``). Data: ``--n-val`` slices spaced evenly over the validation
subject lung1 (``medrecon.data.real.load_corpus("ct", "validation", 128, slices=n)``), parallel-beam CT
with 30 and 10 angles, 1 % Gaussian noise (``sigma = 0.01 mean |A x|``, seeded per slice id).
Methods: FBP, TV with the discrepancy principle, ``vae-range``, ``vae-soft``, ``flow`` latent and MAP;
the learned priors use the automatic weight ``lam="noise"`` (the MAP weight from sigma, no constant
fitted: nothing is tuned on validation slices). The cause of a loss to TV is measured by the
representation limit: the best fit ``min_z ||G(z) - x||^2`` (``vae-range`` with A = I, no noise,
lam 0) of the validation slices and, for comparison, of training slices. Writes
``benchmarks/results/priors_ct128.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from medrecon.data.real import load_corpus
from medrecon.experiment.build import simulate
from medrecon.methods import reconstruct
from medrecon.metrics import psnr, ssim
from medrecon.operators import Identity, ParallelBeamCT
from medrecon.utils_io import atomic_write_text, git_revision

ROOT = Path(__file__).resolve().parents[1]
VAE, FLOW = ROOT / "data/weights/vae_ct128.pt", ROOT / "data/weights/flow_ct128.pt"
NOISE_LEVEL = 0.01


def _methods(n_iter: int) -> list[tuple[str, str, dict]]:
    return [
        ("fbp", "fbp", {}),
        ("tv-discrepancy", "tv", {"lam": "discrepancy", "n_iter": 300}),
        ("vae-range", "vae-range", {"weights": str(VAE), "lam": "noise", "n_iter": n_iter, "restarts": 2}),
        ("vae-soft", "vae-soft", {"weights": str(VAE), "lam": "noise", "n_iter": max(10, n_iter // 5)}),
        ("flow-latent", "flow", {"weights": str(FLOW), "mode": "latent", "lam": "noise", "n_iter": n_iter}),
        ("flow-map", "flow", {"weights": str(FLOW), "mode": "map", "lam": "noise", "n_iter": n_iter}),
    ]


def _scores(x_true: torch.Tensor, x: torch.Tensor) -> tuple[list[float], list[float]]:
    t, p = x_true[:, 0].numpy(), x.real[:, 0].clamp(0, 1).numpy()
    return (
        [float(psnr(t[i], p[i], data_range=1.0)) for i in range(len(t))],
        [float(ssim(t[i], p[i], data_range=1.0)) for i in range(len(t))],
    )


def _summary(v: list[float]) -> dict:
    a = np.asarray(v, dtype=float)
    return {"mean": round(float(a.mean()), 3), "std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 3)}


def representation_limit(images: torch.Tensor, n_iter: int) -> dict:
    """PSNR of the best VAE fit G(z*) of each image (A = I, no noise, lam = 0, 2 restarts)."""
    op = Identity((128, 128))
    x = reconstruct(
        op,
        images,
        "vae-range",
        weights=str(VAE),
        lam=0.0,
        n_iter=n_iter,
        restarts=2,
        generator=torch.Generator().manual_seed(0),
    )
    return _summary(_scores(images, x)[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-val", type=int, default=16)
    ap.add_argument("--angles", type=int, nargs="*", default=[30, 10])
    ap.add_argument("--n-iter", type=int, default=150)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/priors_ct128.json"))
    ap.add_argument(
        "--merge",
        nargs="*",
        default=None,
        help="only merge these result files (runs of single settings) into --out",
    )
    args = ap.parse_args(argv)
    if args.merge:
        merged: dict = {}
        for path in args.merge:
            part = json.loads(Path(path).read_text())
            settings = {**merged.get("settings", {}), **part.pop("settings")}
            merged = {**merged, **part, "settings": settings}
        atomic_write_text(Path(args.out), json.dumps(merged, indent=1))
        return 0
    if args.quick:
        args.n_val, args.n_iter = 2, 10
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    corpus = load_corpus("ct", "validation", size=128, slices=args.n_val)
    x_true = corpus.images
    result = {
        "what": "real-CT 128 priors vs FBP and TV, lung1 validation slices, 1 % noise (issue 16)",
        "ids": list(corpus.ids),
        "n_iter": args.n_iter,
        "git": git_revision(),
        "load_average_start": os.getloadavg(),
        "settings": {},
    }
    for angles in args.angles:
        op = ParallelBeamCT(128, angles)
        ys, sig = [], []
        for i, name in enumerate(corpus.ids):
            g = torch.Generator().manual_seed(zlib.crc32(f"priors_ct128/{name}/{angles}".encode()))
            y, s = simulate(op, x_true[i : i + 1], NOISE_LEVEL, g)
            ys.append(y)
            sig.append(s)
        y, sigma = torch.cat(ys), torch.cat(sig)
        rows = {}
        for label, method, options in _methods(args.n_iter):
            if args.only and label not in args.only:
                continue
            opts = dict(options)
            if opts.get("lam") in ("noise", "discrepancy"):
                opts["noise_std"] = sigma
            if method == "vae-range":
                opts["generator"] = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            x = reconstruct(op, y, method, **opts)
            sec = (time.perf_counter() - t0) / len(corpus.ids)
            p, s = _scores(x_true, x)
            rows[label] = {
                "psnr": _summary(p),
                "ssim": _summary(s),
                "seconds_per_image": round(sec, 2),
                "psnr_per_slice": [round(v, 2) for v in p],
                "options": {k: v for k, v in options.items() if k != "weights"},
                "load_average": os.getloadavg()[0],
            }
            print(
                f"{angles:3d} angles {label:15s} PSNR {rows[label]['psnr']['mean']:6.2f} +/- "
                f"{rows[label]['psnr']['std']:.2f}  SSIM {rows[label]['ssim']['mean']:.3f}  {sec:6.1f} s/img",
                flush=True,
            )
        result["settings"][f"ct128_a{angles}"] = rows
        atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    if not args.only or "limit" in args.only:
        train = load_corpus("ct", "train", size=128, slices=args.n_val).images
        result["representation_limit_vae"] = {
            "validation_lung1": representation_limit(x_true, 2 * args.n_iter),
            "train_lung2_head": representation_limit(train, 2 * args.n_iter),
            "how": "min_z ||G(z) - x||^2 by vae-range with A = I, no noise, lam = 0, 2 restarts, "
            f"{2 * args.n_iter} Adam steps; PSNR of G(z*)",
        }
        print("representation limit (VAE, A = I):", result["representation_limit_vae"], flush=True)
    result["load_average_end"] = os.getloadavg()
    atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
