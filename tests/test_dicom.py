"""medrecon.data.dicom: DICOM slice -> HU with clear errors; medrecon.data.images: sources -> [0, 1]."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom import examples

from medrecon.data.dicom import DicomError, read_dicom_slice
from medrecon.data.images import ImageLoadError, load_image_records, load_images, normalize, resize_square

CT_PATH = examples.get_path("ct")


def test_ct_small_in_hounsfield_units():
    ds = pydicom.dcmread(CT_PATH)
    hu = read_dicom_slice(CT_PATH)
    assert hu.shape == (128, 128) and hu.dtype == np.float32
    # HU = stored * slope + intercept (CT_small: slope 1, intercept -1024)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(hu, expected.astype(np.float32))
    assert float(ds.RescaleIntercept) == -1024.0
    raw = read_dicom_slice(CT_PATH, rescale=False)
    np.testing.assert_array_equal(raw, ds.pixel_array.astype(np.float32))


def test_slope_and_intercept_are_applied(tmp_path):
    ds = pydicom.dcmread(CT_PATH)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.save_as(tmp_path / "scaled.dcm")
    hu = read_dicom_slice(tmp_path / "scaled.dcm")
    np.testing.assert_array_equal(hu, ds.pixel_array.astype(np.float32) * 2 - 1000)


def test_missing_rescale_tags_mean_identity(tmp_path):
    ds = pydicom.dcmread(CT_PATH)
    del ds.RescaleSlope
    del ds.RescaleIntercept
    ds.save_as(tmp_path / "plain.dcm")
    np.testing.assert_array_equal(read_dicom_slice(tmp_path / "plain.dcm"), ds.pixel_array.astype(np.float32))


def test_not_dicom(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_bytes(b"this is a text file, not DICOM\n" * 20)
    with pytest.raises(DicomError, match=r"notes.dcm is not a DICOM file"):
        read_dicom_slice(p)


def test_missing_file(tmp_path):
    with pytest.raises(DicomError, match="does not exist"):
        read_dicom_slice(tmp_path / "nope.dcm")


def test_missing_pixel_data(tmp_path):
    ds = pydicom.dcmread(CT_PATH)
    del ds.PixelData
    ds.save_as(tmp_path / "header_only.dcm")
    with pytest.raises(DicomError, match="has no PixelData element"):
        read_dicom_slice(tmp_path / "header_only.dcm")


def test_truncated_pixel_data(tmp_path):
    raw = CT_PATH.read_bytes() if hasattr(CT_PATH, "read_bytes") else open(CT_PATH, "rb").read()
    p = tmp_path / "truncated.dcm"
    p.write_bytes(raw[: len(raw) // 2])  # cut inside the pixel data
    with pytest.raises(DicomError, match="truncated or corrupt"):
        read_dicom_slice(p)


def test_truncated_header(tmp_path):
    raw = open(CT_PATH, "rb").read()
    p = tmp_path / "cut_header.dcm"
    p.write_bytes(raw[:1000])  # the header stops before PixelData
    with pytest.raises(DicomError):
        read_dicom_slice(p)


def test_dataset_input_and_frame_errors():
    ds = pydicom.dcmread(CT_PATH)
    assert read_dicom_slice(ds).shape == (128, 128)
    with pytest.raises(DicomError, match="single frame"):
        read_dicom_slice(ds, frame=3)


# --------------------------------------------------------------------------- images.py
def test_normalize_and_resize():
    a = np.array([[-1000.0, 0.0], [500.0, 3000.0]])
    np.testing.assert_allclose(normalize(a, (-1000, 1000)), [[0.0, 0.5], [0.75, 1.0]])
    np.testing.assert_allclose(normalize(a), (a + 1000) / 4000, rtol=1e-6)
    assert normalize(np.ones((3, 3))).max() == 0.0  # a constant image maps to 0, not NaN
    img = np.zeros((10, 14))
    img[:, 2:12] = 1.0  # centre square after cropping 14 -> 10 columns
    out = resize_square(img, 5)
    assert out.shape == (5, 5) and np.allclose(out, 1.0)
    with pytest.raises(ImageLoadError, match="hi > lo"):
        normalize(a, (1, 1))


def test_load_sources(tmp_path):
    from PIL import Image

    ct = load_images("pydicom_example", 32, name="ct", window=(-1000, 1000))
    assert [n for n, _ in ct] == ["pydicom_ct"]
    img = ct[0][1]
    assert img.shape == (32, 32) and img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    notes = []
    dcm = load_image_records("dicom", 16, path=str(CT_PATH), notes=notes)[0]
    assert (
        dcm.image.shape == (16, 16) and dcm.image.min() == 0.0 and dcm.image.max() == 1.0
    )  # HU < 0: min-max
    assert any("resized to 16x16" in n for n in notes) and any("negative values" in n for n in notes)
    # one rule for every file type: the same pixels as PNG, as uint8 .npy and as [0, 1] float .npy agree
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3 + 10
    Image.fromarray(pixels).save(tmp_path / "b.png")
    np.save(tmp_path / "b_uint8.npy", pixels)
    np.save(tmp_path / "b_unit.npy", pixels / 255.0)
    notes = []
    truths = [
        load_image_records(k, 8, path=str(tmp_path / f), notes=notes)[0]
        for k, f in (("png", "b.png"), ("npy", "b_uint8.npy"), ("npy", "b_unit.npy"))
    ]
    for r in truths:
        np.testing.assert_allclose(r.image, pixels / pixels.max(), rtol=1e-6)  # divided by the maximum
    np.testing.assert_allclose(
        truths[0].image * truths[0].scale, pixels, rtol=1e-6
    )  # back on the file's scale
    assert notes == []  # nothing resized, nothing shifted
    np.save(tmp_path / "small.npy", np.ones((12, 10)))
    notes = []
    assert load_image_records("npy", 32, path=str(tmp_path / "small.npy"), notes=notes)[0].resized
    assert notes == ["image small: 12x10 centre-cropped to 10x10 and resized to 32x32"]


def test_load_errors(tmp_path):
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_images("npy", 8, path=str(tmp_path / "missing.npy"))
    with pytest.raises(ImageLoadError, match="needs a path"):
        load_images("png", 8)
    with pytest.raises(ImageLoadError, match="unknown image kind 'jpeg2000'"):
        load_images("jpeg2000", 8)
    np.save(tmp_path / "vol.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ImageLoadError, match="expected a 2-D image"):
        load_images("npy", 8, path=str(tmp_path / "vol.npy"))
    (tmp_path / "x.png").write_text("not a png")
    with pytest.raises(ImageLoadError, match="not a readable image"):
        load_images("png", 8, path=str(tmp_path / "x.png"))
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "real.png")
    with pytest.raises(
        ImageLoadError, match=r"real.png is not an .npy file: it is a PNG image \(kind: png\)"
    ):
        load_images("npy", 8, path=str(tmp_path / "real.png"))
    with pytest.raises(ImageLoadError, match="all zero"):
        load_images("png", 8, path=str(tmp_path / "real.png"))
    np.save(tmp_path / "tiny.npy", np.ones((3, 3)))
    with pytest.raises(ImageLoadError, match="a 3x3 image is too small"):
        load_images("npy", 32, path=str(tmp_path / "tiny.npy"))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageLoadError, match="holds Python objects"):
        load_images("npy", 8, path=str(tmp_path / "obj.npy"))


def test_fastmri_source(tmp_path):
    import h5py

    rss = np.random.default_rng(0).random((2, 12, 12)).astype(np.float32)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("reconstruction_rss", data=rss)
    out = load_images("fastmri", 12, path=str(tmp_path / "f.h5"), slices=[1])
    assert [n for n, _ in out] == ["f_s1"]
    np.testing.assert_allclose(out[0][1], rss[1] / rss[1].max(), atol=1e-6)
    with pytest.raises(ImageLoadError, match="slice 5 out of range"):
        load_images("fastmri", 12, path=str(tmp_path / "f.h5"), slices=[5])
