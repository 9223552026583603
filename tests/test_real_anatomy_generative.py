"""benchmarks/real_anatomy_generative.py --quick: its JSON agrees with its figure arrays and its own rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bench_scripts import load_benchmark

from medrecon.data import real
from medrecon.metrics import psnr

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_anatomy_generative.py"

pytestmark = pytest.mark.skipif(
    not real.is_available() or not (SCRIPT.parents[1] / "data/weights/flow_ct128.pt").is_file(),
    reason="real scans not fetched (`make data`) or no flow_ct128 weights",
)


def _module():
    return load_benchmark("real_anatomy_generative")


@pytest.mark.slow
def test_quick_run_json_matches_arrays_calibration_and_oracle(tmp_path):
    torch.set_num_threads(1)
    mod = _module()
    common = ["--quick", "--out-dir", str(tmp_path), "--only", "ct128_a30", "--methods", "flow-map"]
    assert mod.main(["calibrate", *common]) == 0
    assert mod.main(["evaluate", *common, "--oracle"]) == 0
    cal = json.loads((tmp_path / "real_anatomy_extra_calibration.json").read_text())["settings"]["ct128_a30"]
    entry = json.loads((tmp_path / "real_anatomy_extra_ct128_a30.json").read_text())
    arrays = np.load(tmp_path / "real_anatomy_extra_ct128_a30.npz")

    # the calibration keeps the best factor of its (training) sweep, and the train row uses it
    sweep = cal["flow-map"]["sweep"]
    assert cal["flow-map"]["factor"] == max(sweep, key=lambda r: r["psnr"])["factor"]
    assert all(i.split(":")[0] != "lung1" for i in cal["flow-map"]["ids"])  # never the validation subject
    row = entry["methods"]["flow-map"]
    assert row["weight"]["factor"] == cal["flow-map"]["factor"]
    # lam_each is factor x the MAP weight (2 D sigma^2 / ||A||^2) of each slice
    op = mod._operator("ct", 128, 30)
    _, sigma = mod._measure(op, mod.load_corpus("ct", "validation", size=128, slices=2).images, entry["ids"])
    lam_map = mod._map_weight("flow-map", op, sigma, {})
    np.testing.assert_allclose(
        np.asarray(row["lam_each"]) / lam_map.numpy(), row["weight"]["factor"], rtol=1e-6
    )

    # the figure's slice is the median by FBP PSNR, and the arrays score as the JSON says
    direct = entry["direct"]["psnr_each"]
    k = int(np.argsort(direct)[len(direct) // 2])
    assert entry["figure_slice"] == entry["ids"][k]
    for label in ("flow-map", "flow-map-noise"):
        m = entry["methods"][label]
        assert len(m["psnr_each"]) == entry["n"] == 2
        assert m["psnr"]["mean"] == pytest.approx(np.mean(m["psnr_each"]))
        p = psnr(arrays["truth"], np.clip(arrays[label], 0, 1), data_range=1.0)
        assert p == pytest.approx(m["psnr_each"][k], abs=1e-4)
    # the oracle is the per-slice best of its weights: never below a row it includes
    o = entry["oracle"]["flow-map"]
    assert min(o["gap_db"].values()) >= -1e-9
    assert o["psnr"]["mean"] >= max(entry["methods"][lab]["psnr"]["mean"] for lab in o["gap_db"]) - 1e-9
