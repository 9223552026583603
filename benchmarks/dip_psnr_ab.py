"""Full-length DIP / DIP-TV fits before and after a change: PSNR, steps, where the stopping rule fired.

    python benchmarks/dip_psnr_ab.py --version before --rev 1d2cc9b   # the DIP code of a git revision
    python benchmarks/dip_psnr_ab.py --version after                   # the working tree

Images: ``--slices`` evenly spaced slices of the CT ``--split`` (default train, ``data/splits``) at ``--size``
px, parallel beam with 30 angles, y = A x + n with sigma = 0.02 mean |Ax| (``benchmarks/methods.py``'s
problem). Each fit is ``fit_dip`` with its defaults (DIP: lam=0; DIP-TV: lam=1e-3, the ``dip-tv``
method's default) and ``x_true`` so that the trace has the PSNR of every step: the PSNR of the EMA at
every 100th step is kept, which shows what a shorter run would have returned. One torch thread by
default; the load average is recorded with each row. Rows are appended to ``--out`` as they finish.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from medrecon.experiment import simulate
from medrecon.operators.ct import ParallelBeamCT
from medrecon.runtime import configure_threads

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LAMS = {"dip": 0.0, "dip-tv": 1e-3}


def old_dip_module(rev: str):
    """``medrecon/priors/dip.py`` of git revision ``rev``, loaded as a fresh module."""
    source = subprocess.run(
        ["git", "show", f"{rev}:medrecon/priors/dip.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    tmp = Path(tempfile.mkdtemp())
    file = tmp / f"dip_{rev}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(f"dip_{rev}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="label of the rows (before / after / ...)")
    parser.add_argument(
        "--rev", default=None, help="git revision of medrecon/priors/dip.py (default: working tree)"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["dip", "dip-tv"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", default=None, help="only these slice ids, e.g. head:102")
    parser.add_argument("--option", action="append", default=[], help="extra fit_dip option key=value (JSON)")
    parser.add_argument("--out", type=Path, default=RESULTS / "dip_psnr_ab_128.json")
    args = parser.parse_args(argv)
    print(f"dip_psnr_ab: using {configure_threads(args.threads)}", flush=True)
    if args.rev is not None:
        module = old_dip_module(args.rev)
    else:
        from medrecon.priors import dip as module
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    from medrecon.data import real

    corpus = real.load_corpus("ct", args.split, size=args.size, slices=args.slices)
    op = ParallelBeamCT(args.size, 30)
    op.norm()
    y_all, _ = simulate(op, corpus.images, 0.02, torch.Generator().manual_seed(0))
    for method in args.methods:
        for i, image in enumerate(corpus.ids):
            if args.only is not None and image not in args.only:
                continue
            load = _load()
            res = module.fit_dip(
                op, y_all[i : i + 1], lam=LAMS[method], x_true=corpus.images[i : i + 1], **options
            )
            tr = res.traces[0]
            row = {
                "version": args.version,
                "rev": args.rev or "working tree",
                "options": options,
                "method": method,
                "image": f"{args.split}:{image}",
                "size": args.size,
                "psnr": round(tr.psnr_returned, 3),
                "n_steps": tr.n_steps,
                "returned_step": tr.returned_step,
                "stop_reason": tr.stop_reason,
                "best_step_psnr": [tr.best_psnr[0], round(tr.best_psnr[1], 3)],
                "psnr_ema_every_100": {k: round(tr.psnr_ema[k], 3) for k in range(99, tr.n_steps, 100)},
                "seconds": round(tr.seconds, 1),
                "threads": torch.get_num_threads(),
                "load_before": load,
                "load_after": _load(),
            }
            rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
            rows.append(row)
            args.out.write_text(json.dumps({"rows": rows}, indent=1))
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
