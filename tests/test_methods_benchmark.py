"""benchmarks/methods.py: DIP on a subset of the images (``--dip-images``), the per-row checkpoint and the
deepinv ratio table (without deepinv: the peer's answer is written by hand)."""

from __future__ import annotations

import json

import pytest
from bench_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("methods")


def test_dip_rows_use_dip_images_and_the_file_is_complete(bench, tmp_path):
    out = tmp_path / "m.json"
    argv = [
        "--sizes",
        "32",
        "--batches",
        "1",
        "--methods",
        "fbp",
        "dip",
        "--images",
        "2",
        "--dip-images",
        "1",
    ]
    argv += ["--dip-steps", "2", "--dip-max-size", "32", "--threads", "1", "--no-deepinv", "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    images = {r["method"]: r["images"] for r in result["rows"]}
    assert images == {"fbp": 2, "dip": 1}
    assert result["complete"] is True and result["dip_images"] == 1
    assert result["command"] == "python benchmarks/methods.py " + " ".join(argv)
    assert all("load_before" in r and "load_after" in r for r in result["rows"])


def test_checkpoint_after_every_row(bench):
    seen = []
    result = bench.run(
        [32], [1, 2], ["fbp"], 2, 2, None, "1", 32, checkpoint=lambda r: seen.append(len(r["rows"]))
    )
    assert seen == [1, 2] and len(result["rows"]) == 2


def test_dip_images_above_images_is_refused(bench):
    with pytest.raises(ValueError, match="dip_images"):
        bench.run([32], [1], ["dip"], 1, 2, None, "1", 32, dip_images=2)


def test_ratio_table_puts_deepinv_dip_beside_dip_and_dip_tv(bench):
    def row(method, seconds, psnr):
        return {
            "size": 256,
            "batch": 1,
            "method": method,
            "images": 1,
            "seconds_per_image": seconds,
            "psnr_mean": psnr,
            "load_before": "1 1 1",
        }

    peer = {
        "size": 256,
        "tv": [{"seconds": 40.0, "reached": True}, {"seconds": 60.0, "reached": False}],
        "dip": [{"seconds": 50.0, "psnr": 20.0}],
    }
    result = {"rows": [row("tv", 10.0, 31.0), row("dip", 100.0, 22.0), row("dip-tv", 200.0, 23.0)]}
    result["deepinv"] = [peer]
    last = bench._ratio_table(result).splitlines()[-1]
    assert (
        last
        == "| 256 | 50.00 (1/2 reached) | 10.00 | 5.00 | 50.0 (20.00) | 100.0 (22.00) | 0.50 | 200.0 (23.00) | 0.25 |"
    )
