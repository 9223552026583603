"""Real-anatomy benchmark: sparse-angle CT (and undersampled MRI) on held-out patients, learned priors vs TV.

    OMP_NUM_THREADS=1 python benchmarks/real_anatomy.py calibrate   # weights on TRAIN-split slices only
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy.py evaluate --oracle [--only ct128_a30]  # validation
    python benchmarks/real_anatomy.py report      # merge the settings: JSON, table, figure
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy.py diagnose  # 10 angles: PatchNR from FBP vs from TV (train slices)
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy.py diagnose-mri  # MRI: start and weights (train slices)
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy.py noise-sweep --only mri128_8x mri128_4x \
        --update-calibration   # PatchNR weight per TRAIN slice -> lam="noise" fit, the patchnr rows' weight
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy.py calibrate --quick   # smoke run (2 slices, 30 steps)

Data (``medrecon.data.real``, fetched by ``make data``): CT validation = ``n_val`` slices spaced evenly
over the held-out patient lung1 (the split's list); hyperparameters come from ``calibrate``, which sees
only slices of the TRAIN split (lung2 + head; MRI: colin27) and writes
``benchmarks/results/real_anatomy_calibration.json``. Nothing is tuned on validation slices; the
``oracle`` rows (best weight of a small sweep against the validation ground truth) only measure how
far the automatic weights are from the best one.

Settings: parallel-beam CT at 128x128 with 10 and 30 angles over [0, pi) and 1 % Gaussian noise
(``sigma = 0.01 mean |A x|`` per image, ``medrecon.experiment.build.simulate``, the noise of every
image seeded by its id); one 256x256 CT setting (60 angles) shows the same PatchNR weights at
another size. MRI: single-coil Cartesian, 4x and 8x equispaced masks with 8 % / 4 % centre, 1 %
complex Gaussian noise. ``--extra``: the same masks with 8 simulated coils (``mri128mc_*``,
``coil_maps``), and CT at 30 angles with LoDoPaB's Poisson/log noise (4096 photons per bin, image side
0.26 m; ``ct128_a30_poisson``, sigma for the discrepancy principle estimated from the measurements by
:func:`poisson_sigma`); these use the calibration of the nearest setting (``CALIBRATION_OF``).

Methods: FBP / zero-filled (``direct``), TV with the discrepancy principle, PatchNR with the start
(``init``: FBP/zero-filled or the TV-discrepancy image) and weight chosen on training slices
(``patchnr``), and with the same start and the noise rule (``patchnr-noise``, ``lam="noise"``, its
exponent and constant fitted on training slices: ``medrecon.methods.patchnr.NOISE_RULE``; named in
``--methods`` only: ``patchnr-noise-map``, the rule with the MAP exponent ``c sigma^2 / ||A||^2``).
Metrics per slice: PSNR and SSIM with data range 1 (images are in [0, 1]); mean +/- std over the
slices; seconds per image (wall clock of the batch / batch size, one thread).

``evaluate --methods a b`` reruns those rows and keeps the file's other rows (and its oracle sweep,
with the gaps of the new rows) when the slices are the same.

``evaluate`` writes ``benchmarks/results/real_anatomy_<setting>.json`` (and ``.npz``, the figure's
slice) per setting, so settings can run in parallel processes; ``report`` merges them into
``real_anatomy.json``, ``real_anatomy.md`` (the table) and ``real_anatomy.png`` (one slice per
setting: ground truth, methods, error maps with a colour bar).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrecon.data.lodopab import MU_MAX, PHOTONS_PER_BIN, poisson_log_noise
from medrecon.data.real import load_corpus
from medrecon.experiment.build import simulate
from medrecon.methods import reconstruct
from medrecon.metrics import psnr, ssim
from medrecon.operators import MultiCoilMRI, ParallelBeamCT, SingleCoilMRI, make_mask
from medrecon.operators.coils import coil_maps
from medrecon.utils_io import atomic_write_text, git_revision

RESULTS = Path(__file__).resolve().parent / "results"
CALIBRATION = RESULTS / "real_anatomy_calibration.json"
NOISE_LEVEL = 0.01

#: (name, modality, image size, n_angles or acceleration)
CT_SETTINGS = [("ct128_a30", "ct", 128, 30), ("ct128_a10", "ct", 128, 10)]
CT256_SETTING = ("ct256_a60", "ct", 256, 60)
MRI_SETTINGS = [("mri128_4x", "mri", 128, 4), ("mri128_8x", "mri", 128, 8)]
#: Multi-coil MRI (``"mri-mc"``: ``MULTICOIL_COILS`` simulated coils, ``medrecon.operators.coils.coil_maps``)
#: and LoDoPaB-style CT (``"ct-poisson"``: post-log Poisson counts, ``medrecon.data.lodopab``).
EXTRA_SETTINGS = [
    ("mri128mc_4x", "mri-mc", 128, 4),
    ("mri128mc_8x", "mri-mc", 128, 8),
    ("ct128_a30_poisson", "ct-poisson", 128, 30),
]
MULTICOIL_COILS = 8
#: Settings without their own calibration use that of the nearest calibrated one.
CALIBRATION_OF = {
    "mri128mc_4x": "mri128_4x",
    "mri128mc_8x": "mri128_8x",
    "ct128_a30_poisson": "ct128_a30",
    "ct256_a60": "ct128_a30",  # lam is relative: the 128 px start and weight carry over
}
ALL_SETTINGS = CT_SETTINGS + MRI_SETTINGS + EXTRA_SETTINGS

#: Relative PatchNR weights tried by ``calibrate`` (on training slices), per setting and start
#: (``init=`` of the method). MRI's noise (sigma ~ 1e-3 with ||A|| = 1) puts its weights lower than
#: CT's (sigma ~ 0.2, ||A||^2 ~ 1e3). Kept small for the CPU budget (one sweep point is 3 slices x
#: 450 Adam steps, 20-90 s on the shared machine). The tv grids were widened for ``nonneg`` so that each
#: setting's best weight lies inside its grid (``calibrate --inits tv``); the direct grids are those of
#: the runs before ``nonneg``; MRI 8x sweeps only the tv start (at 4x the zero-filled start was 3-5 dB
#: worse at every weight).
PATCHNR_GRID = (1e-7, 3e-7, 1e-6, 3e-6)
PATCHNR_GRIDS = {
    "ct128_a30": {"direct": (1e-7, 3e-7, 1e-6, 3e-6), "tv": (3e-8, 1e-7, 3e-7, 1e-6)},
    "ct128_a10": {"direct": (1e-7, 3e-7, 1e-6, 3e-6), "tv": (1e-7, 3e-7, 1e-6, 3e-6, 1e-5)},
    "mri128_4x": {"direct": (1e-8, 3e-8, 1e-7, 3e-7, 1e-6), "tv": (3e-8, 1e-7, 3e-7, 1e-6)},
    "mri128_8x": {"tv": (3e-7, 1e-6, 3e-6, 1e-5)},
}
#: ``c`` of the noise rule with the MAP exponent (``lam = c sigma^2 / ||A||^2``) before the exponent was
#: fitted (``NOISE_RULE`` in medrecon.methods.patchnr): the ``patchnr-noise-map`` rows.
NOISE_RULE_MAP_C = {"ct": 0.011, "mri": 0.22}
#: PatchNR starting images tried by ``calibrate`` (``init=`` of the method).
PATCHNR_INITS = ("direct", "tv")


def _corpus(modality: str) -> str:
    """The image corpus of a modality (``medrecon.data.real.load_corpus``): ``"ct"`` or ``"mri"``."""
    return modality.split("-")[0]


def _operator(modality: str, size: int, param: int):
    """``"ct"``/``"ct-poisson"``: parallel beam, ``param`` angles; ``"mri"``: single-coil, ``"mri-mc"``:
    ``MULTICOIL_COILS`` coils, ``param``-fold equispaced Cartesian mask."""
    if _corpus(modality) == "ct":
        return ParallelBeamCT(size, param)
    center = {4: 0.08, 8: 0.04}[param]
    mask = make_mask("equispaced", (size, size), param, center, seed=0)
    if modality == "mri-mc":
        return MultiCoilMRI(mask, coil_maps((size, size), MULTICOIL_COILS))
    return SingleCoilMRI(mask)


def poisson_sigma(y: torch.Tensor, size: int) -> torch.Tensor:
    """The std of LoDoPaB's post-log noise from the measurements alone (no ground truth): ``Var y_j ~
    exp(s y_j) / (N0 s^2)`` (``medrecon.data.lodopab.poisson_log_noise``; ``s = mu_max`` times the pixel
    side), rms over the bins, ``(B,)``. ``y`` is first averaged over 5 neighbouring detector bins: the
    noise in ``exp(s y_j)`` would bias the mean upwards (on 4 validation slices at 30 angles the estimate
    is 0.8-1.6 times the realised rms, which starved bins make erratic)."""
    s = MU_MAX * 0.26 / size  # LoDoPaB's image side 0.26 m
    smooth = F.avg_pool1d(y.double().reshape(-1, 1, y.shape[-1]), 5, 1, 2, count_include_pad=False)
    var = torch.exp(s * smooth.reshape(y.shape)).flatten(1).mean(1) / (PHOTONS_PER_BIN * s**2)
    return var.sqrt().to(y.dtype)


def _measure(
    op, x: torch.Tensor, ids: list[str], modality: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """y = A x + n per image, the noise of each image seeded by its id (order-independent): 1 % Gaussian
    (``simulate``), or for ``modality="ct-poisson"`` LoDoPaB's Poisson model (``PHOTONS_PER_BIN``
    photons, image side 0.26 m) with sigma from :func:`poisson_sigma` (no ground truth)."""
    xs = x.to(op.in_dtype) if op.in_complex else x
    ys, sig = [], []
    for i, name in enumerate(ids):
        g = torch.Generator().manual_seed(zlib.crc32(f"real_anatomy/{name}".encode()))
        if modality == "ct-poisson":
            with torch.no_grad():
                y = poisson_log_noise(op(xs[i : i + 1]), pixel_size_m=0.26 / xs.shape[-1], generator=g)
            s = poisson_sigma(y, xs.shape[-1])
        else:
            y, s = simulate(op, xs[i : i + 1], NOISE_LEVEL, g)
        ys.append(y)
        sig.append(s)
    return torch.cat(ys), torch.cat(sig)


def _real(x: torch.Tensor) -> torch.Tensor:
    return x.abs() if x.is_complex() else x


def _scores(x_true: torch.Tensor, x: torch.Tensor) -> tuple[list[float], list[float]]:
    t, p = x_true[:, 0].numpy(), _real(x)[:, 0].clamp(0, 1).numpy()
    return (
        [psnr(t[i], p[i], data_range=1.0) for i in range(len(t))],
        [ssim(t[i], p[i], data_range=1.0) for i in range(len(t))],
    )


def _patchnr_options(args, size: int = 128, **extra) -> dict:
    """PatchNR options; the patches per step grow with the image area (the same coverage at 256 px)."""
    opts = dict(
        n_iter=args.n_iter, n_patches=args.n_patches * (size // 128) ** 2, lr=args.lr, nonneg=True, **extra
    )
    if opts.get("init") == "tv":
        opts["tv_iter"] = args.tv_iter  # the start is the tv-discrepancy row's image
    return opts


def _methods(setting: str, size: int, cal: dict, args) -> list[tuple[str, str, dict]]:
    """The compared methods; PatchNR's start and weight are those chosen on training slices for this
    setting (``CALIBRATION_OF``: the nearest calibrated setting; others, e.g. 256 px, use the 128 px
    30-angle weight: lam is relative). ``patchnr-noise``: the same start, ``lam="noise"``."""
    c = cal["patchnr"].get(CALIBRATION_OF.get(setting, setting))
    lam = c["lam"] if c else cal["patchnr"]["default_lam"]
    init = c.get("init", "direct") if c else "direct"
    direct = ("direct", "fbp", {}) if setting.startswith("ct") else ("direct", "zero-filled", {})
    methods = [
        direct,
        ("tv-discrepancy", "tv", {"lam": "discrepancy", "n_iter": args.tv_iter}),
        ("patchnr", "patchnr", _patchnr_options(args, size, lam=lam, init=init)),
        ("patchnr-noise", "patchnr", _patchnr_options(args, size, lam="noise", init=init)),
    ]
    # only when named in --methods: the noise rule with the MAP exponent (sigma^2 / ||A||^2) and the
    # constant the rule had before the exponent was fitted (NOISE_RULE_MAP_C), for a before/after
    kind = "mri" if setting.startswith("mri") else "ct"
    map_rule = _patchnr_options(
        args, size, lam="noise", init=init, noise_c=NOISE_RULE_MAP_C[kind], noise_power=2.0
    )
    methods += (
        [("patchnr-noise-map", "patchnr", map_rule)]
        if args.methods and "patchnr-noise-map" in args.methods
        else []
    )
    return [m for m in methods if not args.methods or m[0] in args.methods or m[0] == "direct"]


def _run(op, y, method, options, sigma, seed):
    opts = dict(options)
    # the tv start's weight comes from the discrepancy principle (as in calibrate's x0) also for a fixed
    # PatchNR weight: without noise_std, init="tv" would use the fixed TV_INIT_LAM
    if opts.get("lam") in ("discrepancy", "noise") or (method == "patchnr" and opts.get("init") == "tv"):
        opts["noise_std"] = sigma
    if method == "patchnr":
        opts["generator"] = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    x = reconstruct(op, y, method, **opts)
    return x, time.perf_counter() - t0


def _summary(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


# ------------------------------------------------------------------------------------------ calibrate
def _cached_rows(args, name: str, ids: list[str]) -> dict:
    """Sweep rows of an earlier calibration of this setting with the same slices and options,
    by ``(init, lam)`` (rows written before the ``init`` option started from ``direct``)."""
    path = Path(args.calibration)
    if args.fresh or not path.is_file():
        return {}
    old = json.loads(path.read_text())
    entry = old.get("patchnr", {}).get(name)
    if not isinstance(entry, dict) or entry.get("ids") != ids or old.get("options") != _patchnr_options(args):
        return {}
    return {(r.get("init", "direct"), r["lam"]): r for r in entry["sweep"]}


def _fit_noise_c(entries: list[dict]) -> dict:
    """The noise rule's constant c (lam_i = c sigma_i^2 / ||A||^2) that maximises the mean PSNR over the
    slices of the given settings, each at its chosen init: the PSNR of slice i at lam_i is interpolated
    linearly in log lam between the swept weights (held constant beyond the grid)."""
    cs = np.exp(np.linspace(np.log(1e-4), np.log(10.0), 101))
    score = np.zeros(len(cs))
    n = 0
    for e in entries:
        rows = sorted(
            (r for r in e["sweep"] if r.get("init", "direct") == e.get("init", "direct")),
            key=lambda r: r["lam"],
        )
        grid = np.log([r["lam"] for r in rows])
        table = np.asarray([r["psnr_each"] for r in rows])  # (n_lam, n_slices)
        for i, s in enumerate(e["sigma"]):
            lam_i = np.log(cs * s**2 / e["norm_squared"])
            score += np.interp(lam_i, grid, table[:, i])
            n += 1
    k = int(np.argmax(score))
    return {
        "c": float(cs[k]),
        "mean_psnr": float(score[k] / n),
        "c_grid": cs.tolist(),
        "psnr": (score / n).tolist(),
    }


def calibrate(args) -> int:
    """Per setting, on TRAIN-split slices only: PatchNR's start (``init``) and weight from a sweep, TV's
    PSNR for reference, and the noise rule's constant c per modality (``medrecon.methods.patchnr.NOISE_RULE_C``).

    Rows of an earlier calibration with the same slices and options are reused (``--fresh``: rerun).
    The ``tv`` start is the TV-discrepancy image (what ``init="tv"`` computes), passed as ``x0`` so the
    sweep solves TV once per setting.
    """
    settings = _settings(args, CT_SETTINGS + MRI_SETTINGS + ([CT256_SETTING] if args.ct256 else []))
    path = Path(args.calibration)
    out: dict = json.loads(path.read_text()) if path.is_file() and not args.fresh else {}
    if out.get("options") != _patchnr_options(args) or out.get("n_slices") != args.n_cal:
        out = {}
    out.update(
        {
            "what": "PatchNR starts and weights chosen on TRAIN-split slices (never validation)",
            "n_slices": args.n_cal,
            "grids": {k: {i: list(g) for i, g in v.items()} for k, v in PATCHNR_GRIDS.items()},
            "inits": list(args.inits),
            "noise_level": NOISE_LEVEL,
            "options": _patchnr_options(args),
            "command": " ".join(sys.argv),
            "git": git_revision(),
        }
    )
    out.setdefault("patchnr", {})
    out.pop("grid", None)
    for name, modality, size, param in settings:
        corpus = load_corpus(_corpus(modality), "train", size=size, slices=args.n_cal)
        x = corpus.images
        op = _operator(modality, size, param)
        y, sigma = _measure(op, x, corpus.ids, modality)
        cached = _cached_rows(args, name, corpus.ids)
        load0 = os.getloadavg()[0]
        x_tv, sec_tv = _run(op, y, "tv", {"lam": "discrepancy", "n_iter": args.tv_iter}, sigma, 0)
        tv_psnr = _scores(x, x_tv)[0]
        print(f"[calibrate] {name} tv-discrepancy: PSNR {np.mean(tv_psnr):.2f} dB", flush=True)
        rows = []
        grids = PATCHNR_GRIDS.get(name, {"direct": PATCHNR_GRID})
        for init in args.inits:
            for lam in grids.get(init, ()):
                if (init, lam) in cached:
                    rows.append({"init": init, **cached[(init, lam)]})
                    continue
                start = {} if init == "direct" else {"x0": _real(x_tv)}
                load0 = os.getloadavg()[0]
                xr, sec = _run(op, y, "patchnr", _patchnr_options(args, size, lam=lam, **start), sigma, 0)
                p, _ = _scores(x, xr)
                rows.append(
                    {
                        "init": init,
                        "lam": lam,
                        "psnr": float(np.mean(p)),
                        "psnr_each": p,
                        "seconds": sec,
                        "load_avg_1min": load0,
                    }
                )
                print(
                    f"[calibrate] {name} init={init} lam={lam:g}: PSNR {np.mean(p):.2f} dB "
                    f"({sec:.0f} s, load {load0:.1f})",
                    flush=True,
                )
        best = max(rows, key=lambda r: r["psnr"])
        out["patchnr"][name] = {
            "init": best["init"],
            "lam": best["lam"],
            "psnr": best["psnr"],
            # c of lam = c sigma^2 / ||A||^2 that the best weight is at the median slice's noise
            "c": best["lam"] * float(op.norm_squared()) / float(sigma.median()) ** 2,
            "tv_discrepancy": {"psnr": float(np.mean(tv_psnr)), "psnr_each": tv_psnr, "seconds": sec_tv},
            "sweep": rows,
            "ids": corpus.ids,
            "sigma": sigma.tolist(),
            "norm_squared": float(op.norm_squared()),
        }
        out["load_avg"] = os.getloadavg()
        atomic_write_text(path, json.dumps(out, indent=1))  # after each setting: a partial run is kept
    if "ct128_a30" in out["patchnr"]:
        out["patchnr"]["default_lam"] = out["patchnr"]["ct128_a30"]["lam"]
    out["noise_rule"] = {
        modality: _fit_noise_c([e for k, e in out["patchnr"].items() if k.startswith(f"{modality}128")])
        for modality in ("ct", "mri")
        if any(k.startswith(f"{modality}128") for k in out["patchnr"])
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=1))
    summary = {
        k: (v["init"], v["lam"], round(v["psnr"], 2), round(v["tv_discrepancy"]["psnr"], 2))
        for k, v in out["patchnr"].items()
        if isinstance(v, dict)
    }
    print(
        json.dumps(summary),
        json.dumps({k: round(v["c"], 4) for k, v in out["noise_rule"].items()}),
        flush=True,
    )
    return 0


#: ``noise-sweep``: relative PatchNR weights swept per TRAIN slice (at the setting's calibrated start)
#: to fit the noise rule's exponent and constant; half decades around the calibrated weights.
NOISE_SWEEP_GRIDS = {
    "ct128_a30": (3e-8, 1e-7, 3e-7, 1e-6),
    "ct128_a10": (1e-7, 3e-7, 1e-6, 3e-6),
    "mri128_4x": (1e-7, 3e-7, 1e-6, 3e-6),
    "mri128_8x": (1e-7, 3e-7, 1e-6, 3e-6, 1e-5),
}
NOISE_SWEEP = RESULTS / "real_anatomy_calibration_noise.json"


def noise_sweep(args) -> int:
    """Per setting, on ``--n-noise`` TRAIN-split slices: each slice's PSNR at every weight of
    :data:`NOISE_SWEEP_GRIDS` (start: the setting's calibrated ``init``), with each slice's sigma and
    ``||A||^2``; then the noise rule ``lam = c (sigma / ||A||)^p`` fitted per modality
    (:func:`_fit_noise_rule`) -> :data:`NOISE_SWEEP`. Rows of an earlier run with the same slices and
    options are reused (``--fresh``: rerun)."""
    cal = json.loads(Path(args.calibration).read_text())
    path = NOISE_SWEEP if not args.quick else NOISE_SWEEP.with_name(f"{NOISE_SWEEP.stem}_quick.json")
    out: dict = json.loads(path.read_text()) if path.is_file() and not args.fresh else {}
    if out.get("options") != _patchnr_options(args):
        out = {}
    out.update(
        {
            "what": "PatchNR PSNR per TRAIN-split slice and weight, to fit lam='noise' (never validation)",
            "options": _patchnr_options(args),
            "noise_level": NOISE_LEVEL,
            "command": " ".join(sys.argv),
            "git": git_revision(),
            "threads": torch.get_num_threads(),
        }
    )
    out.setdefault("settings", {})
    for name, modality, size, param in _settings(args, CT_SETTINGS + MRI_SETTINGS):
        corpus = load_corpus(_corpus(modality), "train", size=size, slices=args.n_noise)
        x = corpus.images
        op = _operator(modality, size, param)
        y, sigma = _measure(op, x, corpus.ids, modality)
        init = cal["patchnr"][name]["init"]
        old = out["settings"].get(name, {})
        cached = {r["lam"]: r for r in old.get("sweep", [])} if old.get("ids") == corpus.ids else {}
        entry = {
            "setting": name,
            "modality": modality,
            "init": init,
            "ids": corpus.ids,
            "sigma": sigma.tolist(),
            "norm_squared": float(op.norm_squared()),
            "sweep": [],
        }
        start = {}
        if init == "tv":
            x_tv, _ = _run(op, y, "tv", {"lam": "discrepancy", "n_iter": args.tv_iter}, sigma, 0)
            start = {"x0": _real(x_tv)}
        for lam in NOISE_SWEEP_GRIDS[name]:
            if lam in cached:
                entry["sweep"].append(cached[lam])
                continue
            load0 = os.getloadavg()[0]
            xr, sec = _run(op, y, "patchnr", _patchnr_options(args, size, lam=lam, **start), sigma, 0)
            p, _ = _scores(x, xr)
            entry["sweep"].append(
                {"lam": lam, "psnr_each": p, "seconds_per_image": sec / len(p), "load_avg_1min": load0}
            )
            print(
                f"[noise-sweep] {name} lam={lam:g}: PSNR {np.mean(p):.2f} dB "
                f"({sec / len(p):.1f} s/image, load {load0:.1f})",
                flush=True,
            )
            out["settings"][name] = entry
            atomic_write_text(path, json.dumps(out, indent=1))  # a partial run is kept
        means = [float(np.mean(r["psnr_each"])) for r in entry["sweep"]]
        entry["best_lam"] = entry["sweep"][int(np.argmax(means))]["lam"]  # of the mean PSNR
        out["settings"][name] = entry
        if args.update_calibration:
            # the fixed weight of the ``patchnr`` rows: the best mean over these (more) train slices
            c = cal["patchnr"][name]
            c.update(lam=entry["best_lam"], lam_from=f"{path.name} ({len(corpus.ids)} train slices)")
            atomic_write_text(Path(args.calibration), json.dumps(cal, indent=1))
    out["fit"] = {
        modality: _fit_noise_rule([e for e in out["settings"].values() if e["modality"] == modality])
        for modality in ("ct", "mri")
        if any(e["modality"] == modality for e in out["settings"].values())
    }
    out["load_avg"] = os.getloadavg()
    atomic_write_text(path, json.dumps(out, indent=1))
    print(json.dumps({k: {kk: v[kk] for kk in ("p", "c", "mean_psnr")} for k, v in out["fit"].items()}))
    return 0


def _psnr_at(entry: dict, log_lam: np.ndarray) -> np.ndarray:
    """PSNR of each slice of a sweep entry at weights ``exp(log_lam)`` ``(..., n_slices)``: linear in
    log lam between the swept weights, held constant beyond them."""
    rows = sorted(entry["sweep"], key=lambda r: r["lam"])
    grid = np.log([r["lam"] for r in rows])
    table = np.asarray([r["psnr_each"] for r in rows])  # (n_lam, n_slices)
    return np.stack([np.interp(log_lam[..., i], grid, table[:, i]) for i in range(table.shape[1])], -1)


NOISE_RULE_POWERS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def _fit_noise_rule(entries: list[dict]) -> dict:
    """``lam_i = c (sigma_i / ||A||)^p`` over the slices of the given settings: for each exponent of
    :data:`NOISE_RULE_POWERS` the ``c`` that maximises the mean PSNR (:func:`_psnr_at`), and the
    ``(p, c)`` with the highest mean PSNR. Also per setting: the mean gap to each slice's best swept
    weight and the weights the rule gives relative to the grid (a rule off the grid is extrapolated)."""
    log_c = np.linspace(np.log(1e-8), np.log(1e2), 401)
    fits = {}
    for p in NOISE_RULE_POWERS:
        score = np.zeros(len(log_c))
        n = 0
        for e in entries:
            s = np.asarray(e["sigma"]) / np.sqrt(e["norm_squared"])
            log_lam = log_c[:, None] + p * np.log(s)[None, :]  # (n_c, n_slices)
            score += _psnr_at(e, log_lam).sum(1)
            n += len(s)
        k = int(np.argmax(score))
        per_setting = {}
        for e in entries:
            s = np.asarray(e["sigma"]) / np.sqrt(e["norm_squared"])
            lam = np.exp(log_c[k] + p * np.log(s))
            best = np.max([r["psnr_each"] for r in e["sweep"]], 0)
            grid = [r["lam"] for r in e["sweep"]]
            per_setting[e["setting"]] = {
                "gap_db": float(np.mean(best - _psnr_at(e, np.log(lam)[None, :])[0])),
                "lam_min_max": [float(lam.min()), float(lam.max())],
                "grid_min_max": [min(grid), max(grid)],
            }
        fits[str(p)] = {
            "c": float(np.exp(log_c[k])),
            "mean_psnr": float(score[k] / n),
            "settings": per_setting,
        }
    best_p = max(fits, key=lambda q: fits[q]["mean_psnr"])
    return {"p": float(best_p), "c": fits[best_p]["c"], "mean_psnr": fits[best_p]["mean_psnr"], "by_p": fits}


def _settings(args, settings: list[tuple]) -> list[tuple]:
    return [s for s in settings if s[0] in args.only] if args.only else settings


# ------------------------------------------------------------------------------------------ evaluate
def evaluate(args) -> int:
    """Each setting: methods on the validation slices -> ``<out stem>_<setting>.json`` and ``.npz`` (figure slice)."""
    cal = json.loads(Path(args.calibration).read_text()) if Path(args.calibration).is_file() else None
    if cal is None:
        raise SystemExit(f"no calibration at {args.calibration}: run `python {sys.argv[0]} calibrate` first")
    settings = _settings(args, ALL_SETTINGS + [CT256_SETTING])
    if not args.only:
        settings = CT_SETTINGS + MRI_SETTINGS + (EXTRA_SETTINGS if args.extra else [])
        settings += [CT256_SETTING] if args.ct256 else []
    out = Path(args.out)
    for name, modality, size, param in settings:
        n_val = args.n_val if size == 128 else args.n_val_256
        corpus = load_corpus(_corpus(modality), "validation", size=size, slices=n_val)
        x = corpus.images
        op = _operator(modality, size, param)
        y, sigma = _measure(op, x, corpus.ids, modality)
        entry = {
            "modality": modality,
            "size": size,
            "param": param,
            "ids": corpus.ids,
            "n": len(corpus.ids),
            "sigma_mean": float(sigma.mean()),
            "noise": "poisson" if modality == "ct-poisson" else f"gaussian {NOISE_LEVEL:g} mean |Ax|",
            "command": " ".join(sys.argv),
            "git": git_revision(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "methods": {},
        }
        stem = out.with_name(f"{out.stem}_{name}")
        old, old_arrays = _earlier_rows(args, stem, corpus.ids)
        recon = {}
        tv_seconds = None
        for label, method, options in _methods(name, size, cal, args):
            load0 = os.getloadavg()[0]
            run_options = options
            if method == "patchnr" and options.get("init") == "tv" and "tv-discrepancy" in recon:
                # init="tv" computes the tv-discrepancy row's image (the same solve): pass it as x0 and
                # count its time, instead of solving TV again for every PatchNR row
                run_options = {k: v for k, v in options.items() if k not in ("init", "tv_iter")}
                run_options["x0"] = recon["tv-discrepancy"]
            xr, sec = _run(op, y, method, run_options, sigma, 0)
            if method == "tv" and label == "tv-discrepancy":
                tv_seconds = sec
            elif run_options is not options:
                sec += tv_seconds
            p, s = _scores(x, xr)
            entry["methods"][label] = {
                "method": method,
                "options": dict(options),
                "psnr": _summary(p),
                "ssim": _summary(s),
                "psnr_each": p,
                "seconds_per_image": sec / len(p),
                "load_avg_1min": load0,
                "git": entry["git"],
            }
            recon[label] = _real(xr)
            print(
                f"[{name}] {label}: PSNR {np.mean(p):.2f} +/- {np.std(p, ddof=1) if len(p) > 1 else 0:.2f} dB, "
                f"SSIM {np.mean(s):.3f}, {sec / len(p):.1f} s/image (load {load0:.1f})",
                flush=True,
            )
        # the figure's slice: the median slice by direct-reconstruction PSNR
        k = int(np.argsort(entry["methods"]["direct"]["psnr_each"])[len(corpus.ids) // 2])
        entry["figure_slice"] = corpus.ids[k]
        arrays = {lab: r[k, 0].numpy() for lab, r in recon.items()}
        if old is not None:  # a run of some methods: the other rows (and the oracle) of the earlier run stay
            rows = {}
            for label, row in old["methods"].items():  # in the earlier order, the new rows in place
                rows[label] = entry["methods"].get(label, {**row, "git": row.get("git", old.get("git"))})
                if (
                    label not in recon
                    and label in old_arrays
                    and old.get("figure_slice") == entry["figure_slice"]
                ):
                    arrays[label] = old_arrays[label]
            entry["methods"] = {**rows, **entry["methods"]}
            if "oracle" in old and "patchnr" not in recon:
                entry["oracle"] = _regap(old["oracle"], entry["methods"])
        np.savez_compressed(stem.with_suffix(".npz"), truth=x[k, 0].numpy(), **arrays)
        atomic_write_text(
            stem.with_suffix(".json"), json.dumps(entry, indent=1)
        )  # (again below with the oracle)
        if args.oracle and "patchnr" in recon:
            # best weight per slice of a small sweep against the ground truth: measures the gap only
            lam0 = entry["methods"]["patchnr"]["options"]["lam"]
            init = entry["methods"]["patchnr"]["options"].get("init", "direct")
            # the tv start is the tv-discrepancy row's image (what init="tv" computes), solved once
            start = (
                {"x0": recon["tv-discrepancy"]}
                if init == "tv" and "tv-discrepancy" in recon
                else {"init": init}
            )
            best = np.asarray(entry["methods"]["patchnr"]["psnr_each"])
            best_lam = np.full(len(best), lam0)
            for f in (1 / 3, 3.0):
                xr, _ = _run(op, y, "patchnr", _patchnr_options(args, size, lam=lam0 * f, **start), sigma, 0)
                p = np.asarray(_scores(x, xr)[0])
                best_lam = np.where(p > best, lam0 * f, best_lam)
                best = np.maximum(best, p)
            gaps = {
                lab: float(np.mean(best - np.asarray(entry["methods"][lab]["psnr_each"])))
                for lab in ("patchnr", "patchnr-noise", "patchnr-noise-map")
                if lab in entry["methods"]
            }
            entry["oracle"] = {
                "grid_factors": [1 / 3, 1, 3],
                "init": init,
                "psnr": _summary(best.tolist()),
                "psnr_each": best.tolist(),
                "git": entry["git"],
                "best_lam_each": best_lam.tolist(),
                "gap_db": gaps,
            }
            print(f"[{name}] oracle sweep: PSNR {best.mean():.2f} dB; gaps {gaps}", flush=True)
            atomic_write_text(stem.with_suffix(".json"), json.dumps(entry, indent=1))
    return 0


def _earlier_rows(args, stem: Path, ids: list[str]) -> tuple[dict | None, dict]:
    """With ``--methods`` (a run of some methods): the earlier ``<stem>.json`` on the same slices and its
    figure arrays, whose other rows are kept; else ``(None, {})`` (a full run replaces the file)."""
    f = stem.with_suffix(".json")
    if not args.methods or not f.is_file():
        return None, {}
    old = json.loads(f.read_text())
    if old.get("ids") != ids:
        print(f"[evaluate] {f.name}: other slices, its rows are dropped", flush=True)
        return None, {}
    npz = stem.with_suffix(".npz")
    arrays = dict(np.load(npz)) if npz.is_file() else {}
    return old, arrays


def _regap(oracle: dict, methods: dict) -> dict:
    """An earlier oracle sweep (its ``patchnr`` row kept) with the gaps of the current rows: the mean of
    the per-slice best minus the row's mean PSNR (the same slices)."""
    best = oracle.get("psnr_each")
    gaps = {
        lab: float(np.mean(best) if best is not None else oracle["psnr"]["mean"])
        - float(np.mean(methods[lab]["psnr_each"]))
        for lab in ("patchnr", "patchnr-noise", "patchnr-noise-map")
        if lab in methods
    }
    return {**oracle, "gap_db": gaps}


def diagnose(args) -> int:
    """CT 10 angles on the calibration's TRAIN slices: TV vs PatchNR from FBP vs PatchNR started from the TV image.

    Separates the prior from the optimisation: if the TV start beats TV while the FBP start does not, the
    loss at 10 angles comes from the start (streaks), not from the patch prior.
    """
    cal = json.loads(Path(args.calibration).read_text())
    corpus = load_corpus("ct", "train", size=128, slices=args.n_cal)
    x = corpus.images
    op = _operator("ct", 128, 10)
    y, sigma = _measure(op, x, corpus.ids)
    lam = cal["patchnr"]["ct128_a10"]["lam"]
    x_tv, _ = _run(op, y, "tv", {"lam": "discrepancy", "n_iter": args.tv_iter}, sigma, 0)
    out = {"ids": corpus.ids, "lam": lam, "tv": _scores(x, x_tv)[0]}
    x_fbp, _ = _run(op, y, "patchnr", _patchnr_options(args, lam=lam), sigma, 0)
    out["patchnr_from_fbp"] = _scores(x, x_fbp)[0]
    x_p, _ = _run(op, y, "patchnr", _patchnr_options(args, lam=lam, x0=x_tv), sigma, 0)
    out["patchnr_from_tv"] = _scores(x, x_p)[0]
    print(json.dumps(out), flush=True)
    atomic_write_text(Path(args.out).with_name("real_anatomy_diagnosis_a10.json"), json.dumps(out, indent=1))
    return 0


def diagnose_mri(args) -> int:
    """MRI on the calibration's TRAIN slices: where does PatchNR lose to TV?

    At each MRI setting's calibrated weight: PatchNR from the zero-filled image and from the TV image
    (the start, from the calibration's sweep), and with the bundled CT weights instead of the MRI
    ones at the calibrated start (the MRI weights' training had a loss spike, see
    data/weights/patchnr_mri.md: if the CT weights do as well, the MRI weights are not the limit).
    """
    cal = json.loads(Path(args.calibration).read_text())
    out: dict = {"what": "PatchNR vs TV on MRI TRAIN slices (colin27): start and weights", "settings": {}}
    for name, modality, size, param in _settings(args, MRI_SETTINGS):
        c = cal["patchnr"][name]
        corpus = load_corpus(_corpus(modality), "train", size=size, slices=args.n_cal)
        x = corpus.images
        op = _operator(modality, size, param)
        y, sigma = _measure(op, x, corpus.ids, modality)
        x_tv, _ = _run(op, y, "tv", {"lam": "discrepancy", "n_iter": args.tv_iter}, sigma, 0)
        start = {} if c["init"] == "direct" else {"x0": _real(x_tv)}
        row = {
            "ids": corpus.ids,
            "lam": c["lam"],
            "init": c["init"],
            "tv": _scores(x, x_tv)[0],
            "sweep_best_by_init": {
                init: max((r for r in c["sweep"] if r["init"] == init), key=lambda r: r["psnr"])
                for init in PATCHNR_INITS
                if any(r["init"] == init for r in c["sweep"])
            },
        }
        opts = _patchnr_options(args, size, lam=c["lam"], weights="data/weights/patchnr_ct.pt", **start)
        load0 = os.getloadavg()[0]
        x_ct, sec = _run(op, y, "patchnr", opts, sigma, 0)
        row["patchnr_ct_weights"] = {"psnr_each": _scores(x, x_ct)[0], "seconds": sec, "load_avg_1min": load0}
        out["settings"][name] = row
        print(
            f"[diagnose-mri] {name}: TV {np.mean(row['tv']):.2f}, "
            + ", ".join(
                f"{k} start {v['psnr']:.2f} (lam {v['lam']:g})" for k, v in row["sweep_best_by_init"].items()
            )
            + f", CT weights {np.mean(row['patchnr_ct_weights']['psnr_each']):.2f} dB",
            flush=True,
        )
    atomic_write_text(Path(args.out).with_name("real_anatomy_diagnosis_mri.json"), json.dumps(out, indent=1))
    return 0


def report(args) -> int:
    """Merge the per-setting files into ``<out>.json``, the table ``<out>.md`` and the figure ``<out>.png``.

    The methods of ``<out>_extra_<setting>.json`` / ``.npz`` (same format, written by
    ``benchmarks/real_anatomy_generative.py``: the VAE, flow, DIP-TV rows) are merged into their
    setting, when present and on the same slices.
    """
    out = Path(args.out)
    settings, arrays = {}, {}
    for name, *_ in ALL_SETTINGS + [CT256_SETTING]:
        f = out.with_name(f"{out.stem}_{name}.json")
        if not f.is_file():
            continue
        settings[name] = json.loads(f.read_text())
        npz = np.load(out.with_name(f"{out.stem}_{name}.npz"))
        arrays[name] = {k: npz[k] for k in npz.files}
        extra = out.with_name(f"{out.stem}_extra_{name}.json")
        if not extra.is_file():
            continue
        more = json.loads(extra.read_text())
        if more.get("ids") != settings[name]["ids"]:
            print(f"[report] {extra.name}: other slices than {f.name}, not merged", flush=True)
            continue
        more_npz = out.with_name(f"{out.stem}_extra_{name}.npz")
        more_arrays = np.load(more_npz) if more_npz.is_file() else None
        for label, m in more["methods"].items():
            if label in settings[name]["methods"]:
                continue  # the same row (direct, tv) from the other script: keep this script's
            settings[name]["methods"][label] = {**m, "source": extra.name}
            if more_arrays is not None and label in more_arrays.files:
                arrays[name][label] = more_arrays[label]
    if not settings:
        raise SystemExit(f"no per-setting results next to {out}: run `evaluate` first")
    results = {"noise_level": NOISE_LEVEL, "calibration": str(args.calibration), "settings": settings}
    atomic_write_text(out, json.dumps(results, indent=1))
    _table(results, out.with_suffix(".md"))
    rows = {}
    for name, entry in settings.items():
        rows[name] = (
            torch.from_numpy(arrays[name]["truth"]),
            {lab: torch.from_numpy(arrays[name][lab]) for lab in entry["methods"] if lab in arrays[name]},
            entry["figure_slice"],
        )
    if not args.no_figure:
        _figure(rows, results, out.with_suffix(".png"))
    return 0


def _table(results: dict, path: Path) -> None:
    lines = [
        "| setting | method | PSNR (dB) | SSIM | s / image (load) |",
        "|---|---|---|---|---|",
    ]
    for name, entry in results["settings"].items():
        for label, m in entry["methods"].items():
            load = m.get("load_avg_1min")
            load = f" ({load:.1f})" if load is not None else ""
            n = f"; n={len(m['psnr_each'])}" if len(m["psnr_each"]) != entry["n"] else ""
            lines.append(
                f"| {name} (n={entry['n']}) | {label}{n} | {m['psnr']['mean']:.2f} +/- {m['psnr']['std']:.2f} | "
                f"{m['ssim']['mean']:.3f} +/- {m['ssim']['std']:.3f} | {m['seconds_per_image']:.1f}{load} |"
            )
        if "oracle" in entry:
            o = entry["oracle"]
            gaps = ", ".join(f"{k} {v:+.2f} dB" for k, v in o["gap_db"].items())
            lines.append(
                f"| {name} (n={entry['n']}) | patchnr, oracle weight (x1/3, 1, 3 per slice; gap: {gaps}) | "
                f"{o['psnr']['mean']:.2f} +/- {o['psnr']['std']:.2f} | | |"
            )
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines))


def _figure(rows: dict, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_methods = max(len(m) for _, m, _ in rows.values())
    fig, axes = plt.subplots(
        2 * len(rows), n_methods + 1, figsize=(2.2 * (n_methods + 1), 4.4 * len(rows)), squeeze=False
    )
    for r, (name, (gt, recon, sid)) in enumerate(rows.items()):
        top, bottom = axes[2 * r], axes[2 * r + 1]
        top[0].imshow(gt.numpy(), cmap="gray", vmin=0, vmax=1)
        top[0].set_title(f"{name}\n{sid} truth", fontsize=8)
        bottom[0].axis("off")
        err_max = 0.2
        for c, (label, img) in enumerate(recon.items(), start=1):
            img = _real(img)  # a complex MRI image is shown and scored by its magnitude
            m = results["settings"][name]["methods"][label]
            ids = m.get("ids", results["settings"][name]["ids"])  # a method run on a subset names it
            p = f"{m['psnr_each'][ids.index(sid)]:.2f} dB" if sid in ids else ""
            top[c].imshow(img.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            top[c].set_title(f"{label}\n{p}", fontsize=8)
            im = bottom[c].imshow((img - gt).abs().numpy(), cmap="inferno", vmin=0, vmax=err_max)
            bottom[c].set_title("|error|", fontsize=8)
        for c in range(len(recon) + 1, n_methods + 1):  # fewer methods in this setting: blank cells
            top[c].axis("off")
            bottom[c].axis("off")
        fig.colorbar(im, ax=list(bottom[1:]), fraction=0.02, pad=0.01)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.savefig(path, dpi=80, bbox_inches="tight")
    print(f"figure written to {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "command", choices=["calibrate", "evaluate", "diagnose", "diagnose-mri", "noise-sweep", "report"]
    )
    ap.add_argument("--n-val", type=int, default=16, help="validation slices at 128 px (spaced evenly)")
    ap.add_argument("--n-val-256", type=int, default=4, help="validation slices of the 256 px setting")
    ap.add_argument("--n-cal", type=int, default=3, help="training slices used by calibrate")
    ap.add_argument(
        "--update-calibration",
        action="store_true",
        help="noise-sweep: the fixed weight of the patchnr rows from the sweep's best mean PSNR",
    )
    ap.add_argument("--n-noise", type=int, default=8, help="training slices used by noise-sweep")
    ap.add_argument("--n-iter", type=int, default=450, help="PatchNR Adam steps")
    ap.add_argument("--n-patches", type=int, default=1024, help="PatchNR patches per image and step")
    ap.add_argument("--lr", type=float, default=5e-3, help="PatchNR Adam step")
    ap.add_argument("--tv-iter", type=int, default=200, help="PDHG iterations per TV solve")
    ap.add_argument("--ct256", action="store_true", help="add the 256x256 CT setting")
    ap.add_argument("--mri", action="store_true", help="(kept for old commands: MRI settings always run)")
    ap.add_argument("--extra", action="store_true", help="evaluate: add multi-coil MRI and Poisson CT")
    ap.add_argument(
        "--oracle", action="store_true", help="measure the gap to the best of a small weight sweep"
    )
    ap.add_argument("--only", nargs="*", help="run only these settings (e.g. ct128_a30)")
    ap.add_argument("--methods", nargs="*", help="run only these methods (labels; 'direct' always runs)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 slices, 30 steps")
    ap.add_argument("--no-figure", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="calibrate: rerun every row (no reuse)")
    ap.add_argument(
        "--inits",
        nargs="+",
        choices=PATCHNR_INITS,
        default=list(PATCHNR_INITS),
        help="calibrate: the PatchNR starts swept (default both)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration", default=str(CALIBRATION))
    ap.add_argument("--out", default=str(RESULTS / "real_anatomy.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n_val, args.n_val_256, args.n_cal, args.n_iter, args.tv_iter = 2, 2, 2, 30, 50
        if args.out == str(RESULTS / "real_anatomy.json"):
            args.out = str(RESULTS / "real_anatomy_quick.json")
        if args.command == "calibrate" and args.calibration == str(CALIBRATION):
            args.calibration = str(RESULTS / "real_anatomy_calibration_quick.json")
    commands = {"calibrate": calibrate, "evaluate": evaluate, "diagnose": diagnose, "report": report}
    return {**commands, "diagnose-mri": diagnose_mri, "noise-sweep": noise_sweep}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
