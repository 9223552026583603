"""Multi-coil MRI forward + adjoint: medrecon's MultiCoilMRI against raw torch.fft and fastmri.fft2c.

Sizes: fastMRI knee (15 coils, 640x368) and brain (16 coils, 640x320), batch 1 and 8, complex64,
a random 4x column mask. Each timing is the median of ``--repeats`` runs of A^H(A x) after a
warm-up. References in the same run:

* ``raw``: a minimal hand-written masked fft2c/ifft2c with coil maps (torch.fft.ifftshift ->
  fft2(norm="ortho") -> fftshift, mask, then the inverse and the coil combination);
* ``fastmri``: the same with ``fastmri.fft2c`` / ``fastmri.ifft2c`` (real-view tensors).

``medrecon`` is timed as shipped (input checks incl. the NaN/inf check on) and with
``check_finite = False``. Writes benchmarks/results/mri_operators.json and .md.

    python benchmarks/mri_operators.py [--threads 1] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from medrecon.operators.mri import MultiCoilMRI

SIZES = {"knee": (15, 640, 368), "brain": (16, 640, 320)}
DIMS = (-2, -1)


def _raw(maps, mask):
    def apply(x):  # x: (B, 1, H, W)
        k = (
            torch.fft.fftshift(
                torch.fft.fft2(torch.fft.ifftshift(x[:, :, None] * maps, dim=DIMS), dim=DIMS, norm="ortho"),
                dim=DIMS,
            )
            * mask
        )
        z = torch.fft.fftshift(
            torch.fft.ifft2(torch.fft.ifftshift(k * mask, dim=DIMS), dim=DIMS, norm="ortho"), dim=DIMS
        )
        return (maps.conj() * z).sum(2)

    return apply


def _fastmri(maps, mask):
    import fastmri

    def apply(x):
        k = torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x[:, :, None] * maps))) * mask
        z = torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(k * mask)))
        return (maps.conj() * z).sum(2)

    return apply


def _medrecon(maps, mask, check_finite):
    op = MultiCoilMRI(mask, maps)
    op.check_finite = check_finite
    return lambda x: op.adjoint(op(x))


def _once(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="batch 1 only")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "mri_operators"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for name, (coils, h, w) in SIZES.items():
            maps = torch.complex(torch.randn(coils, h, w, generator=g), torch.randn(coils, h, w, generator=g))
            mask = (torch.rand(w, generator=g) < 0.25).float()
            for batch in [1] if args.quick else [1, 8]:
                x = torch.complex(
                    torch.randn(batch, 1, h, w, generator=g), torch.randn(batch, 1, h, w, generator=g)
                )
                impls = {
                    "raw": _raw(maps, mask),
                    "fastmri": _fastmri(maps, mask),
                    "medrecon": _medrecon(maps, mask, True),
                    "medrecon_nocheck": _medrecon(maps, mask, False),
                }
                ref = impls["raw"](x)
                for impl in ("medrecon", "fastmri"):
                    err = float((impls[impl](x) - ref).norm() / ref.norm())
                    assert err < 1e-5, f"{impl} disagrees with raw: {err}"
                # the check above was the warm-up (FFT plans, fused factors). Interleave the
                # implementations (round-robin) so that load changes on a shared CPU hit all alike.
                med = {k: [] for k in impls}
                for _ in range(args.repeats):
                    for k, fn in impls.items():
                        med[k].append(_once(fn, x))
                res = {k: statistics.median(v) * 1e3 for k, v in med.items()}
                row = {
                    "size": name,
                    "coils": coils,
                    "H": h,
                    "W": w,
                    "batch": batch,
                    **{f"{k}_ms": round(v, 2) for k, v in res.items()},
                    **{f"{k}_ratio": round(v / res["raw"], 3) for k, v in res.items() if k != "raw"},
                }
                rows.append(row)
                print(row, flush=True)
    load = round(os.getloadavg()[0], 2)
    meta = {
        "load_average_1min_at_end": load,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "what": "median ms of A^H(A x), complex64",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"MRI multi-coil A^H A x, complex64, median of {args.repeats}, {args.threads} thread(s), torch {torch.__version__}, "
        f"1-min load average at the end {load} (the CPU is shared: ratios matter, absolute ms vary)",
        "",
        "| size | coils | HxW | batch | raw torch.fft ms | fastmri ms | medrecon ms | medrecon (no NaN check) ms "
        "| medrecon / raw | no-check / raw | fastmri / raw |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['coils']} | {r['H']}x{r['W']} | {r['batch']} | {r['raw_ms']} | {r['fastmri_ms']} "
            f"| {r['medrecon_ms']} | {r['medrecon_nocheck_ms']} | {r['medrecon_ratio']} "
            f"| {r['medrecon_nocheck_ratio']} | {r['fastmri_ratio']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
