"""Seconds per image and PSNR of each method on real CT slices, side by side with deepinv 0.5.

    python benchmarks/methods.py                                   # 64/128/256 px (DIP to 128), batch 1 and 8
    python benchmarks/methods.py --sizes 64 128 --dip-steps 300 --images 2   # a short run
    python benchmarks/methods.py --no-deepinv                      # without the deepinv peer
    python benchmarks/methods.py --sizes 256 --images 2 --dip-images 2 --dip-steps 300 --dip-max-size 256 \
        --threads 1 --out benchmarks/results/methods_256.json      # 256 px with deepinv (methods_256.json)
    python benchmarks/methods.py --sizes 128 --batches 1 --methods dip dip-tv --images 1 --threads 2 \
        --no-deepinv --out benchmarks/results/dip_idle_128.json     # DIP / DIP-TV on lung1:0, full default run

Problem: parallel-beam CT with 30 angles, y = A x + n with sigma = 0.02 * mean |A x| (the noise model of
``configs/ct_sparse_angle_30.yaml``), on real chest-CT slices: ``medrecon.data.real.load_corpus("ct",
"validation")`` when the corpus is fetched (``make data``), else the bundled ``data/real_sample`` slices
(resized). Methods through ``medrecon.reconstruct``: ``fbp``; ``tv`` with ``lam="discrepancy"`` (the noise
level is known) and 200 PDHG iterations per solve, as the configs run it; ``dip`` and ``dip-tv`` (library
defaults, ``n_iter=--dip-steps``). DIP fits one network per image, so it runs at batch 1 only, on the first
``--dip-images`` slices (default: ``--images``), on both sides.

deepinv (``--deepinv-python``, default ``.venv-deepinv/bin/python`` from benchmarks/setup_deepinv_env.sh) runs
benchmarks/deepinv_peer.py on the same images, angles and noise model with its own operator, and reports the
time its TV needs to reach medrecon's PSNR (at medrecon's relative weight) and its DIP's time and PSNR.
Threads: ``medrecon.runtime.configure_threads`` (``--threads`` overrides); the machine's load average is
recorded before and after each row (and each deepinv image). Results: ``benchmarks/results/methods.json``
(rewritten after every row, with ``"complete": false`` until the run ends) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import medrecon
from medrecon.experiment import simulate
from medrecon.metrics import psnr
from medrecon.operators.ct import ParallelBeamCT
from medrecon.runtime import configure_threads
from medrecon.solvers.variational import pdhg_tv
from medrecon.solvers.weights import _per_element, discrepancy_weight

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
N_ANGLES, NOISE_LEVEL, SEED = 30, 0.02, 0
TV_ITER = 200


def _load(size: int, n: int) -> tuple[torch.Tensor, str]:
    from medrecon.data import real

    if real.is_available("ct"):
        corpus = real.load_corpus("ct", "validation", size=size, slices=n)
        return corpus.images, f"medrecon.data.real ct/validation ({', '.join(corpus.ids)})"
    files = sorted((REPO / "data" / "real_sample").glob("*.npy"))[:n]
    x = torch.from_numpy(np.stack([np.load(f) for f in files]).astype(np.float32))[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="area") if size != x.shape[-1] else x
    return x.clamp(0, 1), f"data/real_sample ({', '.join(f.stem for f in files)})"


def _psnrs(x_true: torch.Tensor, x: torch.Tensor) -> list[float]:
    return [
        round(psnr(x_true[i, 0].numpy(), x[i, 0].abs().numpy(), data_range=1.0), 3) for i in range(len(x))
    ]


def _uptime() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _tv_lam(op, y: torch.Tensor, sigma: torch.Tensor) -> list[float]:
    """The relative weight the tv method's discrepancy search picks (same solver settings), for the deepinv peer."""
    scale = op.norm_squared()

    def solve(lam, x0):
        return pdhg_tv(op, y, lam=_per_element(lam, y, scale), n_iter=TV_ITER, nonneg=True, x0=x0)

    lam, _ = discrepancy_weight(solve, op, y, noise_std=sigma, warm_start=True)
    return lam.tolist()


def run(
    sizes: list[int],
    batches: list[int],
    methods: list[str],
    n_images: int,
    dip_steps: int,
    deepinv_python: str | None,
    threads: str,
    dip_max_size: int,
    dip_images: int | None = None,
    checkpoint=None,
) -> dict:
    """The rows and deepinv peers; ``checkpoint(result)``, when given, is called after each of them."""
    dip_images = n_images if dip_images is None else dip_images
    if not 1 <= dip_images <= n_images:
        raise ValueError(f"dip_images must be in 1..n_images={n_images}, got {dip_images}")
    rows, peers, sources = [], [], {}
    result = {"rows": rows, "deepinv": peers, "sources": sources, "dip_images": dip_images}
    for size in sizes:
        x_all, sources[size] = _load(size, max(*batches, n_images))
        op = ParallelBeamCT(size, N_ANGLES)
        y_all, sigma_all = simulate(op, x_all, NOISE_LEVEL, torch.Generator().manual_seed(SEED))
        op.norm()  # cached power iteration, outside the clocks
        targets: dict[str, list[float]] = {}
        for method in methods:
            if method.startswith("dip") and size > dip_max_size:
                continue
            for batch in batches if method in ("fbp", "tv") else [1]:
                options: dict = {}
                if method == "tv":
                    options = {"lam": "discrepancy", "n_iter": TV_ITER}
                elif method.startswith("dip"):
                    options = {"n_iter": dip_steps}
                n = (dip_images if method.startswith("dip") else n_images) if batch == 1 else batch
                xs, seconds, load = [], 0.0, _uptime()
                for start in range(0, n, batch):
                    sl = slice(start, start + batch)
                    if method == "tv":
                        options["noise_std"] = sigma_all[sl]
                    t0 = time.perf_counter()
                    xs.append(medrecon.reconstruct(op, y_all[sl], method, **options))
                    seconds += time.perf_counter() - t0
                p = _psnrs(x_all[:n], torch.cat(xs))
                if batch == 1:
                    targets[method] = p
                row = {
                    "size": size,
                    "batch": batch,
                    "method": method,
                    "images": n,
                    "seconds_per_image": round(seconds / n, 3),
                    "psnr_mean": round(float(np.mean(p)), 3),
                    "psnr": p,
                    "load_before": load,
                    "load_after": _uptime(),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                if checkpoint is not None:
                    checkpoint(result)
        if deepinv_python and "tv" in targets:
            peers.append(
                _deepinv(
                    deepinv_python,
                    size,
                    x_all[:n_images],
                    y_all[:n_images],
                    sigma_all[:n_images],
                    op,
                    targets,
                    dip_steps if "dip" in targets else 0,
                    threads,
                    dip_images,
                )
            )
            print(json.dumps(peers[-1]), flush=True)
            if checkpoint is not None:
                checkpoint(result)
    return result


def _deepinv(
    python: str, size: int, x, y, sigma, op, targets: dict, dip_steps: int, threads: str, dip_images: int
) -> dict:
    lam = _tv_lam(op, y, sigma)
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.json"
        np.savez(
            inp,
            images=x.numpy(),
            n_angles=N_ANGLES,
            noise_level=NOISE_LEVEL,
            seed=SEED,
            tv_lam=np.array(lam),
            target_tv=np.array(targets["tv"]),
            target_dip=np.array(targets.get("dip", [])),
            dip_steps=dip_steps,
            dip_images=dip_images,
            threads=int(threads),
        )
        load = _uptime()
        proc = subprocess.run(
            [python, str(REPO / "benchmarks" / "deepinv_peer.py"), str(inp), str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            return {
                "size": size,
                "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed",
            }
        peer = json.loads(out.read_text())
    peer.update(size=size, tv_lam=lam, load_before=load, load_after=_uptime())
    return peer


def _ratio_table(result: dict) -> str:
    lines = [
        "| size | batch | method | s/image | PSNR (dB) | load (1/5/15 min) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['method']} | {r['seconds_per_image']:.2f} | "
            f"{r['psnr_mean']:.2f} | {r['load_before']} |"
        )
    by = {(r["size"], r["method"]): r for r in result["rows"] if r["batch"] == 1}
    if result["deepinv"]:
        lines += [
            "",
            (
                "| size | deepinv TV: s/image to reach medrecon's PSNR | medrecon tv s/image | ratio | "
                "deepinv DIP s/image (PSNR) | medrecon dip s/image (PSNR) | ratio | "
                "medrecon dip-tv s/image (PSNR) | ratio |"
            ),
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for peer in result["deepinv"]:
            size = peer["size"]
            if "error" in peer:
                lines.append(f"| {size} | failed: {peer['error']} | | | | | | | |")
                continue
            tv_d = float(np.mean([t["seconds"] for t in peer["tv"]]))
            reached = sum(t["reached"] for t in peer["tv"])
            tv_m = by[(size, "tv")]["seconds_per_image"]
            cell = f"{tv_d:.2f} ({reached}/{len(peer['tv'])} reached)"
            dip_cells = "| | | | |"
            if peer["dip"]:
                dip_d = float(np.mean([d["seconds"] for d in peer["dip"]]))
                dip_p = float(np.mean([d["psnr"] for d in peer["dip"]]))
                dip_cells = f"{dip_d:.1f} ({dip_p:.2f}) |"
                for method in ("dip", "dip-tv"):
                    m = by.get((size, method))
                    dip_cells += (
                        f" {m['seconds_per_image']:.1f} ({m['psnr_mean']:.2f}) | "
                        f"{dip_d / m['seconds_per_image']:.2f} |"
                        if m
                        else " | |"
                    )
            lines.append(f"| {size} | {cell} | {tv_m:.2f} | {tv_d / tv_m:.2f} | {dip_cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--methods", nargs="+", default=["fbp", "tv", "dip", "dip-tv"])
    parser.add_argument("--images", type=int, default=4, help="images timed at batch 1")
    parser.add_argument(
        "--dip-images",
        type=int,
        default=None,
        help="images DIP / DIP-TV / deepinv's DIP run on (default: --images)",
    )
    parser.add_argument("--dip-steps", type=int, default=1500)
    parser.add_argument(
        "--dip-max-size", type=int, default=128, help="largest size DIP runs at (256 px: ~4x 128)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--deepinv-python", default=str(REPO / ".venv-deepinv" / "bin" / "python"))
    parser.add_argument("--no-deepinv", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "methods.json")
    args = parser.parse_args(argv)
    choice = configure_threads(args.threads)
    print(f"methods benchmark: using {choice}", flush=True)
    peer = None if args.no_deepinv else args.deepinv_python
    if peer is not None and not Path(peer).exists():
        print(f"deepinv peer skipped: {peer} not found (run benchmarks/setup_deepinv_env.sh)", flush=True)
        peer = None
    load = _uptime()
    command = "python benchmarks/methods.py " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict, complete: bool = False) -> None:
        from medrecon.utils_io import atomic_write_text

        result.update(
            command=command,
            complete=complete,
            threads=str(choice),
            load_start=load,
            load_end=_uptime(),
            dip_steps=args.dip_steps,
            cpu=os.cpu_count(),
            torch=torch.__version__,
            note="load average of the machine (shared) with each row; compare ratios, not absolute times",
        )
        atomic_write_text(args.out, json.dumps(result, indent=1))

    result = run(
        args.sizes,
        args.batches,
        args.methods,
        args.images,
        args.dip_steps,
        peer,
        str(choice.threads),
        args.dip_max_size,
        args.dip_images,
        checkpoint=save,
    )
    save(result, complete=True)
    print(_ratio_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
