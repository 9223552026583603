"""Where the time of one DIP step goes at 128x128 (CT, 30 angles): torch.profiler, before and after, 1 thread.

    python benchmarks/dip_profile.py                    # DIP: medrecon/priors/dip.py at --before vs the working tree
    python benchmarks/dip_profile.py --lam 1e-3         # DIP-TV

The fit is ``fit_dip`` with its defaults (``stopping="none"`` so that every step is a full step), on the
first CT training slice (``data/splits``) at 128 px, y = A x + noise (sigma = 0.02 mean |Ax|). The "before"
code (``git show REV:medrecon/priors/dip.py``) and the working tree run in one process: first step by step in
turn (``benchmarks/speed_ab.py``'s baton) without the profiler, for the wall ms per step and their ratio;
then under the profiler in alternating chunks of ``--chunk`` steps (each a short fit in its own profiler
session, as the profiler does not see other threads), so that both see the same load (the machine is
shared). Each profiler event is charged to the first category found walking from the outermost event
inwards: the network's forward (wrapped, split by layer type; time in the network's range outside any op
is Python overhead), the CT operator (``_ApplyA`` forward and its backward, i.e. A and A^T), the backward
of each layer type (autograd nodes), Adam, the input perturbation, and "loss, EMA and stopping
bookkeeping" for the remaining top-level ops (this includes each chunk's setup: network initialisation
and noise input, amortised over the chunk). Self CPU time is summed per category and version and divided
by the number of profiled steps. Results: ``benchmarks/results/dip_profile_128.json`` (one entry per
method) and a Markdown table in ``dip_profile_128.md``; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from medrecon.experiment import simulate
from medrecon.operators.ct import ParallelBeamCT
from medrecon.priors import dip as dip_module
from medrecon.runtime import configure_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dip_psnr_ab import old_dip_module  # noqa: E402
from speed_ab import _interleaved  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# (category, substrings of an event name, any of which matches); the first match wins (upsampling
# before conv: "upsample_bilinear2d" contains "linear")
_LAYERS = [
    ("bilinear upsampling", ("upsample", "Upsample")),
    ("conv", ("conv", "Conv", "linear", "addmm", "Addmm", "MmBackward")),
    ("batch norm", ("batch_norm", "BatchNorm")),
    ("leaky relu", ("leaky_relu", "LeakyRelu")),
    ("reflection pad", ("reflection_pad", "ReflectionPad", "pad")),
    ("concat", ("aten::cat", "CatBackward", "CatChannels", "SliceBackward", "narrow")),
    ("sigmoid", ("sigmoid", "Sigmoid")),
]


def _classify(chain: list[str]) -> str:
    """Category of an event from its ancestors' names (outermost first, the event itself last)."""
    top = chain[0]
    if top.startswith("Optimizer.step") or top.startswith("Optimizer.zero_grad"):
        return "Adam (step and zero_grad)"
    if any("_ApplyA" in n for n in chain):
        return "CT operator (A forward, A^T in backward)"
    if top.startswith("dip::network"):
        if len(chain) == 1:  # time inside the network's range but in no op: Python (module calls)
            return "forward: Python overhead (module calls)"
        for name in chain[1:]:
            for cat, keys in _LAYERS:
                if any(k in name for k in keys):
                    return f"forward: {cat}"
        return "forward: other"
    if top.startswith("autograd::engine") or "Backward" in top:
        for name in chain:
            for cat, keys in _LAYERS:
                if any(k in name for k in keys):
                    return f"backward: {cat}"
        return "backward: other (loss, reshapes, accumulate grad)"
    if any(k in top for k in ("randn", "normal_")):
        return "input perturbation (randn)"
    return "loss, EMA and stopping bookkeeping (other top-level ops)"


class _Timed(nn.Module):
    """The network with its forward inside a profiler range named after its version."""

    def __init__(self, net: nn.Module, label: str) -> None:
        super().__init__()
        self.net = net
        self.in_channels = net.in_channels
        self.range = f"dip::network:{label}"

    def forward(self, z):
        with record_function(self.range):
            return self.net(z)


def _problem(size: int):
    from medrecon.data import real

    x = real.load_corpus("ct", "train", size=size, slices=1).images
    op = ParallelBeamCT(size, 30)
    op.norm()
    y, _ = simulate(op, x, 0.02, torch.Generator().manual_seed(0))
    return op, x, y


def _network(module, op, options: dict) -> nn.Module:
    spatial = tuple(op.in_shape[-2:])
    return module.Hourglass(
        dip_module.PAPER_INPUT_DEPTH,
        1,
        depth=min(dip_module.PAPER_DEPTH, dip_module.max_depth(spatial)),
        channels=options.get("channels", dip_module.DEFAULT_CHANNELS),
        generator=torch.Generator().manual_seed(0),
    )


def _fits(versions: dict, op, y, n_iter: int, lam: float, profiled: bool) -> list:
    def make(label, module):
        def fit(callback):
            net = _Timed(_network(module, op, {}), label) if profiled else None
            module.fit_dip(op, y, n_iter=n_iter, lam=lam, stopping="none", network=net, callback=callback)

        return fit

    return [make(label, module) for label, module in versions.items()]


def profile_interleaved(versions: dict, op, y, steps: int, skip: int, lam: float, chunk: int) -> dict:
    """Wall ms per step (no profiler) and profiled ms per step by category, per version.

    The wall times come from the two fits run step by step in turn. The profiler does not see ops on
    other threads, so the profiled runs alternate in chunks instead: ``chunk`` steps of "before", then of
    "after", each a short fit of its own in its own profiler session, until ``steps`` steps each.
    """
    wall = _interleaved(_fits(versions, op, y, steps + skip, lam, profiled=False))
    totals: dict[str, dict[str, float]] = {label: {} for label in versions}
    for _ in range(max(1, steps // chunk)):
        for label, fit in zip(versions, _fits(versions, op, y, chunk, lam, profiled=True), strict=True):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fit(lambda *_: None)
            for ev in prof.events():
                chain, e = [], ev
                while e is not None:
                    chain.append(e.name)
                    e = e.cpu_parent
                cat = _classify(chain[::-1])
                totals[label][cat] = totals[label].get(cat, 0.0) + ev.self_cpu_time_total / 1000.0
    profiled_steps = max(1, steps // chunk) * chunk
    out = {}
    for (label, cats), times in zip(totals.items(), wall, strict=True):
        per_step = {k: round(v / profiled_steps, 3) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}
        out[label] = {
            "wall_ms_per_step": round(float(np.median(times[skip:])), 2),
            "profiled_ms_per_step": round(sum(per_step.values()), 2),
            "categories": per_step,
        }
    return out


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _markdown(data: dict) -> str:
    lines = ["# Where a DIP step goes at 128x128 (CT, 30 angles, 1 torch thread)", ""]
    for method, run in data.items():
        labels = list(run["versions"])
        lines += [
            f"## {method} ({run['settings']})",
            "",
            f"Before and after ran step by step in turn in one process (load {run['load']} -> "
            f"{run['load_after']}, 4 agents share 2 cores). Wall ms per step without the profiler (median): "
            + ", ".join(f"{label} {run['versions'][label]['wall_ms_per_step']:.1f}" for label in labels)
            + f"; ratio {run['wall_ratio']:.2f}. Profiled self CPU ms per step over {run['steps']} steps:",
            "",
            "| category | " + " | ".join(f"{label} ms | share" for label in labels) + " |",
            "|---|" + "---|---|" * len(labels),
        ]
        cats = list(dict.fromkeys(c for label in labels for c in run["versions"][label]["categories"]))
        for cat in cats:
            cells = []
            for label in labels:
                v = run["versions"][label]
                ms = v["categories"].get(cat, 0.0)
                cells.append(f"{ms:.1f} | {100 * ms / v['profiled_ms_per_step']:.1f} %")
            lines.append(f"| {cat} | " + " | ".join(cells) + " |")
        lines.append(
            "| total | "
            + " | ".join(f"{run['versions'][label]['profiled_ms_per_step']:.1f} | 100 %" for label in labels)
            + " |"
        )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="1d2cc9b", help="git revision of medrecon/priors/dip.py before")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the wall time")
    parser.add_argument("--chunk", type=int, default=25, help="steps per profiled fit (alternating)")
    parser.add_argument("--lam", type=float, default=0.0, help="DIP-TV weight (0: plain DIP)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "dip_profile_128.json")
    args = parser.parse_args(argv)
    print(f"dip_profile: using {configure_threads(args.threads)}", flush=True)
    op, _, y = _problem(args.size)
    versions = {f"before ({args.before})": old_dip_module(args.before), "after (working tree)": dip_module}
    load = _load()
    t0 = time.perf_counter()
    result = profile_interleaved(versions, op, y, args.steps, args.skip, args.lam, args.chunk)
    labels = list(result)
    method = "dip-tv" if args.lam > 0 else "dip"
    run = {
        "settings": f"defaults, lam={args.lam}, size {args.size}, stopping=none",
        "steps": args.steps,
        "versions": result,
        "wall_ratio": round(result[labels[0]]["wall_ms_per_step"] / result[labels[1]]["wall_ms_per_step"], 3),
        "load": load,
        "load_after": _load(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data[method] = run
    args.out.write_text(json.dumps(data, indent=1))
    args.out.with_suffix(".md").write_text(_markdown(data))
    print(json.dumps(run, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
