"""fastMRI HDF5 layout: writer, dataset, leaderboard output, clear errors on broken files."""

import pickle
import xml.etree.ElementTree as etree

import h5py
import numpy as np
import pytest
import torch

from medrecon.data.fastmri import (
    FastMRIDataError,
    FastMRISliceDataset,
    apply_mask,
    read_metadata,
    save_reconstructions,
    write_fastmri_h5,
)
from medrecon.operators.coils import simulate_multicoil
from medrecon.operators.masks import make_mask, stable_seed


def _volume(slices, shape, rng):
    return torch.rand((slices, 1, *shape), generator=rng, dtype=torch.float64)


@pytest.fixture(scope="module")
def tiny_fastmri_dir(tmp_path_factory):
    rng = torch.Generator().manual_seed(0)
    root = tmp_path_factory.mktemp("fastmri")
    k_multi, _ = simulate_multicoil(_volume(3, (12, 10), rng).float(), 4)  # (3, 1, 4, 12, 10)
    write_fastmri_h5(root / "file_multi.h5", k_multi[:, 0], recon_size=(8, 8), acquisition="AXT2")
    k_single, _ = simulate_multicoil(_volume(2, (12, 10), rng).float(), 1)
    write_fastmri_h5(root / "file_single.h5", k_single[:, 0, 0], recon_size=(8, 8))
    return root


def test_writer_layout_matches_fastmri(tiny_fastmri_dir):
    from fastmri.data.mri_data import SliceDataset

    path = tiny_fastmri_dir / "file_multi.h5"
    with h5py.File(path) as f:
        assert f["kspace"].shape == (3, 4, 12, 10) and f["kspace"].dtype == np.complex64
        assert f["reconstruction_rss"].shape == (3, 8, 8) and f["reconstruction_rss"].dtype == np.float32
        assert f.attrs["acquisition"] == "AXT2"
        assert f.attrs["max"] == pytest.approx(float(f["reconstruction_rss"][()].max()))
        assert f.attrs["norm"] == pytest.approx(float(np.linalg.norm(f["reconstruction_rss"][()])))
        assert "patient_id" in f.attrs
    # fastMRI's own dataset reads our file and finds the same sizes
    ds = SliceDataset(tiny_fastmri_dir, challenge="multicoil", transform=None, use_dataset_cache=False)
    kspace, mask, target, attrs, fname, slice_num = [s for s in ds if s[4] == "file_multi.h5"][0]
    assert kspace.shape == (4, 12, 10) and target.shape == (8, 8)
    assert attrs["recon_size"] == (8, 8, 1) and attrs["encoding_size"] == (12, 10, 1)
    assert attrs["padding_left"] == 0 and attrs["padding_right"] == 10


def test_dataset_reads_both_challenges(tiny_fastmri_dir):
    ds = FastMRISliceDataset(tiny_fastmri_dir)
    assert len(ds) == 5
    kinds = {ds.files[fi].challenge for fi, _ in ds._index}
    assert kinds == {"singlecoil", "multicoil"}
    sample = ds[0]
    assert sample.fname == "file_multi.h5" and sample.kspace.shape == (4, 12, 10)
    assert sample.kspace.dtype == torch.complex64 and sample.target.shape == (8, 8)
    assert sample.recon_size == (8, 8) and sample.max_value == pytest.approx(ds.files[0].attrs["max"])
    single = ds[4]
    assert single.kspace.shape == (1, 12, 10) and single.fname == "file_single.h5"
    # the stored target is the centre crop of the RSS of the inverse FFT
    from medrecon.data.fastmri import center_crop
    from medrecon.operators.mri import ifft2c

    rss = ifft2c(sample.kspace).abs().pow(2).sum(0).sqrt()
    torch.testing.assert_close(center_crop(rss, (8, 8)), sample.target)
    assert len(FastMRISliceDataset(tiny_fastmri_dir, challenge="multicoil")) == 3  # a directory: selects
    with pytest.raises(
        FastMRIDataError, match="file_single.h5: a singlecoil file, but the dataset is multicoil"
    ):
        FastMRISliceDataset([tiny_fastmri_dir / "file_single.h5"], challenge="multicoil")


def test_validation_masks_fixed_training_masks_random(tiny_fastmri_dir):
    val = FastMRISliceDataset(tiny_fastmri_dir, mask_kind="random", acceleration=4, center_fraction=0.2)
    a, b = val[1], val[1]
    torch.testing.assert_close(a.mask, b.mask)
    torch.testing.assert_close(
        a.mask, make_mask("random", (12, 10), 4, 0.2, seed=stable_seed("file_multi.h5", 1))
    )
    torch.testing.assert_close(a.masked_kspace, a.kspace * a.mask)
    train = FastMRISliceDataset(
        tiny_fastmri_dir,
        mask_kind="random",
        acceleration=4,
        center_fraction=0.2,
        fixed_masks=False,
        generator=torch.Generator().manual_seed(0),
    )
    masks = {tuple(train[1].mask[0].tolist()) for _ in range(8)}
    assert len(masks) > 1


def test_filters_and_sample_rate(tiny_fastmri_dir):
    ds = FastMRISliceDataset(tiny_fastmri_dir, slice_filter=lambda meta, s: s >= 1)
    assert len(ds) == 3
    small = FastMRISliceDataset(tiny_fastmri_dir, sample_rate=0.5)
    again = FastMRISliceDataset(tiny_fastmri_dir, sample_rate=0.5)
    assert [m.path for m in small.files] == [m.path for m in again.files]
    assert len(small.files) <= 2


def test_dataloader_workers_and_pickling(tiny_fastmri_dir):
    ds = FastMRISliceDataset(
        tiny_fastmri_dir, challenge="multicoil", mask_kind="equispaced", acceleration=2, center_fraction=0.2
    )
    pickle.loads(pickle.dumps(ds))  # nothing unpicklable (no open handles)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = [s.slice_idx for s in loader]
    assert sorted(got) == [0, 1, 2]


def test_save_reconstructions(tmp_path):
    vols = {"file_a.h5": np.random.default_rng(0).random((2, 5, 4)), "file_b": torch.ones(1, 5, 4)}
    written = save_reconstructions(vols, tmp_path / "out")
    assert [p.name for p in written] == ["file_a.h5", "file_b.h5"]
    with h5py.File(tmp_path / "out" / "file_a.h5") as f:
        assert list(f.keys()) == ["reconstruction"] and f["reconstruction"].dtype == np.float32
        np.testing.assert_allclose(f["reconstruction"][()], vols["file_a.h5"].astype(np.float32))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError, match="complex"):
        save_reconstructions({"x.h5": np.ones((1, 2, 2), complex)}, tmp_path)
    with pytest.raises(ValueError, match=r"\(slices, H, W\)"):
        save_reconstructions({"x.h5": np.ones((2, 2))}, tmp_path)


# ---------------------------------------------------------------- broken files
def _good(path):
    k = (np.ones((2, 3, 8, 6)) + 1j).astype(np.complex64)
    return write_fastmri_h5(path, k, recon_size=(6, 6))


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return path


BROKEN = {
    "missing-kspace": (lambda f: f.__delitem__("kspace"), "missing dataset 'kspace'"),
    "kspace-2d": (
        lambda f: (f.__delitem__("kspace"), f.create_dataset("kspace", data=np.ones((8, 6), np.complex64))),
        r"'kspace' must be \(slices, H, W\)",
    ),
    "kspace-real": (
        lambda f: (f.__delitem__("kspace"), f.create_dataset("kspace", data=np.ones((2, 3, 8, 6)))),
        "must be complex",
    ),
    "missing-header": (lambda f: f.__delitem__("ismrmrd_header"), "missing dataset 'ismrmrd_header'"),
    "bad-header": (
        lambda f: (
            f.__delitem__("ismrmrd_header"),
            f.create_dataset("ismrmrd_header", data=np.bytes_(b"<a>")),
        ),
        "bad ismrmrd_header",
    ),
    "target-wrong-slices": (
        lambda f: (
            f.__delitem__("reconstruction_rss"),
            f.create_dataset("reconstruction_rss", data=np.ones((5, 6, 6), np.float32)),
        ),
        r"'reconstruction_rss' must be \(slices=2",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_file_errors_name_the_file(case, tmp_path):
    edit, message = BROKEN[case]
    path = _edit(_good(tmp_path / f"{case}.h5"), edit)
    with pytest.raises(FastMRIDataError, match=message) as info:
        FastMRISliceDataset([path])
    assert f"{case}.h5" in str(info.value)


def test_header_without_recon_size(tmp_path):
    path = _good(tmp_path / "norecon.h5")
    with h5py.File(path, "a") as f:
        root = etree.fromstring(f["ismrmrd_header"][()])
        ns = "{http://www.ismrm.org/ISMRMRD}"
        enc = root.find(f"{ns}encoding")
        enc.remove(enc.find(f"{ns}reconSpace"))
        del f["ismrmrd_header"]
        f.create_dataset("ismrmrd_header", data=np.bytes_(etree.tostring(root)))
    with pytest.raises(FastMRIDataError, match="norecon.h5: bad ismrmrd_header.*reconSpace"):
        read_metadata(path)


def test_truncated_and_missing_files(tmp_path):
    path = _good(tmp_path / "trunc.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(FastMRIDataError, match="trunc.h5: not a readable HDF5 file"):
        FastMRISliceDataset([path])
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FastMRIDataError, match="garbage.h5: not a readable HDF5"):
        read_metadata(tmp_path / "garbage.h5")
    with pytest.raises(FastMRIDataError, match="nope.h5: no such file"):
        read_metadata(tmp_path / "nope.h5")
    with pytest.raises(FastMRIDataError, match="no .h5 files"):
        FastMRISliceDataset(
            tmp_path / "empty_dir_that_is_a_dir" if (tmp_path / "e").mkdir() else tmp_path / "e"
        )


def test_mask_that_does_not_fit(tmp_path):
    path = _good(tmp_path / "fit.h5")
    ds = FastMRISliceDataset([path], mask=torch.ones(7))
    with pytest.raises(
        FastMRIDataError, match=r"fit.h5: mask of shape \(7,\) does not fit k-space of shape \(3, 8, 6\)"
    ):
        ds[0]
    ok = FastMRISliceDataset([path], mask=torch.tensor([0, 1, 1, 1, 0, 1.0]))
    assert ok[0].mask.shape == (8, 6) and float(ok[0].masked_kspace[..., 0].abs().max()) == 0.0
    with pytest.raises(FastMRIDataError, match="does not fit"):
        apply_mask(torch.ones(3, 8, 6, dtype=torch.complex64), torch.ones(8, 5), fname="x.h5")


def test_a_file_mask_is_used_and_a_wrong_one_refused(tmp_path):
    """fastMRI test files hold 'mask' (W,): the dataset applies it; a mask of another shape is an error."""
    import h5py

    path = write_fastmri_h5(tmp_path / "m.h5", torch.ones(2, 3, 8, 6, dtype=torch.complex64))
    line = np.array([1, 0, 1, 1, 0, 1], dtype=np.float32)
    with h5py.File(path, "a") as f:
        f.create_dataset("mask", data=line)
    s = FastMRISliceDataset([path])[1]
    torch.testing.assert_close(s.mask, torch.from_numpy(line).expand(8, 6))
    assert (
        float(s.masked_kspace[..., 1].abs().max()) == 0.0
        and float(s.masked_kspace[..., 0].abs().min()) == 1.0
    )
    with h5py.File(path, "a") as f:
        del f["mask"]
        f.create_dataset("mask", data=np.ones((8, 6), dtype=np.float32))
    with pytest.raises(FastMRIDataError, match=r"m.h5: 'mask' must be \(W,\) = \(6,\).*got shape \(8, 6\)"):
        FastMRISliceDataset([path])


def test_cli_mri_outputs_are_fastmri_leaderboard_files_that_fastmri_evaluate_scores_as_metrics_csv(tmp_path):
    """``medrecon reconstruct`` on the bundled fastMRI sample writes one file per volume on the target's
    scale; fastMRI's own metric functions on those files give the numbers of metrics.csv (per slice),
    and its ``evaluate`` on the output folder against the data folder gives metrics_volumes.csv."""
    import argparse
    import csv
    from pathlib import Path

    import h5py
    import yaml
    from fastmri import evaluate as fm

    from medrecon.cli.main import main

    data = Path(__file__).resolve().parents[1] / "data" / "fastmri_sample"
    assert sorted(p.suffix for p in data.iterdir()) == [".h5"]  # fastMRI's tools open every file as HDF5
    cfg = {
        "name": "fm",
        "image_size": 64,
        "images": [{"kind": "fastmri", "path": str(data / "file_mr_small_multicoil.h5")}],
        "operator": {"modality": "mri", "acceleration": 4, "center_fraction": 0.08, "noise_level": 0.02},
        "methods": [{"name": "zero-filled"}, {"name": "tv", "options": {"n_iter": 10}}],
        "figure": False,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert main(["reconstruct", str(tmp_path / "c.yaml"), "--out", str(out), "--quiet"]) == 0
    with open(out / "metrics.csv", newline="") as f:
        rows = {(r["method"], r["image"]): r for r in csv.DictReader(f)}
    with h5py.File(data / "file_mr_small_multicoil.h5", "r") as f:
        target = f["reconstruction_rss"][()]  # (3, 64, 64)
    for method in ("zero-filled", "tv"):
        files = sorted(p.name for p in (out / "recon" / method).glob("*.h5"))
        assert files == ["file_mr_small_multicoil.h5"]
        with h5py.File(out / "recon" / method / files[0], "r") as f:
            recon = f["reconstruction"][()]
        assert recon.shape == target.shape and recon.dtype == np.float32
        assert 0.5 < recon.max() / target.max() < 2.0  # the target's scale, not [0, 1]-normalised
        for k in range(3):
            row = rows[(method, f"file_mr_small_multicoil_s{k}")]
            gt, pred = target[k : k + 1].astype(np.float64), recon[k : k + 1].astype(np.float64)
            np.testing.assert_allclose(fm.psnr(gt, pred), float(row["psnr"]), rtol=2e-5)
            np.testing.assert_allclose(fm.ssim(gt, pred), float(row["ssim"]), rtol=2e-5)
            np.testing.assert_allclose(fm.nmse(gt, pred), float(row["nmse"]), rtol=2e-4)
        args = argparse.Namespace(
            target_path=data,
            predictions_path=out / "recon" / method,
            acquisition=None,
            acceleration=None,
            challenge="multicoil",
        )
        means = fm.evaluate(args, "reconstruction_rss").means()  # fastMRI's own evaluation of the folder
        with open(out / "metrics_volumes.csv", newline="") as f:
            volume = [r for r in csv.DictReader(f) if r["method"] == method]
        assert [r["volume"] for r in volume] == ["file_mr_small_multicoil.h5"] and volume[0]["slices"] == "3"
        for key in ("psnr", "ssim", "nmse"):
            np.testing.assert_allclose(means[key.upper()], float(volume[0][key]), rtol=2e-5)
