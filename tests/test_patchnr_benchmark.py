"""benchmarks/real_anatomy.py helpers: the Poisson noise std estimate and ``report``'s merge of extra files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medrecon.data.lodopab import MU_MAX, PHOTONS_PER_BIN, poisson_log_noise

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_anatomy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_anatomy", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
