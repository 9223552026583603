"""Would batching several images or bf16 make a DIP step cheaper on this CPU? Per-image ms of one Adam step.

    python benchmarks/dip_batch_bf16.py [--threads 1] [--rounds 6]

One training step of the default 128 px network (``Hourglass`` with ``fit_dip``'s defaults, channels-last,
fused Adam): forward, a squared-error loss, backward, Adam. Configurations, timed round-robin (each round
runs every configuration for ``--steps`` steps, so all see the same load; the median over rounds is kept):

* ``fp32 batch B`` for B = 1, 2, 4: one network on a batch of B noise inputs, the cost per image. This is a
  lower bound for fitting B images with B networks as one batched (grouped-convolution) network: the
  arithmetic per image is the same, and a dense batch is what the convolution kernels handle best.
* ``bf16 autocast batch 1``: ``torch.autocast("cpu", torch.bfloat16)`` around the forward pass. Whether the
  CPU has native bf16 (``avx512_bf16`` / ``amx_bf16`` in /proc/cpuinfo) is recorded.

Writes ``benchmarks/results/dip_batch_bf16.json`` with the load average.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medrecon.priors import dip
from medrecon.runtime import configure_threads

REPO = Path(__file__).resolve().parents[1]
CL = torch.channels_last


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return sorted(f for f in flags if "bf16" in f or f.startswith("amx") or f.startswith("avx512"))


def _config(batch: int, bf16: bool, size: int):
    net = dip.Hourglass(32, 1, channels=dip.DEFAULT_CHANNELS, generator=torch.Generator().manual_seed(0))
    net = net.to(memory_format=CL)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, fused=True)
    gen = torch.Generator().manual_seed(1)
    z = (torch.rand(batch, 32, size, size, generator=gen) * 0.1).to(memory_format=CL)
    target = torch.rand(batch, 1, size, size, generator=gen)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            x = net(z)
        loss = 0.5 * (x.float() - target).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dip_batch_bf16.json")
    args = parser.parse_args(argv)
    print(f"dip_batch_bf16: using {configure_threads(args.threads)}", flush=True)
    configs = {
        "fp32 batch 1": (1, False),
        "fp32 batch 2": (2, False),
        "fp32 batch 4": (4, False),
        "bf16 autocast batch 1": (1, True),
    }
    steps = {name: _config(b, bf16, args.size) for name, (b, bf16) in configs.items()}
    for fn in steps.values():  # warm up
        fn()
    per_image: dict[str, list[float]] = {name: [] for name in configs}
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    for _ in range(args.rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            per_image[name].append(1000 * (time.perf_counter() - t0) / args.steps / configs[name][0])
    base = float(np.median(per_image["fp32 batch 1"]))
    rows = {
        name: {
            "ms_per_image_step_median": round(float(np.median(v)), 1),
            "relative_to_fp32_batch_1": round(float(np.median(v)) / base, 3),
        }
        for name, v in per_image.items()
    }
    out = {
        "size": args.size,
        "threads": torch.get_num_threads(),
        "cpu_flags_bf16_amx_avx512": _cpu_flags(),
        "rows": rows,
        "load_before": load,
        "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "torch": torch.__version__,
    }
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
