"""How far the automatic weights of the learned priors are from the best swept weight (issue 16).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/auto_weights.py            # MNIST 28 + ellipses 64 (+ CT 128)
    OMP_NUM_THREADS=1 python benchmarks/auto_weights.py --priors mnist28 --quick   # smoke run

For each bundled prior family (MNIST 28: VAE, flow, GAN; ellipses 64: VAE, flow; real CT 128: VAE,
flow when ``data/weights/{vae,flow}_ct128.pt`` exist) and each method (``vae-range``, ``vae-soft``,
``flow`` latent and MAP, ``csgm``, ``gan-d``): parallel-beam CT with ``--angles`` angles and 1 %
Gaussian noise (``sigma = 0.01 mean |A x|``, ``medrecon.experiment.build.simulate``, seeded per image),
reconstructed with

* a sweep of fixed weights ``lam_noise * 10**k``, ``k = -3 ... 3`` (``lam_noise``: the MAP weight of
  ``lam="noise"`` at the images' mean sigma, so ``k = 0`` is the ``"noise"`` rule itself);
* ``lam="discrepancy"`` (``tau = 1``).

Reported per method and split: mean PSNR per grid weight, the best fixed weight of the grid (mean over
the images) and the per-image oracle (best grid weight per image), and the gaps ``best - rule`` in dB
for the MAP weight (``map_weight``), ``lam="noise"`` (the MAP weight times
``medrecon.solvers.auto_weights.CALIBRATION``) and ``lam="discrepancy"``. The one fitted constant,
the calibration factor, was chosen on the TRAIN split (MNIST train digits, ellipse phantoms of seed 0;
CT: subjects lung2 + head); the gaps are REPORTED on the validation images (MNIST held-out digits,
ellipses of seed 1, CT subject lung1). ``--rescore FILES`` merges runs (e.g. one per prior or method).
Writes ``benchmarks/results/auto_weights.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from medrecon.experiment.build import simulate
from medrecon.methods import reconstruct
from medrecon.operators import ParallelBeamCT
from medrecon.solvers.auto_weights import CALIBRATION, noise_rule_weight
from medrecon.utils_io import atomic_write_text, git_revision

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WEIGHTS = ROOT / "data" / "weights"
NOISE_LEVEL = 0.01
DECADES = (-3, -2, -1, 0, 1, 2, 3)


def _images(prior: str, split: str, n: int) -> tuple[torch.Tensor, list[str]]:
    """n images (N, 1, S, S) of the prior's training ('train') or validation ('val') distribution."""
    if prior == "mnist28":
        from medrecon.data.datasets import MNISTDataset, mnist_split_indices

        idx = mnist_split_indices("train" if split == "train" else "test")
        pick = [idx[i] for i in np.linspace(0, len(idx) - 1, n).round().astype(int)]
        ds = MNISTDataset(indices=pick)
        return ds.images, [f"mnist/{i}" for i in pick]
    if prior == "ellipses64":
        from medrecon.data.datasets import EllipsesDataset

        ds = EllipsesDataset(n, 64, seed=0 if split == "train" else 1, cache=False)
        return torch.stack([ds[i] for i in range(n)]), [f"ellipses/{split}/{i}" for i in range(n)]
    from medrecon.data.real import load_corpus

    corpus = load_corpus("ct", "train" if split == "train" else "validation", size=128, slices=n)
    return corpus.images, list(corpus.ids)


def _methods(prior: str, n_iter: int) -> list[tuple[str, str, str, dict]]:
    """(label, method, noise-rule key, options) for the prior family's models."""
    vae, flow, gan = (WEIGHTS / f"{kind}_{prior}.pt" for kind in ("vae", "flow", "gan"))
    out = []
    if vae.exists():
        out += [
            ("vae-range", "vae-range", "vae-range", {"weights": str(vae), "n_iter": n_iter, "restarts": 2}),
            ("vae-soft", "vae-soft", "vae-soft", {"weights": str(vae), "n_iter": max(10, n_iter // 5)}),
        ]
    if flow.exists():
        out += [
            (
                "flow-latent",
                "flow",
                "flow-latent",
                {"weights": str(flow), "mode": "latent", "n_iter": n_iter},
            ),
            ("flow-map", "flow", "flow-map", {"weights": str(flow), "mode": "map", "n_iter": n_iter}),
        ]
    if gan.exists():
        out += [
            ("csgm", "csgm", "csgm", {"weights": str(gan), "n_iter": n_iter, "restarts": 2}),
            ("gan-d", "gan-d", "gan-d", {"weights": str(gan), "n_iter": n_iter, "restarts": 2}),
        ]
    return out


def _psnr(x: torch.Tensor, x_true: torch.Tensor) -> np.ndarray:
    mse = (x.real.clamp(0, 1) - x_true).pow(2).flatten(1).mean(1).double()
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-12))).numpy()


def _run(op, y, method, options, seed):
    opts = dict(options)
    if method in ("vae-range", "csgm", "gan-d"):
        opts["generator"] = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        t0 = time.perf_counter()
        x = reconstruct(op, y, method, **opts)
        seconds = time.perf_counter() - t0
    return x, seconds, [str(w.message)[:120] for w in caught if issubclass(w.category, RuntimeWarning)]


def _score_rules(row: dict, rule: str) -> dict:
    """Add the ``map_weight`` (decade 0) and ``noise`` (decade log10 CALIBRATION, lam="noise") entries
    from the grid's PSNRs (``gap_oracle_db`` only when the per-image PSNRs are there)."""
    best = row["best_fixed"]["psnr"]
    per_image = np.asarray(row["psnr_grid_per_image"]) if "psnr_grid_per_image" in row else None
    for key, decade in (("map_weight", 0), ("noise", round(math.log10(CALIBRATION.get(rule, 1.0))))):
        k = DECADES.index(decade)
        psnr_k = row["psnr_grid_mean"][k]
        row[key] = {
            "lam": row["grid"][k],
            "decade": decade,
            "psnr": psnr_k,
            "gap_db": round(best - psnr_k, 3),
            "gap_oracle_db": (
                round(row["oracle_per_image_psnr"] - float(per_image[k].mean()), 3)
                if per_image is not None
                else None
            ),
        }
    return row


def evaluate(prior: str, split: str, n: int, angles: int, n_iter: int, only: list[str] | None) -> dict:
    x_true, ids = _images(prior, split, n)
    x_true = x_true.to(torch.float32)
    size = x_true.shape[-1]
    op = ParallelBeamCT(size, angles)
    ys, sig = [], []
    for i, name in enumerate(ids):
        g = torch.Generator().manual_seed(zlib.crc32(f"auto_weights/{name}".encode()))
        y, s = simulate(op, x_true[i : i + 1], NOISE_LEVEL, g)
        ys.append(y)
        sig.append(s)
    y, sigma = torch.cat(ys), torch.cat(sig)
    m = int(np.prod(op.out_shape))
    out = {
        "n_images": n,
        "ids": ids,
        "size": size,
        "angles": angles,
        "sigma_mean": float(sigma.mean()),
        "methods": {},
    }
    for label, method, rule, options in _methods(prior, n_iter):
        if only and label not in only:
            continue
        lam0 = float(
            noise_rule_weight(
                rule,
                op,
                float(sigma.mean()),
                n_pixels=size * size,
                mu=options.get("mu", 1e-2),
                calibrated=False,
            )
        )  # the MAP weight
        grid = [lam0 * 10.0**k for k in DECADES]
        psnr_grid, secs = [], []
        for lam in grid:
            x, s, _ = _run(op, y, method, dict(options, lam=lam), seed=0)
            psnr_grid.append(_psnr(x, x_true))
            secs.append(s)
        p = np.stack(psnr_grid)  # (G, N)
        best_fixed = int(p.mean(1).argmax())
        oracle = float(p.max(0).mean())
        x, s_d, warn = _run(op, y, method, dict(options, lam="discrepancy", noise_std=sigma), seed=0)
        p_disc = _psnr(x, x_true)
        res = torch.linalg.vector_norm((op(x.real if not op.in_complex else x) - y).flatten(1), dim=1)
        ratio = (res / (sigma * math.sqrt(m))).numpy()
        row = {
            "grid": grid,
            "psnr_grid_mean": p.mean(1).round(3).tolist(),
            "psnr_grid_per_image": p.round(3).tolist(),
            "best_fixed": {
                "lam": grid[best_fixed],
                "decade": DECADES[best_fixed],
                "psnr": round(float(p[best_fixed].mean()), 3),
            },
            "oracle_per_image_psnr": round(oracle, 3),
            "discrepancy": {
                "psnr": round(float(p_disc.mean()), 3),
                "gap_db": round(float(p[best_fixed].mean() - p_disc.mean()), 3),
                "gap_oracle_db": round(oracle - float(p_disc.mean()), 3),
                "residual_over_target": [round(float(r), 3) for r in ratio],
                "seconds_per_image": round(s_d / n, 2),
                "warnings": sorted(set(warn)),
            },
            "seconds_per_image_one_weight": round(float(np.mean(secs)) / n, 2),
        }
        out["methods"][label] = row = _score_rules(row, rule)
        print(
            f"{prior:10s} {split:5s} {label:12s} best {row['best_fixed']['psnr']:6.2f} (k={DECADES[best_fixed]:+d}) "
            f"oracle {oracle:6.2f} | noise {row['noise']['psnr']:6.2f} (gap {row['noise']['gap_db']:5.2f}) "
            f"| discrepancy {row['discrepancy']['psnr']:6.2f} (gap {row['discrepancy']['gap_db']:5.2f}, "
            f"res/target {np.mean(ratio):.2f})",
            flush=True,
        )
    return out


def _table(result: dict) -> None:
    table = [
        (
            "| prior | method | best fixed weight (val) | lam='noise': gap | MAP weight: gap | "
            "lam='discrepancy': gap |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for prior, splits in result["priors"].items():
        for label, row in splits.get("val", {}).get("methods", {}).items():
            table.append(
                f"| {prior} | {label} | {row['best_fixed']['psnr']:.2f} dB (10^{row['best_fixed']['decade']}"
                f" x MAP) | {row['noise']['gap_db']:.2f} dB | {row['map_weight']['gap_db']:.2f} dB | "
                f"{row['discrepancy']['gap_db']:.2f} dB |"
            )
    result["table_val"] = table


def rescore(paths: list[str], out: str) -> int:
    """Merge result files (one per prior) and recompute the rule entries from their grids (for files
    written before ``CALIBRATION`` existed, whose ``noise`` entry was the MAP weight)."""
    merged: dict = {}
    for path in paths:
        part = json.loads(Path(path).read_text())
        priors = merged.get("priors", {})
        for prior, splits in part.pop("priors").items():  # merge down to the methods (runs with --only)
            for split, res in splits.items():
                have = priors.setdefault(prior, {}).setdefault(split, {**res, "methods": {}})
                have["methods"].update(res["methods"])
        merged = {**merged, **part, "priors": priors}
    for splits in merged["priors"].values():
        for split in splits.values():
            for label, row in split["methods"].items():
                row.pop("noise", None)
                _score_rules(row, label)  # the labels are the rule names
    merged["calibration"] = dict(CALIBRATION)
    _table(merged)
    print("\n".join(merged["table_val"]))
    atomic_write_text(Path(out), json.dumps(merged, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", nargs="*", default=["mnist28", "ellipses64", "ct128"])
    ap.add_argument("--only", nargs="*", default=None, help="method labels (default: all)")
    ap.add_argument("--n-train", type=int, default=4)
    ap.add_argument("--n-val", type=int, default=6)
    ap.add_argument("--angles", type=int, default=30)
    ap.add_argument("--n-iter", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="2 images, 20 iterations (smoke run)")
    ap.add_argument("--out", default=str(RESULTS / "auto_weights.json"))
    ap.add_argument(
        "--rescore",
        nargs="*",
        default=None,
        help="only merge these result files and recompute the rule entries into --out",
    )
    args = ap.parse_args(argv)
    if args.rescore:
        return rescore(args.rescore, args.out)
    if args.quick:
        args.n_train = args.n_val = 2
        args.n_iter = 20
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    result = {
        "what": "gap in dB between the best swept weight and the automatic weights (issue 16)",
        "calibration": dict(CALIBRATION),
        "noise_level": NOISE_LEVEL,
        "decades": list(DECADES),
        "n_iter": args.n_iter,
        "git": git_revision(),
        "load_average_start": os.getloadavg(),
        "priors": {},
    }
    t0 = time.time()
    for prior in args.priors:
        if (
            prior == "ct128"
            and not (WEIGHTS / "vae_ct128.pt").exists()
            and not (WEIGHTS / "flow_ct128.pt").exists()
        ):
            print("ct128: no data/weights/{vae,flow}_ct128.pt; skipped", file=sys.stderr)
            continue
        result["priors"][prior] = {
            split: evaluate(prior, split, n, args.angles, args.n_iter, args.only)
            for split, n in (("train", args.n_train), ("val", args.n_val))
            if n > 0
        }
    result["seconds"] = round(time.time() - t0, 1)
    result["load_average_end"] = os.getloadavg()
    _table(result)
    print("\n".join(result["table_val"]))
    atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"written {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
