"""The deepinv 0.5 side of benchmarks/methods.py; runs inside .venv-deepinv (benchmarks/setup_deepinv_env.sh).

    .venv-deepinv/bin/python benchmarks/deepinv_peer.py IN.npz OUT.json

IN.npz (written by methods.py): ``images (N, 1, S, S)`` in [0, 1], ``n_angles``, ``noise_level``, ``seed``,
``tv_lam (N,)`` (medrecon's discrepancy weights, relative to ||A||^2), ``target_tv (N,)`` and ``target_dip (N,)``
(medrecon's PSNRs), ``dip_steps``, ``dip_images`` (DIP runs on the first ones; optional, default all),
``threads``. The problem is deepinv's own: its ``Tomography`` operator
(pure torch, normalised to ||A|| = 1) with the same angles, images and noise model (sigma = noise_level *
mean |A x|). TV: proximal gradient on 1/2||Ax - y||^2 + lam TV(x) with deepinv's ``TVPrior`` prox (deepinv's
standard TV recipe; its CP iterator needs a split operator this script does not build), step 1/||A||^2, the
same relative lam as medrecon chose; the clock runs until the PSNR first reaches medrecon's (or to the cap).
DIP: ``deepinv.models.DeepImagePrior`` with its ``ConvDecoder`` for ``dip_steps`` Adam steps (lr 0.01).
Only deepinv, torch and numpy are imported: medrecon's torch is another build.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float((x.clamp(0, 1) - ref).pow(2).mean())
    return 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str]) -> int:
    import deepinv as dinv

    data = np.load(argv[0])
    torch.set_num_threads(int(data["threads"]))
    images = torch.from_numpy(data["images"]).float()
    size = images.shape[-1]
    physics = dinv.physics.Tomography(angles=int(data["n_angles"]), img_width=size, circle=False)
    norm2 = float(
        physics.compute_norm(
            torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)), verbose=False
        )
    )
    gen = torch.Generator().manual_seed(int(data["seed"]))
    out: dict = {
        "deepinv": dinv.__version__,
        "torch": torch.__version__,
        "norm_squared": norm2,
        "tv": [],
        "dip": [],
    }
    prior = dinv.optim.TVPrior(n_it_max=20)
    dip_images = int(data["dip_images"]) if "dip_images" in data.files else images.shape[0]
    for i in range(images.shape[0]):
        x_true = images[i : i + 1]
        clean = physics.A(x_true)
        y = clean + float(data["noise_level"]) * float(clean.abs().mean()) * torch.randn(
            clean.shape, generator=gen
        )
        # TV by proximal gradient with deepinv's TVPrior prox
        lam, step, cap = float(data["tv_lam"][i]) * norm2, 1.0 / norm2, 1000
        x = torch.zeros_like(x_true)
        load = _load()
        t0, reached, best = time.perf_counter(), None, -np.inf
        with torch.no_grad():
            for k in range(cap):
                x = prior.prox(x - step * physics.A_adjoint(physics.A(x) - y), gamma=lam * step)
                p = _psnr(x, x_true)
                best = max(best, p)
                if p >= float(data["target_tv"][i]):
                    reached = k + 1
                    break
        out["tv"].append(
            {
                "seconds": time.perf_counter() - t0,
                "iterations": reached or cap,
                "reached": reached is not None,
                "best_psnr": best,
                "load_before": load,
                "load_after": _load(),
            }
        )
        # DIP with deepinv's ConvDecoder
        steps = int(data["dip_steps"])
        if steps > 0 and i < dip_images:
            torch.manual_seed(int(data["seed"]))  # deepinv's DIP draws from the global RNG
            net = dinv.models.ConvDecoder(img_size=(1, size, size), in_size=(4, 4), layers=5, channels=64)
            dip = dinv.models.DeepImagePrior(net, img_size=(64, 4, 4), iterations=steps, learning_rate=0.01)
            load = _load()
            t0 = time.perf_counter()
            x = dip(y, physics)
            out["dip"].append(
                {
                    "seconds": time.perf_counter() - t0,
                    "steps": steps,
                    "psnr": _psnr(x.detach(), x_true),
                    "load_before": load,
                    "load_after": _load(),
                }
            )
    with open(argv[1], "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
