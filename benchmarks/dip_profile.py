"""Where the time of one DIP step goes at 128x128 (CT, 30 angles): torch.profiler over ~50 steps, 1 thread.

    python benchmarks/dip_profile.py --label before          # writes/updates benchmarks/results/dip_profile_128.json
    python benchmarks/dip_profile.py --label after --lam 1e-3  # DIP-TV

The fit is ``medrecon.priors.dip.fit_dip`` with its defaults (``stopping="none"`` so every step is a full
step), on the first CT training slice (``data/splits``) at 128 px, y = A x + noise (sigma = 0.02 mean |Ax|).
Each profiler event is charged to the first category found walking from the outermost event inwards:
the network's forward (wrapped), the CT operator (``_ApplyA`` forward and its backward, i.e. A and A^T),
the backward of each layer type (autograd nodes), Adam, the input perturbation, and "loss, EMA and
stopping bookkeeping" for the remaining top-level ops. The forward is split by layer type the same way.
Self CPU time is summed per category and divided by the number of profiled steps. Wall ms per step
is measured separately without the profiler (its overhead inflates small ops). The load average is
recorded. Results go into ``benchmarks/results/dip_profile_128.json`` under ``--label`` and a Markdown
table into ``dip_profile_128.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from medrecon.experiment import simulate
from medrecon.operators.ct import ParallelBeamCT
from medrecon.priors import dip as dip_module
from medrecon.runtime import configure_threads

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
    if top == "dip::network":
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
    """The network with its forward inside a profiler range."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.in_channels = net.in_channels

    def forward(self, z):
        with record_function("dip::network"):
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


def profile_steps(module, op, y, steps: int, warmup: int, lam: float, options: dict) -> dict:
    net = _Timed(_network(module, op, options))
    sched = schedule(wait=0, warmup=warmup, active=steps, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=sched) as prof:
        module.fit_dip(
            op,
            y,
            n_iter=warmup + steps,
            lam=lam,
            stopping="none",
            network=net,
            callback=lambda k, x, info: prof.step(),
            **options,
        )
    totals: dict[str, float] = {}
    events = prof.events()
    for ev in events:
        chain, e = [], ev
        while e is not None:
            chain.append(e.name)
            e = e.cpu_parent
        if chain[-1].startswith("ProfilerStep"):
            chain = chain[:-1]
        if not chain:
            continue
        cat = _classify(chain[::-1])
        totals[cat] = totals.get(cat, 0.0) + ev.self_cpu_time_total / 1000.0
    per_step = {k: v / steps for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}
    return per_step


def wall_ms_per_step(module, op, y, steps: int, lam: float, options: dict) -> float:
    res = module.fit_dip(op, y, n_iter=steps + 5, lam=lam, stopping="none", **options)
    return 1000.0 * res.traces[0].seconds / res.traces[0].n_steps


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _markdown(data: dict) -> str:
    lines = ["# Where a DIP step goes at 128x128 (CT, 30 angles, 1 torch thread)", ""]
    for label, run in data.items():
        lines += [
            f"## {label}: {run['method']} ({run['settings']}; {run.get('code', '')})",
            "",
            f"Wall {run['wall_ms_per_step']:.1f} ms per step without the profiler (load {run['load']}); "
            f"profiled self CPU time {run['profiled_ms_per_step']:.1f} ms per step over {run['steps']} steps.",
            "",
            "| category | ms per step | share |",
            "|---|---|---|",
        ]
        total = run["profiled_ms_per_step"]
        for cat, ms in run["categories"].items():
            lines.append(f"| {cat} | {ms:.2f} | {100 * ms / total:.1f} % |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="key in the results file, e.g. before / after")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--lam", type=float, default=0.0, help="DIP-TV weight (0: plain DIP)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--rev", default=None, help="git revision of medrecon/priors/dip.py (default: working tree)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "dip_profile_128.json")
    args = parser.parse_args(argv)
    print(f"dip_profile: using {configure_threads(args.threads)}", flush=True)
    op, _, y = _problem(args.size)
    options: dict = {}
    module = dip_module
    if args.rev is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from dip_psnr_ab import old_dip_module

        module = old_dip_module(args.rev)
    load = _load()
    t0 = time.perf_counter()
    wall = wall_ms_per_step(module, op, y, args.steps, args.lam, options)
    cats = profile_steps(module, op, y, args.steps, args.warmup, args.lam, options)
    run = {
        "method": "dip-tv" if args.lam > 0 else "dip",
        "settings": f"defaults, lam={args.lam}, size {args.size}, stopping=none",
        "code": f"medrecon/priors/dip.py at {args.rev}" if args.rev else "working tree",
        "steps": args.steps,
        "wall_ms_per_step": round(wall, 2),
        "profiled_ms_per_step": round(sum(cats.values()), 2),
        "categories": {k: round(v, 3) for k, v in cats.items()},
        "load": load,
        "load_after": _load(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data[args.label] = run
    args.out.write_text(json.dumps(data, indent=1))
    args.out.with_suffix(".md").write_text(_markdown(data))
    print(json.dumps(run, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
