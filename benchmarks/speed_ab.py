"""Before/after ratios of TV-discrepancy and DIP, back to back in one process on the same images.

    python benchmarks/speed_ab.py [--before e87c432] [--dip-steps 150]

"Before" is the solver and DIP code of a git revision (default e87c432, the last one before the speed work),
loaded from ``git show`` into fresh modules; "after" is the working tree. Both TV versions use the same
Morozov target (``op.n_measurements()``). Images: the 6 real 128x128 CT slices of ``data/real_sample``,
30 angles, noise 0.02. One torch thread (``--threads``). Writes ``benchmarks/results/tv_discrepancy_speed.json``
and ``benchmarks/results/dip_speed.json``; the load average is recorded with every row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medrecon.experiment import simulate
from medrecon.metrics import psnr
from medrecon.operators.ct import ParallelBeamCT
from medrecon.priors.dip import fit_dip
from medrecon.runtime import configure_threads
from medrecon.solvers.variational import pdhg_tv
from medrecon.solvers.weights import _per_element, discrepancy_weight

REPO = Path(__file__).resolve().parents[1]


def _old_module(rev: str, path: str, name: str, tmp: str):
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=REPO, capture_output=True, text=True, check=True
    )
    file = Path(tmp) / f"{name}.py"
    file.write_text(
        source.stdout.replace("from .", "from medrecon.solvers.")
    )  # relative imports of the old package
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="e87c432")
    parser.add_argument("--dip-steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args(argv)
    print(f"speed_ab: using {configure_threads(args.threads)}", flush=True)
    files = sorted((REPO / "data" / "real_sample").glob("*.npy"))[: args.images]
    x = torch.from_numpy(np.stack([np.load(f) for f in files]).astype(np.float32))[:, None]
    op = ParallelBeamCT(128, 30)
    op.norm()
    y, sigma = simulate(op, x, 0.02, torch.Generator().manual_seed(0))
    scale = op.norm_squared()
    with tempfile.TemporaryDirectory() as tmp:
        old_var = _old_module(args.before, "medrecon/solvers/variational.py", "old_variational", tmp)
        old_w = _old_module(args.before, "medrecon/solvers/classical.py", "old_classical", tmp)
        old_dip = _old_module(args.before, "medrecon/priors/dip.py", "old_dip", tmp)
    old_w._n_measurements = lambda op_, y_: op_.n_measurements() * y_.shape[1]  # the same target for both

    def tv_before(yy, ss):
        def solve(lam, x0):
            return old_var.pdhg_tv(
                op, yy, lam=old_w._per_element(lam, yy, scale), n_iter=200, nonneg=True, x0=x0
            )

        return old_w.discrepancy_weight(solve, op, yy, noise_std=ss)

    def tv_after(yy, ss):
        def solve(lam, x0):
            return pdhg_tv(op, yy, lam=_per_element(lam, yy, scale), n_iter=200, nonneg=True, x0=x0)

        return discrepancy_weight(solve, op, yy, noise_std=ss, warm_start=True)

    def p(i, xr):
        return round(psnr(x[i, 0].numpy(), xr[0, 0].numpy(), data_range=1.0), 3)

    rows = []
    for i, f in enumerate(files):
        load, t = _load(), {}
        for name, fn in (("before", tv_before), ("after", tv_after)):
            t0 = time.perf_counter()
            lam, xr = fn(y[i : i + 1], sigma[i : i + 1])
            t[name] = (time.perf_counter() - t0, p(i, xr), float(lam))
        conv = pdhg_tv(op, y[i : i + 1], lam=t["after"][2] * scale, n_iter=1500, tol=0.0, nonneg=True)
        rows.append(
            {
                "image": f.stem,
                "before_s": round(t["before"][0], 2),
                "after_s": round(t["after"][0], 2),
                "psnr_converged_at_after_lam": p(i, conv),
                "ratio": round(t["before"][0] / t["after"][0], 2),
                "psnr_before": t["before"][1],
                "psnr_after": t["after"][1],
                "lam_before": t["before"][2],
                "lam_after": t["after"][2],
                "load": load,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    out: dict = {"rows": rows}
    for name, fn in (("before", tv_before), ("after", tv_after)):
        load = _load()
        t0 = time.perf_counter()
        _, xb = fn(y, sigma)
        out[f"batch{len(files)}_{name}"] = {
            "s_per_image": round((time.perf_counter() - t0) / len(files), 2),
            "psnr": [p(i, xb[i : i + 1]) for i in range(len(files))],
            "load": load,
        }
        print(name, json.dumps(out[f"batch{len(files)}_{name}"]), flush=True)
    (REPO / "benchmarks" / "results" / "tv_discrepancy_speed.json").write_text(json.dumps(out, indent=1))
    dip_rows = []
    for name, fn in (("before", old_dip.fit_dip), ("after", fit_dip)) * 2:
        load = _load()
        k = min(2, len(files) - 1)
        res = fn(
            op,
            y[k : k + 1],
            n_iter=args.dip_steps,
            stopping="none",
            x_true=x[k : k + 1],
            generator=torch.Generator().manual_seed(0),
        )
        tr = res.traces[0]
        dip_rows.append(
            {
                "version": name,
                "ms_per_step": round(1000 * tr.seconds / tr.n_steps, 1),
                "psnr_last": round(tr.psnr_ema[-1], 3),
                "load": load,
            }
        )

        print(json.dumps(dip_rows[-1]), flush=True)
    (REPO / "benchmarks" / "results" / "dip_speed_ab.json").write_text(
        json.dumps({"rows": dip_rows}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
