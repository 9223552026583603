"""Before/after ratios of TV-discrepancy and DIP, back to back in one process on the same images.

    python benchmarks/speed_ab.py [--before e87c432] [--dip-steps 150]
    python benchmarks/speed_ab.py --parts dip --dip-before 1d2cc9b --dip-steps 100 --threads 2

"Before" is the solver and DIP code of a git revision (default e87c432, the last one before the speed work;
``--dip-before`` for the DIP code), loaded from ``git show`` into fresh modules; "after" is the working tree.
Both TV versions use the same Morozov target (``op.n_measurements()``). Images: the 6 real 128x128 CT slices
of ``data/real_sample``, 30 angles, noise 0.02. One torch thread (``--threads``). DIP: ``--dip-steps`` steps
without early stopping (DIP, and DIP-TV with ``lam=1e-3``); the before and after fits alternate step by step
(two threads handing over a baton, so only one computes at a time), so that step k of both sees the same
load; the ratio of the summed step times and the median of the per-step ratios are reported. Writes
``benchmarks/results/tv_discrepancy_speed.json`` and ``benchmarks/results/dip_speed_ab.json``; the load
average is recorded with every row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
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
    parser.add_argument("--parts", nargs="+", default=["tv", "dip"], choices=["tv", "dip"])
    parser.add_argument("--dip-before", default=None, help="revision of the DIP code (default: --before)")
    parser.add_argument("--dip-skip", type=int, default=5, help="warm-up steps left out of the DIP timing")
    parser.add_argument("--dip-out", default="dip_speed_ab.json")
    parser.add_argument("--dip-methods", nargs="+", default=["dip"], choices=["dip", "dip-tv"])
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
        old_dip = _old_module(args.dip_before or args.before, "medrecon/priors/dip.py", "old_dip", tmp)
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

    if "tv" in args.parts:
        _tv_part(files, x, y, sigma, op, tv_before, tv_after, p)
    if "dip" in args.parts:
        _dip_part(args, x, y, op, old_dip)
    return 0


def _tv_part(files, x, y, sigma, op, tv_before, tv_after, p) -> None:
    scale = op.norm_squared()
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


def _interleaved(fits: list) -> list[list[float]]:
    """Run the fits ``fits[i](callback)`` one step each in turn (threads handing over a baton).

    Only one fit computes at any time, so step k of "before" and step k of "after" run back to back and
    see the same load; returns each fit's step times in ms (from resuming to its callback).
    """
    turns = [threading.Semaphore(0) for _ in fits]
    times: list[list[float]] = [[] for _ in fits]
    errors: list[BaseException] = []

    def runner(i: int) -> None:
        turns[i].acquire()
        start = [time.perf_counter()]

        def callback(*_):
            times[i].append(1000.0 * (time.perf_counter() - start[0]))
            turns[(i + 1) % len(fits)].release()
            turns[i].acquire()
            start[0] = time.perf_counter()

        try:
            fits[i](callback)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
        finally:
            turns[(i + 1) % len(fits)].release()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(fits))]
    for t in threads:
        t.start()
    turns[0].release()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return times


def _dip_part(args, x, y, op, old_dip) -> None:
    k = min(2, len(x) - 1)
    rows, results = [], {}
    for method in args.dip_methods:
        lam = 1e-3 if method == "dip-tv" else 0.0
        versions = {"before": old_dip.fit_dip, "after": fit_dip}
        out: dict = {}

        def make(name, fn, lam=lam, out=out):
            def fit(callback):
                out[name] = fn(
                    op,
                    y[k : k + 1],
                    n_iter=args.dip_steps,
                    lam=lam,
                    stopping="none",
                    generator=torch.Generator().manual_seed(0),
                    callback=callback,
                )

            return fit

        load = _load()
        times = _interleaved([make(name, fn) for name, fn in versions.items()])
        before, after = (np.array(t[args.dip_skip :]) for t in times)  # the first steps warm up
        row = {
            "method": method,
            "steps_timed": len(before),
            "before_ms_per_step": {
                "mean": round(before.mean(), 1),
                "median": round(float(np.median(before)), 1),
            },
            "after_ms_per_step": {
                "mean": round(after.mean(), 1),
                "median": round(float(np.median(after)), 1),
            },
            "ratio_of_sums": round(before.sum() / after.sum(), 3),
            "median_of_step_ratios": round(float(np.median(before / after)), 3),
            "psnr_last": {
                name: round(psnr(x[k, 0].numpy(), res.x[0, 0].numpy(), data_range=1.0), 3)
                for name, res in out.items()
            },
            "threads": torch.get_num_threads(),
            "load_before": load,
            "load_after": _load(),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    results = {
        "before": args.dip_before or args.before,
        "steps": args.dip_steps,
        "image": "data/real_sample slice 3 of 6, 128 px, 30 angles, stopping='none'",
        "how": "before and after fits alternate step by step in one process (benchmarks/speed_ab.py _interleaved)",
        "rows": rows,
    }
    path = REPO / "benchmarks" / "results" / args.dip_out
    data = json.loads(path.read_text()) if path.exists() else {}
    data[f"{torch.get_num_threads()} thread(s)"] = results
    path.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    sys.exit(main())
