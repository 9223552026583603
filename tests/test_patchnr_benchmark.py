"""benchmarks/real_anatomy.py helpers: the Poisson noise std estimate and ``report``'s merge of extra files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bench_scripts import load_benchmark

from medrecon.data.lodopab import MU_MAX, PHOTONS_PER_BIN, poisson_log_noise


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("real_anatomy")


@pytest.mark.parametrize("level", [5.0, 20.0])
def test_poisson_sigma_matches_realised_noise(bench, level):
    # uniform line integrals: the estimate from the noisy data is the realised std (delta method)
    size = 128
    clean = torch.full((2, 1, 30, 400), level, dtype=torch.float64)
    y = poisson_log_noise(clean, pixel_size_m=0.26 / size, generator=torch.Generator().manual_seed(0))
    est = bench.poisson_sigma(y, size)
    real = (y - clean).flatten(1).std(1)
    assert torch.allclose(est, real, rtol=0.05)
    s = MU_MAX * 0.26 / size
    assert torch.allclose(
        est, torch.full_like(est, (np.exp(s * level) / (PHOTONS_PER_BIN * s**2)) ** 0.5), rtol=0.05
    )


def _entry(ids, methods):
    return {
        "n": len(ids),
        "ids": ids,
        "figure_slice": ids[0],
        "methods": {
            lab: {
                "psnr": {"mean": p, "std": 0.0},
                "ssim": {"mean": 0.5, "std": 0.0},
                "psnr_each": [p] * len(ids),
                "seconds_per_image": 1.0,
                "load_avg_1min": 2.0,
            }
            for lab, p in methods.items()
        },
    }


def test_report_merges_extra_files(bench, tmp_path):
    out = tmp_path / "real_anatomy.json"
    ids = ["a:0", "a:1"]
    img = np.zeros((4, 4), dtype=np.float32)
    for name, extra_ids in (("ct128_a30", ids), ("ct128_a10", ["b:0", "b:1"])):
        (tmp_path / f"real_anatomy_{name}.json").write_text(
            json.dumps(_entry(ids, {"direct": 20.0, "patchnr": 30.0}))
        )
        np.savez(tmp_path / f"real_anatomy_{name}.npz", truth=img, direct=img, patchnr=img)
        extra = _entry(extra_ids, {"direct": 99.0, "flow-map": 25.0})
        (tmp_path / f"real_anatomy_extra_{name}.json").write_text(json.dumps(extra))
        np.savez(
            tmp_path / f"real_anatomy_extra_{name}.npz", truth=img, direct=img, **{"flow-map": img + 0.5}
        )
    assert bench.main(["report", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())["settings"]
    a30, a10 = merged["ct128_a30"]["methods"], merged["ct128_a10"]["methods"]
    assert list(a30) == ["direct", "patchnr", "flow-map"]
    assert a30["direct"]["psnr"]["mean"] == 20.0  # this script's row kept
    assert a30["flow-map"]["source"] == "real_anatomy_extra_ct128_a30.json"
    assert "flow-map" not in a10  # other slices: not merged
    table = out.with_suffix(".md").read_text()
    assert "| ct128_a30 (n=2) | flow-map | 25.00" in table
    assert out.with_suffix(".png").is_file()


def _sweep_entry(setting, modality, sigma, best_lam, norm_squared=1.0):
    """A noise-sweep entry whose slice i peaks (a parabola in log lam, 40 dB) at ``best_lam[i]``."""
    grid = np.exp(np.linspace(np.log(1e-9), np.log(1e-3), 49))
    psnr = 40.0 - (np.log(grid)[:, None] - np.log(best_lam)[None, :]) ** 2
    return {
        "setting": setting,
        "modality": modality,
        "ids": [f"s:{i}" for i in range(len(sigma))],
        "sigma": list(sigma),
        "norm_squared": norm_squared,
        "sweep": [{"lam": float(g), "psnr_each": p.tolist()} for g, p in zip(grid, psnr)],
    }


@pytest.mark.parametrize(("p", "c"), [(0.0, 1e-6), (1.0, 3e-4), (2.0, 0.3)])
def test_fit_noise_rule_recovers_the_exponent(bench, p, c):
    # the best weight of each slice is c (sigma / ||A||)^p over two settings (||A||^2 1 and 4): the fit
    # finds that p and c, and its gap to the per-slice best is ~0
    sigma = np.array([0.5e-3, 1e-3, 1.5e-3, 2e-3])
    entries = [
        _sweep_entry(name, "mri", sigma, c * (sigma / np.sqrt(n2)) ** p, n2)
        for name, n2 in (("x4", 1.0), ("x8", 4.0))
    ]
    fit = bench._fit_noise_rule(entries)
    assert fit["p"] == p
    assert fit["c"] == pytest.approx(c, rel=0.1)
    assert all(abs(s["gap_db"]) < 0.05 for s in fit["by_p"][str(p)]["settings"].values())
    other = fit["by_p"][str(2.0 if p == 0.0 else 0.0)]  # the wrong exponent loses on these slices
    assert other["mean_psnr"] < fit["mean_psnr"] - 0.1


def test_evaluate_keeps_the_other_rows(bench, tmp_path):
    # a run of some methods (--methods) keeps the earlier rows and oracle, with the gaps of the new rows
    stem = tmp_path / "real_anatomy_x"
    ids = ["a:0", "a:1"]
    old = _entry(ids, {"direct": 20.0, "tv-discrepancy": 25.0, "patchnr": 30.0, "patchnr-noise": 29.0})
    old["oracle"] = {"psnr": {"mean": 31.0, "std": 0.0}, "gap_db": {"patchnr": 1.0, "patchnr-noise": 2.0}}
    stem.with_suffix(".json").write_text(json.dumps(old))
    np.savez(stem.with_suffix(".npz"), truth=np.zeros(2), direct=np.ones(2))
    args = SimpleNamespace(methods=["patchnr-noise"])
    kept, arrays = bench._earlier_rows(args, stem, ids)
    assert list(kept["methods"]) == list(old["methods"]) and list(arrays) == ["truth", "direct"]
    assert bench._earlier_rows(args, stem, ["b:0", "b:1"]) == (None, {})  # other slices: dropped
    assert bench._earlier_rows(SimpleNamespace(methods=None), stem, ids) == (None, {})  # a full run
    rows = {**old["methods"], "patchnr-noise": {**old["methods"]["patchnr-noise"], "psnr_each": [30.5, 30.5]}}
    gaps = bench._regap(old["oracle"], rows)["gap_db"]
    assert gaps == pytest.approx({"patchnr": 1.0, "patchnr-noise": 0.5})


def test_bundled_noise_rule_is_the_train_fit(bench):
    # NOISE_RULE of the bundled weights is what the recorded TRAIN sweeps give: the MRI exponent and
    # constant refitted from the stored per-slice PSNRs (q = 0 is the best exponent there, if only by
    # 0.04 dB over the MAP exponent since nonneg), CT's c from calibrate's fit with q = 2
    from medrecon.methods.patchnr import NOISE_RULE

    sweep = json.loads(bench.NOISE_SWEEP.read_text())
    entries = [e for e in sweep["settings"].values() if e["modality"] == "mri"]
    assert {e["setting"] for e in entries} == {"mri128_4x", "mri128_8x"}
    assert all("colin27" in i for e in entries for i in e["ids"])  # train subject only
    fit = bench._fit_noise_rule(entries)
    c, q = NOISE_RULE["mri"]
    assert q == fit["p"] == 0.0 and c == pytest.approx(fit["c"], rel=0.1)
    assert all(v["mean_psnr"] <= fit["mean_psnr"] for v in fit["by_p"].values())
    cal = json.loads(bench.CALIBRATION.read_text())
    assert NOISE_RULE["ct"] == (pytest.approx(cal["noise_rule"]["ct"]["c"], rel=0.05), 2.0)
