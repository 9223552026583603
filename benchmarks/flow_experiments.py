"""Flow-prior experiments (Asim et al., ICML 2020) on sparse-angle CT; writes benchmarks/results/flow.json.

Runs the experiment configs ``configs/flow_ct_*.yaml`` through ``medrecon.experiment.run_experiment``
(the same code as ``medrecon reconstruct``: same images, operator, noise and metrics as the CT configs),
each beside FBP, TV and the VAE methods:

``flow_ct_sparse_angle_10`` / ``_30`` reconstruct the bundled ``data/ct_test`` images with priors trained
on random ellipses; the results are grouped (``GROUPS``) into in distribution (the 4 held-out ellipse
phantoms) and out of distribution (the real CT slice ``ct_small``, and Shepp-Logan).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/flow_experiments.py [--configs NAME ...] [--out outputs/flow_experiments]

The JSON holds, per config, the mean and standard deviation of PSNR / SSIM over the images for every
method, the per-image rows, and the run's provenance (command, git revision, torch version, wall time).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["flow_ct_sparse_angle_10", "flow_ct_sparse_angle_30"]


#: Image groups of data/ct_test by file name: the priors were trained on random ellipses.
GROUPS = {
    "in_distribution": lambda name: name.startswith("ellipses"),
    "ood_real_ct": lambda name: name == "ct_small",
    "ood_shepp_logan": lambda name: name == "shepp_logan",
}


def _summarise(rows: list[dict]) -> dict:
    return {group: _summarise_group([r for r in rows if keep(r["image"])]) for group, keep in GROUPS.items()}


def _summarise_group(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        psnr = np.array([r["psnr"] for r in sel])
        ssim = np.array([r["ssim"] for r in sel])
        out[method] = {
            "psnr_mean": round(float(psnr.mean()), 3),
            "psnr_std": round(float(psnr.std()), 3),
            "ssim_mean": round(float(ssim.mean()), 4),
            "ssim_std": round(float(ssim.std()), 4),
            "seconds_per_image": round(float(np.mean([r["seconds"] for r in sel])), 2),
            "n_images": len(sel),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from medrecon.experiment import load_experiment_config, run_experiment
    from medrecon.utils_io import atomic_write_text, git_revision

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--configs", nargs="*", default=CONFIGS, help="config names under configs/ (without .yaml)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "flow_experiments")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "flow.json")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override applied to every config (e.g. images.0.n=2 for a quick run)",
    )
    args = p.parse_args(argv)

    results = {}
    if args.results.exists():  # keep the configs not rerun this time
        results = json.loads(args.results.read_text()).get("experiments", {})
    t_all = time.perf_counter()
    for name in args.configs:
        cfg_path = ROOT / "configs" / f"{name}.yaml"
        cfg = load_experiment_config(cfg_path, args.overrides)
        t0 = time.perf_counter()
        rows = run_experiment(cfg, args.out / name, overwrite=True, progress=False, echo=print)
        results[name] = {
            "config": str(cfg_path.relative_to(ROOT)),
            "overrides": args.overrides,
            "seconds": round(time.perf_counter() - t0, 1),
            "methods": _summarise(rows),
            "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
        }
        for group, table in results[name]["methods"].items():
            print(
                f"{name} [{group}]: " + ", ".join(f"{m} {v['psnr_mean']:.2f} dB" for m, v in table.items()),
                flush=True,
            )
    doc = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "git": git_revision(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - t_all, 1),
        "experiments": results,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
