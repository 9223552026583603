"""Real-anatomy benchmark, generative rows: VAE, flow and DIP-TV on the slices of ``real_anatomy.py`` (issue 16).

    OMP_NUM_THREADS=1 python benchmarks/real_anatomy_generative.py calibrate        # weights on TRAIN slices only
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy_generative.py evaluate --only ct128_a30 --oracle
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy_generative.py evaluate --only ct128_a30 --methods dip-tv
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy_generative.py diagnose   # flow MAP: optimisation or model?
    OMP_NUM_THREADS=1 python benchmarks/real_anatomy_generative.py evaluate --quick   # smoke run (2 slices)

The settings, slices, operators and noise are those of ``benchmarks/real_anatomy.py`` (imported from it:
``CT_SETTINGS``, ``_operator``, ``_measure``, ``_scores``, ``NOISE_LEVEL``): 16 validation slices of the
held-out subject lung1 at 128x128, parallel-beam CT with 30 and 10 angles, 1 % Gaussian noise seeded
per slice id. Priors: ``data/weights/vae_ct128.pt`` and ``flow_ct128.pt`` (CT TRAIN split). ``--mri`` adds
``real_anatomy.py``'s single-coil MRI settings (4x, 8x; 16 MNI152 slices) with ``vae_mri128.pt`` and
``flow_mri128.pt`` (MRI TRAIN split, Colin27): ``calibrate --mri --only mri128_4x mri128_8x --methods
vae-soft flow-map``, then ``evaluate --mri --only mri128_4x`` (and ``mri128_8x``) ``--methods vae-soft flow-map``.

Weights. Every learned-prior weight is a factor ``f`` on the method's MAP weight for the slice's own
noise level (``medrecon.solvers.auto_weights.noise_rule_weight(..., calibrated=False)``: e.g.
``sigma^2 / (mu ||A||^2)`` for ``vae-soft``, ``2 D sigma^2 / ||A||^2`` for ``flow`` MAP). ``calibrate``
chooses ``f`` per setting and method from a grid on the TRAIN-split slices of ``real_anatomy.py``'s
calibration (lung2 + head, never validation) and writes ``results/real_anatomy_extra_calibration.json``.
Rows per method on the validation slices:

* ``<method>``: the factor chosen on training slices;
* ``<method>-noise``: the automatic weight of the library, ``lam="noise"`` with ``noise_std`` (the MAP
  weight times ``calibration_factor`` (per prior file: 1 for the real-CT 128 priors), the documented rule of :mod:`medrecon.solvers.auto_weights`);
* ``--oracle``: the auto factor x1/3 and x3 on the validation slices; the best per slice of all the
  weights run (the train factor, the auto factor, x1/3, x3) against the ground truth measures only the
  gap of each row to the best weight (``oracle`` in the JSON); nothing is chosen from it.
* ``dip-tv``: default options (``lam=1e-3``, 1500 steps, plateau/variance stopping) on ``--dip-slices``
  slices spaced evenly over the validation slices, the figure's slice among them (it costs about 130 s
  per image with 2 threads); its row states its own ``n`` and ``ids``.

The committed results were made by these commands, in this order, one process at a time (1 thread,
load average 3-5 from other jobs on the 2-core machine; the top-level ``command`` of each JSON is the last
merged run's): ``calibrate``; ``evaluate --only <setting> --methods vae-range vae-soft flow-latent
flow-map --oracle vae-soft flow-map`` for ct128_a30 then ct128_a10; ``diagnose --n-diag 3``;
``evaluate --only ct128_a30 --methods dip-tv --dip-slices 3``; ``evaluate --only ct128_a30 ct128_a10
--methods vae-soft-discrepancy flow-map-discrepancy --disc-slices 3``; ``evaluate --only ct128_a10
--methods dip-tv --dip-slices 3``. (The 30-angle oracle entries predate the ``best_each`` field, so the
30-angle discrepancy rows have no oracle gap.)

Writes ``results/real_anatomy_extra_<setting>.json`` (the format of ``real_anatomy.py``'s per-setting
files; ``direct`` (FBP) is a top-level entry, not a method, so that a merge does not duplicate it) and
``.npz`` (the figure's slice: the median slice by FBP PSNR, the rule of ``real_anatomy.py``; arrays
``truth`` and one per method label). Each run merges into the existing files, so methods can run in
separate processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_anatomy import (  # noqa: E402  (the benchmark next to this one)
    CALIBRATION_OF,
    CT_SETTINGS,
    EXTRA_SETTINGS,
    MRI_SETTINGS,
    NOISE_LEVEL,
    RESULTS,
    _corpus,
    _measure,
    _operator,
    _scores,
)

from medrecon.data.real import load_corpus  # noqa: E402
from medrecon.methods import reconstruct  # noqa: E402
from medrecon.priors.base import modality_of  # noqa: E402
from medrecon.solvers.auto_weights import calibration_factor, noise_rule_weight  # noqa: E402
from medrecon.utils_io import atomic_write_text, git_revision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The 128 px priors per modality (CT: lung2 + head train split; MRI: Colin27 train split).
VAE = {m: ROOT / f"data/weights/vae_{m}128.pt" for m in ("ct", "mri")}
FLOW = {m: ROOT / f"data/weights/flow_{m}128.pt" for m in ("ct", "mri")}
PREFIX = "real_anatomy_extra"
LEARNED = ("vae-range", "vae-soft", "flow-latent", "flow-map")
#: Factors on the MAP weight tried by ``calibrate`` (training slices).
GRID = {
    "vae-range": (0.01, 0.1, 1.0, 10.0, 100.0),
    "flow-latent": (0.1, 1.0, 10.0, 100.0, 1000.0),
    "vae-soft": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
    "flow-map": (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0),
}
ORACLE_FACTORS = (1 / 3, 3.0)


def _family(label: str, args, op) -> tuple[str, dict]:
    """(method, options without lam) of a learned-prior label (the noise-rule key is the label); the
    weights of the operator's modality (``modality_of(op)``: complex operators get the MRI priors)."""
    vae, flow = str(VAE[modality_of(op)]), str(FLOW[modality_of(op)])
    return {
        "vae-range": ("vae-range", {"weights": vae, "n_iter": args.n_iter, "restarts": 2}),
        "vae-soft": ("vae-soft", {"weights": vae, "n_iter": args.soft_iter}),
        "flow-latent": ("flow", {"weights": flow, "mode": "latent", "n_iter": args.n_iter}),
        "flow-map": ("flow", {"weights": flow, "mode": "map", "n_iter": args.n_iter}),
    }[label]


def _map_weight(label: str, op, sigma: torch.Tensor, options: dict) -> torch.Tensor:
    """(B,) the MAP weight of each slice (its own sigma), without the library's calibration factor."""
    return noise_rule_weight(
        label,
        op,
        sigma,
        batch=len(sigma),
        n_pixels=int(np.prod(op.in_shape[-2:])),
        mu=options.get("mu", 1e-2),
        calibrated=False,
    )


def _solve(op, y, method: str, options: dict) -> tuple[torch.Tensor, float]:
    opts = dict(options)
    if method == "vae-range":
        opts["generator"] = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    x = reconstruct(op, y, method, **opts)
    return x, time.perf_counter() - t0


def _solve_factor(op, y, sigma, label: str, args, factor: float) -> tuple[torch.Tensor, float, list[float]]:
    """Each slice with the weight ``factor x`` its MAP weight (one solve per slice, as ``lam="noise"``
    does when the slices' sigmas differ)."""
    method, options = _family(label, args, op)
    lam = (factor * _map_weight(label, op, sigma, options)).tolist()
    xs, sec = [], 0.0
    for i in range(y.shape[0]):
        x, s = _solve(op, y[i : i + 1], method, dict(options, lam=lam[i]))
        xs.append(x)
        sec += s
    return torch.cat(xs), sec, lam


def _summary(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def _row(method: str, options: dict, p, s, sec: float, load0: float, **extra) -> dict:
    return {
        "method": method,
        "options": {k: v for k, v in options.items() if k != "weights"}
        | ({"weights": Path(options["weights"]).name} if "weights" in options else {}),
        "psnr": _summary(p),
        "ssim": _summary(s),
        "psnr_each": list(p),
        "seconds_per_image": sec / len(p),
        "load_avg_1min": load0,
        "load_avg_1min_end": os.getloadavg()[0],
        **extra,
    }


def _settings(args):
    settings = CT_SETTINGS + (MRI_SETTINGS if args.mri else []) + (EXTRA_SETTINGS if args.extra else [])
    return [s for s in settings if not args.only or s[0] in args.only]


# ------------------------------------------------------------------------------------------ calibrate
def calibrate(args) -> int:
    """Best factor on the MAP weight per setting and learned method, on TRAIN-split slices only."""
    path = Path(args.calibration)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = json.loads(path.read_text()) if path.is_file() else {}
    out.update(
        {
            "what": "factors on the MAP weight chosen on TRAIN-split slices (never validation)",
            "n_slices": args.n_cal,
            "noise_level": NOISE_LEVEL,
            "grid": {k: list(v) for k, v in GRID.items()},
            "command": " ".join(sys.argv),
            "git": git_revision(),
        }
    )
    out.setdefault("settings", {})
    labels = [m for m in LEARNED if not args.methods or m in args.methods]
    for name, modality, size, param in _settings(args):
        corpus = load_corpus(_corpus(modality), "train", size=size, slices=args.n_cal)
        x = corpus.images
        op = _operator(modality, size, param)
        y, sigma = _measure(op, x, corpus.ids, modality)
        entry = out["settings"].setdefault(name, {})
        for label in labels:
            rows = []
            factors = args.factors or GRID[label][: 2 if args.quick else None]
            if args.factors and label in entry and entry[label].get("ids") == corpus.ids:
                rows = [r for r in entry[label]["sweep"] if r["factor"] not in factors]  # add to that sweep
            for f in factors:
                load0 = os.getloadavg()[0]
                xr, sec, lam = _solve_factor(op, y, sigma, label, args, f)
                p = _scores(x, xr)[0]
                rows.append(
                    {
                        "factor": f,
                        "psnr": float(np.mean(p)),
                        "psnr_each": p,
                        "lam_each": lam,
                        "seconds_per_image": sec / len(p),
                        "load_avg_1min": load0,
                    }
                )
                print(
                    f"[calibrate] {name} {label} x{f:g} MAP: {np.mean(p):.2f} dB ({sec / len(p):.1f} s/img)"
                )
            rows.sort(key=lambda r: r["factor"])
            best = max(rows, key=lambda r: r["psnr"])
            entry[label] = {"factor": best["factor"], "psnr": best["psnr"], "ids": corpus.ids, "sweep": rows}
            atomic_write_text(path, json.dumps(out, indent=1))
    print(json.dumps({n: {k: v["factor"] for k, v in e.items()} for n, e in out["settings"].items()}))
    return 0


# ------------------------------------------------------------------------------------------ evaluate
def _dip_indices(n: int, k_fig: int, n_dip: int) -> list[int]:
    """``n_dip`` indices spaced evenly over ``range(n)``, the nearest one replaced by the figure's slice."""
    idx = [int(i) for i in np.linspace(0, n - 1, n_dip).round()]
    if k_fig not in idx:
        idx[int(np.argmin([abs(i - k_fig) for i in idx]))] = k_fig
    return sorted(set(idx))


def _partial_row(entry: dict, label: str, ids, sel, method: str, options: dict, load0: float, extra: dict):
    """``entry["methods"][label]`` from the slices of ``sel`` done so far (``entry["partial"][label]``): all of
    them at the end of a run, fewer if it was interrupted (the row's ``n`` and ``ids`` say which)."""
    part = entry["partial"][label]["slices"]
    got = [i for i in sel if ids[i] in part]
    done = [part[ids[i]] for i in got]
    p, s_ = [d["psnr"] for d in done], [d["ssim"] for d in done]
    sec = sum(d["seconds"] for d in done)
    entry["methods"][label] = _row(
        method, options, p, s_, sec, load0, ids=[ids[i] for i in got], n=len(got), **extra
    )
    family = label.removesuffix("-discrepancy")
    if label != "dip-tv" and "best_each" in entry["oracle"].get(family, {}):  # gap on its own slices
        best = np.asarray(entry["oracle"][family]["best_each"])[got]
        entry["oracle"][family]["gap_db"][f"{label} (n={len(got)})"] = float(np.mean(best - p))
    return p, sec


def evaluate(args) -> int:
    cal_path = Path(args.calibration)
    cal = json.loads(cal_path.read_text())["settings"] if cal_path.is_file() else {}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    subset_labels = ("dip-tv", "vae-soft-discrepancy", "flow-map-discrepancy")
    labels = [m for m in (*LEARNED, *subset_labels) if not args.methods or m in args.methods]
    for name, modality, size, param in _settings(args):
        corpus = load_corpus(_corpus(modality), "validation", size=size, slices=args.n_val)
        x, ids = corpus.images, list(corpus.ids)
        op = _operator(modality, size, param)
        y, sigma = _measure(op, x, ids, modality)
        stem = out_dir / f"{PREFIX}_{name}"
        entry = (
            json.loads(stem.with_suffix(".json").read_text()) if stem.with_suffix(".json").is_file() else {}
        )
        if entry.get("ids") != ids:
            entry = {}
        arrays = (
            dict(np.load(stem.with_suffix(".npz"))) if entry and stem.with_suffix(".npz").is_file() else {}
        )
        direct = "fbp" if _corpus(modality) == "ct" else "zero-filled"  # real_anatomy.py's direct row
        x_fbp, _ = _solve(op, y, direct, {})
        p_fbp, s_fbp = _scores(x, x_fbp)
        k = int(np.argsort(p_fbp)[len(ids) // 2])  # the figure's slice: real_anatomy.py's rule
        entry.update(
            {
                "modality": modality,
                "size": size,
                "param": param,
                "ids": ids,
                "n": len(ids),
                "sigma_mean": float(sigma.mean()),
                "command": " ".join(sys.argv),
                "git": git_revision(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "direct": {
                    "method": direct,
                    "psnr": _summary(p_fbp),
                    "ssim": _summary(s_fbp),
                    "psnr_each": p_fbp,
                },
                "figure_slice": ids[k],
            }
        )
        entry.setdefault("methods", {})
        entry.setdefault("oracle", {})
        arrays["truth"] = x[k, 0].numpy()

        def save(entry=entry, arrays=arrays, stem=stem):
            np.savez_compressed(stem.with_suffix(".npz"), **arrays)
            atomic_write_text(stem.with_suffix(".json"), json.dumps(entry, indent=1))

        for label in labels:
            if label in subset_labels:  # expensive rows: on --dip-slices / --disc-slices slices only
                dip = label == "dip-tv"
                sel = _dip_indices(len(ids), k, args.dip_slices if dip else args.disc_slices)
                if dip:
                    method, options, extra = "dip-tv", dict(args.dip_options), {}
                else:
                    method, options = _family(label.removesuffix("-discrepancy"), args, op)
                    options = dict(options, lam="discrepancy")
                    extra = {"weight": {"rule": "lam='discrepancy' (automatic, Morozov, tau 1)"}}
                load0 = os.getloadavg()[0]
                # per-slice results kept in the JSON, so an interrupted run resumes where it stopped
                part = entry.setdefault("partial", {}).get(label, {})
                if part.get("options") != {k_: str(v) for k_, v in options.items()}:
                    part = {"options": {k_: str(v) for k_, v in options.items()}, "slices": {}}
                entry["partial"][label] = part

                for i in sel:
                    if ids[i] in part["slices"] and (i != k or label in arrays):
                        continue
                    opts = options if dip else dict(options, noise_std=sigma[i : i + 1])
                    xr, s = _solve(op, y[i : i + 1], method, opts)
                    (pi,), (si,) = _scores(x[i : i + 1], xr)
                    part["slices"][ids[i]] = {
                        "psnr": pi,
                        "ssim": si,
                        "seconds": s,
                        "load_avg_1min": os.getloadavg()[0],
                    }
                    if i == k:
                        arrays[label] = xr[0, 0].numpy()
                    _partial_row(entry, label, ids, sel, method, options, load0, extra)
                    save()
                    print(f"[{name}] {label} {ids[i]}: {pi:.2f} dB ({s:.0f} s)", flush=True)
                p, sec = _partial_row(entry, label, ids, sel, method, options, load0, extra)
                save()
                print(f"[{name}] {label}: {np.mean(p):.2f} dB over n={len(sel)} ({sec / len(sel):.0f} s/img)")
                continue
            method, options = _family(label, args, op)
            cal_name = name if name in cal else CALIBRATION_OF.get(name)  # as real_anatomy.py: the nearest
            f_train = cal[cal_name][label]["factor"] if cal_name in cal and label in cal[cal_name] else None
            f_auto = calibration_factor(label, options.get("weights"))  # the library's factor for this file
            runs: dict[float, list[float]] = {}
            load0 = os.getloadavg()[0]
            xr, sec = _solve(op, y, method, dict(options, lam="noise", noise_std=sigma))
            p, s_ = _scores(x, xr)
            runs[f_auto] = p
            auto = {"rule": "lam='noise' (automatic)", "factor": f_auto}
            entry["methods"][f"{label}-noise"] = _row(
                method, dict(options, lam="noise"), p, s_, sec, load0, weight=auto
            )
            arrays[f"{label}-noise"] = xr[k, 0].numpy()
            print(f"[{name}] {label}-noise (x{f_auto:g} MAP): {np.mean(p):.2f} dB ({sec / len(p):.1f} s/img)")
            if f_train is None:
                print(
                    f"[{name}] {label}: no calibration on training slices; run `calibrate` (train row skipped)"
                )
            elif np.isclose(f_train, f_auto):  # the weight chosen on training slices is the automatic one
                row = dict(entry["methods"][f"{label}-noise"])
                row["weight"] = {
                    "rule": "factor x MAP weight, chosen on TRAIN slices (= lam='noise')",
                    "factor": f_train,
                }
                entry["methods"][label] = row
                arrays[label] = arrays[f"{label}-noise"]
            else:
                load0 = os.getloadavg()[0]
                xr, sec, lam = _solve_factor(op, y, sigma, label, args, f_train)
                p, s_ = _scores(x, xr)
                runs[f_train] = p
                train = {"rule": "factor x MAP weight, chosen on TRAIN slices", "factor": f_train}
                entry["methods"][label] = _row(method, options, p, s_, sec, load0, weight=train, lam_each=lam)
                arrays[label] = xr[k, 0].numpy()
                print(
                    f"[{name}] {label} (x{f_train:g} MAP, train): {np.mean(p):.2f} dB ({sec / len(p):.1f} s/img)"
                )
            save()
            if args.oracle is not None and (not args.oracle or label in args.oracle):
                for g in ORACLE_FACTORS:
                    f = f_auto * g
                    if any(np.isclose(f, r) for r in runs):
                        continue
                    xr, _, _ = _solve_factor(op, y, sigma, label, args, f)
                    runs[f] = _scores(x, xr)[0]
                    print(f"[{name}] {label} oracle x{f:g} MAP: {np.mean(runs[f]):.2f} dB")
                factors = sorted(runs)
                table = np.asarray([runs[f] for f in factors])  # (F, N)
                best = table.max(0)
                rows = [lab for lab in (label, f"{label}-noise") if lab in entry["methods"]]
                entry["oracle"][label] = {
                    "factors_of_map": factors,
                    "psnr_mean_each_factor": table.mean(1).tolist(),
                    "psnr": _summary(best),
                    "best_each": best.tolist(),
                    "best_factor_each": [factors[j] for j in table.argmax(0)],
                    "gap_db": {r: float(np.mean(best - entry["methods"][r]["psnr_each"])) for r in rows},
                    "what": "best per slice of these weights against the validation truth: measures the gap only",
                }
                print(
                    f"[{name}] {label} oracle: {best.mean():.2f} dB, gaps {entry['oracle'][label]['gap_db']}"
                )
                save()
        save()
    return 0


# ------------------------------------------------------------------------------------------ diagnose
def _diagnose_slice(op, flow, x_true, y, x_tv, lam: float, n_iter: int) -> dict:
    """PSNR, MAP objective J and NLL per pixel of the images ``diagnose`` compares, for one slice."""
    from medrecon.solvers.variational import minimize

    pre, d = flow.preprocess, x_true.shape[-1] * x_true.shape[-2]

    def objective(u):
        r = op(pre.inverse(u)) - y
        return r.pow(2).sum() / op.norm_squared() + lam / d * flow.neg_log_prob_preprocessed(u).sum()

    def stats(xi):
        with torch.no_grad():
            u = pre(xi.clamp(0, 1))[0]
            nll = float(flow.neg_log_prob_preprocessed(u).sum()) / d
            return {"psnr": _scores(x_true, xi)[0][0], "J": float(objective(u)), "nll_per_pixel": nll}

    opts = {"weights": str(FLOW[modality_of(op)]), "mode": "map", "lam": lam}
    out = {"tv": stats(x_tv), "truth": dict(stats(x_true), psnr=None)}
    for key, n in (("fbp_start", n_iter), ("fbp_start_4x", 4 * n_iter)):
        out[key] = stats(_solve(op, y, "flow", dict(opts, n_iter=n))[0])
    with torch.no_grad():
        u0 = pre(x_true.clamp(0, 1))[0]
    u = minimize(objective, u0.contiguous(), method="adam", n_iter=n_iter, lr=0.05)
    with torch.no_grad():
        out["truth_start"] = stats(pre.inverse(u))
    return out


def diagnose(args) -> int:
    """Why flow MAP loses to TV: optimisation or model? On ``--n-diag`` validation slices (spaced evenly)
    at the train-chosen weight, the MAP objective ``J = ||A x - y||^2 / ||A||^2 + lam NLL(x) / D`` is
    minimised from FBP (the method, ``--n-iter`` steps and 4x as many) and from the ground truth. If
    the truth start drifts to a lower PSNR at a lower J, the prior's minimiser is not the anatomy (model);
    if the long FBP start reaches the truth start's J and PSNR, the steps are the limit (optimisation).
    Also the flow's NLL per pixel of the truth, the TV image and the MAP results. Measures, chooses nothing.
    """
    from medrecon.priors.base import load_weights
    from medrecon.priors.flow import DEFAULT_WEIGHTS, MultiScaleFlow

    cal = json.loads(Path(args.calibration).read_text())["settings"]
    out_path = Path(args.out_dir) / f"{PREFIX}_diagnosis.json"
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for name, modality, size, param in _settings(args):
        corpus = load_corpus(modality, "validation", size=size, slices=args.n_val)
        sel = [int(i) for i in np.linspace(0, len(corpus.ids) - 1, args.n_diag).round()]
        x, ids = corpus.images[sel], [corpus.ids[i] for i in sel]
        op = _operator(modality, size, param)
        y, sigma = _measure(op, x, ids)
        flow = load_weights(
            str(FLOW["ct"]),
            MultiScaleFlow,
            image_shape=(1, size, size),
            defaults=DEFAULT_WEIGHTS,
            kind="flow",
        ).to(op.real_dtype)
        f = cal[name]["flow-map"]["factor"]
        lam = (f * _map_weight("flow-map", op, sigma, {})).tolist()
        x_tv, _ = _solve(op, y, "tv", {"lam": "discrepancy", "n_iter": 200, "noise_std": sigma})
        rows = {k: [] for k in ("tv", "fbp_start", "fbp_start_4x", "truth_start", "truth")}
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        for i in range(len(ids)):
            one = _diagnose_slice(op, flow, x[i : i + 1], y[i : i + 1], x_tv[i : i + 1], lam[i], args.n_iter)
            for k, v in one.items():
                rows[k].append(v)
            print(f"[diagnose] {name} {ids[i]}: " + ", ".join(f"{k} {v}" for k, v in one.items()), flush=True)
        out[name] = {
            "ids": ids,
            "factor_of_map": f,
            "n_iter": args.n_iter,
            "mean": {
                k: {m: float(np.mean([r[m] for r in v])) for m in v[0] if v[0][m] is not None}
                for k, v in rows.items()
            },
            "each": rows,
            "seconds": time.perf_counter() - t0,
            "load_avg_1min": load0,
            "what": diagnose.__doc__.split("\n\n")[0],
        }
        print(f"[diagnose] {name}: {json.dumps(out[name]['mean'])}", flush=True)
        atomic_write_text(out_path, json.dumps(out, indent=1))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["calibrate", "evaluate", "diagnose"])
    ap.add_argument(
        "--n-val", type=int, default=16, help="validation slices (spaced evenly), as real_anatomy.py"
    )
    ap.add_argument("--n-cal", type=int, default=3, help="training slices used by calibrate")
    ap.add_argument("--n-iter", type=int, default=100, help="Adam steps of vae-range and flow (both modes)")
    ap.add_argument(
        "--soft-iter", type=int, default=20, help="outer iterations of vae-soft (10 z-steps each)"
    )
    ap.add_argument(
        "--dip-slices", type=int, default=4, help="validation slices for dip-tv (about 130 s each)"
    )
    ap.add_argument(
        "--disc-slices", type=int, default=4, help="validation slices for the lam='discrepancy' rows"
    )
    ap.add_argument("--dip-iter", type=int, default=None, help="dip-tv steps (default: the library's)")
    ap.add_argument("--n-diag", type=int, default=4, help="validation slices of diagnose")
    ap.add_argument(
        "--oracle",
        nargs="*",
        default=None,
        help="gap to the best of the auto weight x1/3, x1, x3 (these methods; all if none)",
    )
    ap.add_argument("--only", nargs="*", help="settings (e.g. ct128_a30)")
    ap.add_argument(
        "--factors",
        nargs="*",
        type=float,
        help="calibrate: these factors instead of GRID, added to the setting's existing sweep (same slices)",
    )
    ap.add_argument(
        "--mri",
        action="store_true",
        help="add the single-coil MRI settings (vae_mri128 / flow_mri128 priors)",
    )
    ap.add_argument(
        "--extra",
        action="store_true",
        help="add real_anatomy.py's multi-coil MRI and Poisson CT settings (train factors of CALIBRATION_OF)",
    )
    ap.add_argument(
        "--methods",
        nargs="*",
        help=f"among {', '.join(LEARNED)}, dip-tv, vae-soft-discrepancy, flow-map-discrepancy",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 slices, a few steps, results in --out-dir"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument(
        "--calibration", default=None, help="default: <out-dir>/real_anatomy_extra_calibration.json"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n_val, args.n_cal, args.n_iter, args.soft_iter, args.dip_slices, args.disc_slices = (
            2,
            1,
            5,
            2,
            1,
            1,
        )
        args.dip_iter = args.dip_iter or 5
        if args.out_dir == str(RESULTS):
            args.out_dir = str(RESULTS / "quick")
    if args.calibration is None:
        args.calibration = str(Path(args.out_dir) / f"{PREFIX}_calibration.json")
    args.dip_options = {"n_iter": args.dip_iter} if args.dip_iter else {}
    return {"calibrate": calibrate, "evaluate": evaluate, "diagnose": diagnose}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
