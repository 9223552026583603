"""A corpus of bad inputs, as a new user would try them: the CLI (in process through ``main(argv)``, and a
few real subprocesses) and the Python API.

For every case: the exit code (2 for a refused input, 1 for a failure while running), one line on
stderr that names the problem (``medrecon: error: ...``), no ``Traceback``, and every pre-existing
file byte-identical afterwards (sha256 before and after), including the bundled data and weights.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medrecon.cli.main import main

REPO = Path(__file__).resolve().parents[1]
BUNDLED = [REPO / "data" / d for d in ("weights", "ct_test", "fastmri_sample")] + [REPO / "configs"]

# A tiny valid experiment: every case below changes one thing.
GOOD = {
    "name": "good",
    "image_size": 16,
    "images": [{"kind": "shepp_logan"}],
    "operator": {"modality": "ct", "n_angles": 8, "noise_level": 0.01},
    "methods": [{"name": "fbp"}, {"name": "tv", "options": {"lam": 1e-4, "n_iter": 5}}],
    "figure": False,
}
TRAIN = {
    "model": {
        "name": "conv_vae",
        "params": {"image_size": 16, "latent_dim": 2, "channels": [4], "hidden": 8},
    },
    "data": {"name": "ellipses", "n": 16, "val_n": 4},
    "train": {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False, "tensorboard": False},
    "output": {"weights": "w.pt"},
}


def _hashes(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


BUNDLED_BEFORE = _hashes(*BUNDLED)


def _build_corpus(root: Path) -> None:
    """The files the cases point at, and a previous run that must survive every case."""
    from PIL import Image

    (root / "good.yaml").write_text(yaml.safe_dump(GOOD))
    (root / "train.yaml").write_text(yaml.safe_dump(TRAIN))
    (root / "syntax.yaml").write_text("name: x\nimages: [ {kind: shepp_logan\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "empty.yaml").write_text("")
    (root / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    rng = np.random.default_rng(0)
    np.save(root / "img.npy", rng.random((16, 16)))
    np.save(root / "vol.npy", rng.random((2, 16, 16)))
    np.save(root / "tiny.npy", rng.random((3, 3)))
    np.save(root / "zeros.npy", np.zeros((16, 16)))
    nan = rng.random((16, 16))
    nan[3, 4] = np.nan
    np.save(root / "nan.npy", nan)
    np.save(root / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(root / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (root / "truncated.npy").write_bytes((root / "img.npy").read_bytes()[:100])
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(root / "img.png")
    (root / "corrupt.png").write_bytes((root / "img.png").read_bytes()[:40])
    (root / "text.dcm").write_text("not dicom at all")
    from pydicom import examples

    ct = Path(examples.get_path("ct")).read_bytes()
    (root / "truncated.dcm").write_bytes(ct[:2000])
    (root / "notes.h5").write_text("not hdf5")
    import h5py

    with h5py.File(root / "empty.h5", "w") as f:
        f.create_dataset("something_else", data=np.zeros(3))
    with h5py.File(root / "badmask.h5", "w") as f:
        f.create_dataset("kspace", data=np.ones((2, 16, 16), dtype=np.complex64))
        f.create_dataset("mask", data=np.ones((16, 16), dtype=np.float32))
    with h5py.File(root / "good.h5", "w") as f:
        f.create_dataset("reconstruction_rss", data=rng.random((2, 16, 16)).astype(np.float32))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'PWNED'}",))

    import pickle

    (root / "evil.pt").write_bytes(pickle.dumps({"format": "x", "payload": Evil()}))
    (root / "garbage.pt").write_bytes(b"\x00" * 64)
    torch.save({"a": torch.zeros(2)}, root / "foreign.pt")
    (root / "a_file").write_text("I am a file, not a folder")
    # a previous run and a previous training run that no refused command may touch
    assert main(["reconstruct", str(root / "good.yaml"), "--out", str(root / "previous"), "--quiet"]) == 0
    assert main(["train", str(root / "train.yaml"), "--out", str(root / "run")]) == 0
    (root / "previous" / "my_notes.txt").write_text("precious")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    cwd = os.getcwd()
    os.chdir(root)  # default output folders (outputs/, runs/) land here
    try:
        _build_corpus(root)
        yield root
    finally:
        os.chdir(cwd)


def _cfg(root: Path, name: str, **change) -> str:
    cfg = {**GOOD, **change}
    (root / name).write_text(yaml.safe_dump(cfg))
    return str(root / name)


R, T = "reconstruct", "train"
FRESH = ["{root}/train.yaml", "--out", "{root}/fresh"]  # a run folder that must never appear
# (id, command, argv (with {root} and config writers), exit code, fragment of the one-line message)
CASES = [
    # --- config files
    ("yaml-syntax", R, ["{root}/syntax.yaml"], 2, "invalid YAML"),
    ("yaml-list", R, ["{root}/list.yaml"], 2, "top level of a config must be a mapping"),
    ("yaml-empty", R, ["{root}/empty.yaml"], 2, "missing required config key 'images'"),
    ("yaml-binary", R, ["{root}/binary.yaml"], 2, "binary.yaml"),
    ("config-missing", R, ["{root}/nope.yaml"], 2, "nope.yaml does not exist"),
    ("config-is-folder", R, ["{root}/previous"], 2, "cannot read config file"),
    ("unknown-top-key", R, ["{good}", "--set", "iterations=3"], 2, "unknown config key 'iterations'"),
    (
        "unknown-operator-key",
        R,
        ["{good}", "--set", "operator.n_angle=3"],
        2,
        "unknown config key 'operator.n_angle'",
    ),
    (
        "mri-key-on-ct",
        R,
        ["{good}", "--set", "operator.mask=random"],
        2,
        "unknown config key 'operator.mask'",
    ),
    ("wrong-type", R, ["{good}", "--set", "operator.n_angles=ten"], 2, "'operator.n_angles': expected int"),
    ("seed-float", R, ["{good}", "--set", "seed=1.5"], 2, "'seed': expected int, got float"),
    ("bool-for-int", R, ["{good}", "--set", "image_size=true"], 2, "'image_size': expected int, got bool"),
    ("override-no-equals", R, ["{good}", "--set", "seed"], 2, "must look like key.sub=value"),
    ("override-bad-index", R, ["{good}", "--set", "images.5.kind=npy"], 2, "index 5 out of range"),
    ("override-bad-yaml", R, ["{good}", "--set", "operator.n_angles=[1,"], 2, "invalid YAML"),
    (
        "modality-unknown",
        R,
        ["{good}", "--set", "operator={modality: xray}"],
        2,
        "expected one of 'ct', 'mri'",
    ),
    (
        "modality-missing",
        R,
        ["{good}", "--set", "operator={n_angles: 3}"],
        2,
        "missing required config key 'operator.modality'",
    ),
    ("no-methods", R, ["{good}", "--set", "methods=[]"], 2, "at least one method"),
    ("duplicate-methods", R, ["{good}", "--set", "methods=[{name: fbp}, {name: fbp}]"], 2, "appear twice"),
    # --- methods and their options: all checked before the first method runs
    ("unknown-method", R, ["{good}", "--set", "methods.1.name=art"], 2, "unknown method 'art'"),
    ("unknown-option", R, ["{good}", "--set", "methods.tv.options.weight=1"], 2, "unknown option(s) weight"),
    (
        "n-iter-negative",
        R,
        ["{good}", "--set", "methods.tv.options.n_iter=-1"],
        2,
        "'methods.1.options.n_iter'",
    ),
    ("n-iter-zero", R, ["{good}", "--set", "methods.tv.options.n_iter=0"], 2, "must be an integer >= 1"),
    ("n-iter-word", R, ["{good}", "--set", "methods.tv.options.n_iter=ten"], 2, "got 'ten'"),
    ("lam-negative", R, ["{good}", "--set", "methods.tv.options.lam=-0.1"], 2, "'methods.1.options.lam'"),
    ("lam-word", R, ["{good}", "--set", "methods.tv.options.lam=auto"], 2, "'discrepancy'"),
    ("lam-inf", R, ["{good}", "--set", "methods.tv.options.lam=.inf"], 2, "'methods.1.options.lam'"),
    ("reserved-option", R, ["{good}", "--set", "methods.tv.options.x_true=1"], 2, "set by the experiment"),
    (
        "weights-missing",
        R,
        ["{good}", "--set", "methods=[{name: vae-range, options: {weights: no/such.pt}}]"],
        2,
        "no/such.pt does not exist",
    ),
    (
        "weights-malicious-pickle",
        R,
        ["{good}", "--set", "methods=[{name: vae-range, options: {weights: {root}/evil.pt}}]"],
        2,
        "evil.pt is not a readable torch weights file",
    ),
    (
        "weights-garbage",
        R,
        ["{good}", "--set", "methods=[{name: flow, options: {weights: {root}/garbage.pt}}]"],
        2,
        "garbage.pt is not a readable torch weights file",
    ),
    (
        "weights-foreign",
        R,
        ["{good}", "--set", "methods=[{name: flow, options: {weights: {root}/foreign.pt}}]"],
        2,
        "foreign.pt is not a medrecon weights file",
    ),
    (
        "fifth-method-bad",
        R,
        [
            "{good}",
            "--set",
            (
                "methods=[{name: fbp}, {name: cgls}, {name: tikhonov}, "
                "{name: tv}, {name: tv, label: b, options: {n_iter: -5}}]"
            ),
        ],
        2,
        "'methods.4.options.n_iter'",
    ),
    # --- operator
    (
        "backend-unknown",
        R,
        ["{good}", "--set", "operator.backend=foo"],
        2,
        "'operator.backend': expected one of",
    ),
    (
        "detectors-zero",
        R,
        ["{good}", "--set", "operator.n_detectors=0"],
        2,
        "'operator.n_detectors' must be >= 1",
    ),
    ("angles-zero", R, ["{good}", "--set", "operator.n_angles=0"], 2, "'operator.n_angles' must be >= 1"),
    (
        "fan-no-radii",
        R,
        ["{good}", "--set", "operator.geometry=fan"],
        2,
        "'operator.source_radius' is required",
    ),
    (
        "fan-radii-too-small",
        R,
        ["{good}", "--set", "operator={modality: ct, geometry: fan, source_radius: 3, detector_radius: 3}"],
        2,
        "source_radius must exceed",
    ),
    (
        "noise-inf",
        R,
        ["{good}", "--set", "operator.noise_level=.inf"],
        2,
        "'operator.noise_level' must be a finite",
    ),
    ("noise-negative", R, ["{good}", "--set", "operator.noise_level=-0.1"], 2, "'operator.noise_level'"),
    (
        "mri-acceleration",
        R,
        ["{good}", "--set", "operator={modality: mri, acceleration: 0.5}"],
        2,
        "'operator.acceleration'",
    ),
    (
        "mri-center-fraction",
        R,
        ["{good}", "--set", "operator={modality: mri, center_fraction: 2}"],
        2,
        "'operator.center_fraction'",
    ),
    (
        "mri-mask-kind",
        R,
        ["{good}", "--set", "operator={modality: mri, mask: spiral}"],
        2,
        "unknown mask kind 'spiral'",
    ),
    (
        "mri-coils-zero",
        R,
        ["{good}", "--set", "operator={modality: mri, coils: 0}"],
        2,
        "'operator.coils' must be >= 1",
    ),
    # --- machine
    (
        "device-cuda",
        R,
        ["{good}", "--set", "device=cuda:7" if torch.cuda.is_available() else "device=cuda"],
        2,
        "'device'",
    ),
    ("device-word", R, ["{good}", "--set", "device=gpu0"], 2, "is not a torch device"),
    ("image-size-huge", R, ["{good}", "--set", "image_size=100000"], 2, "GiB"),
    ("image-size-small", R, ["{good}", "--set", "image_size=4"], 2, "'image_size' must be >= 8"),
    ("threads-zero", R, ["{good}", "--set", "threads=0"], 2, "'threads' must be >= 1"),
    # --- images
    ("image-kind", R, ["{good}", "--set", "images=[{kind: jpeg}]"], 2, "unknown image kind 'jpeg'"),
    (
        "npy-missing",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/missing.npy}]"],
        2,
        "missing.npy does not exist",
    ),
    ("npy-needs-path", R, ["{good}", "--set", "images=[{kind: npy}]"], 2, "needs a path"),
    (
        "png-as-npy",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/img.png}]"],
        2,
        "is not an .npy file: it is a PNG",
    ),
    (
        "h5-as-npy",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/good.h5}]"],
        2,
        "it is an HDF5 file",
    ),
    (
        "npy-pickle",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/objects.npy}]"],
        2,
        "pickles are never loaded",
    ),
    (
        "npy-strings",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/strings.npy}]"],
        2,
        "expected a numeric array",
    ),
    (
        "npy-truncated",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/truncated.npy}]"],
        2,
        "truncated.npy",
    ),
    (
        "npy-3d",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/vol.npy}]"],
        2,
        "expected a 2-D image",
    ),
    (
        "npy-3x3",
        R,
        ["{good}", "--set", "images=[{kind: npy, path: {root}/tiny.npy}]"],
        2,
        "3x3 image is too small",
    ),
    ("npy-all-zero", R, ["{good}", "--set", "images=[{kind: npy, path: {root}/zeros.npy}]"], 2, "all zero"),
    ("npy-nan", R, ["{good}", "--set", "images=[{kind: npy, path: {root}/nan.npy}]"], 2, "NaN or inf"),
    (
        "png-corrupt",
        R,
        ["{good}", "--set", "images=[{kind: png, path: {root}/corrupt.png}]"],
        2,
        "corrupt.png",
    ),
    (
        "dicom-text",
        R,
        ["{good}", "--set", "images=[{kind: dicom, path: {root}/text.dcm}]"],
        2,
        "is not a DICOM file",
    ),
    (
        "dicom-truncated",
        R,
        ["{good}", "--set", "images=[{kind: dicom, path: {root}/truncated.dcm}]"],
        2,
        "truncated.dcm",
    ),
    (
        "h5-not-hdf5",
        R,
        ["{good}", "--set", "images=[{kind: fastmri, path: {root}/notes.h5}]"],
        2,
        "not a readable HDF5",
    ),
    (
        "h5-no-data",
        R,
        ["{good}", "--set", "images=[{kind: fastmri, path: {root}/empty.h5}]"],
        2,
        "no 'reconstruction_rss'",
    ),
    (
        "h5-bad-mask",
        R,
        ["{good}", "--set", "images=[{kind: fastmri, path: {root}/badmask.h5}]"],
        2,
        "'mask' must be (W,)",
    ),
    (
        "h5-slice-range",
        R,
        ["{good}", "--set", "images=[{kind: fastmri, path: {root}/good.h5, slices: [7]}]"],
        2,
        "slice 7 out of range",
    ),
    (
        "window-reversed",
        R,
        ["{good}", "--set", "images=[{kind: shepp_logan, window: [1, 0]}]"],
        2,
        "'images.window'",
    ),
    (
        "ellipses-n-zero",
        R,
        ["{good}", "--set", "images=[{kind: ellipses, n: 0}]"],
        2,
        "'images.n' must be >= 1",
    ),
    # --- outputs
    ("output-exists", R, ["{good}", "--out", "{root}/previous"], 2, "already exists and is not empty"),
    (
        "output-is-cwd",
        R,
        ["{good}", "--out", ".", "--overwrite"],
        2,
        "is the working directory or contains it",
    ),
    (
        "output-is-file",
        R,
        ["{good}", "--out", "{root}/a_file", "--overwrite"],
        2,
        "exists and is not a directory",
    ),
    # --- failures while running (exit 1), the previous results untouched
    (
        "method-fails",
        R,
        [
            "{good}",
            "--out",
            "{root}/previous",
            "--overwrite",
            "--set",
            "operator={modality: mri, acceleration: 2}",
        ],
        1,
        "method 'fbp' failed",
    ),
    (
        "weights-of-another-prior",
        R,
        [
            "{good}",
            "--out",
            "{root}/previous",
            "--overwrite",
            "--set",
            ("methods=[{name: vae-range, options: {weights: data/weights/flow_ellipses64.pt}}]"),
            "--set",
            "image_size=64",
        ],
        1,
        "method 'vae-range' failed",
    ),
    # --- medrecon train
    ("train-config-missing", T, ["{root}/nope.yaml"], 2, "does not exist"),
    (
        "train-run-exists",
        T,
        ["{root}/train.yaml", "--out", "{root}/run"],
        2,
        "already exists and holds a checkpoint",
    ),
    (
        "train-resume-nothing",
        T,
        ["{root}/train.yaml", "--out", "{root}/fresh", "--resume"],
        2,
        "nothing to resume",
    ),
    (
        "train-data-name",
        T,
        ["{root}/train.yaml", "--out", "{root}/fresh", "--set", "data.name=imagenet"],
        2,
        "unknown dataset 'imagenet'",
    ),
    (
        "train-image-size-zero",
        T,
        [*FRESH, "--set", "model.params.image_size=0"],
        2,
        "'model.params.image_size'",
    ),
    (
        "train-epochs-zero",
        T,
        ["{root}/train.yaml", "--out", "{root}/fresh", "--set", "train.epochs=0"],
        2,
        "'train.epochs' must be >= 1",
    ),
    (
        "train-lr-nan",
        T,
        ["{root}/train.yaml", "--out", "{root}/fresh", "--set", "train.lr=.nan"],
        2,
        "'train.lr'",
    ),
    (
        "train-grad-clip-negative",
        T,
        ["{root}/train.yaml", "--out", "{root}/fresh", "--set", "train.grad_clip=-1"],
        2,
        "'train.grad_clip' must be a finite number > 0",
    ),
    (
        "train-model-unknown",
        T,
        ["{root}/train.yaml", "--out", "{root}/fresh", "--set", "model.name=unet"],
        2,
        "unknown model 'unet'",
    ),
    (
        "train-model-params",
        T,
        [*FRESH, "--set", "model.params.depth=3"],
        2,
        "model.params do not fit ConvVAE",
    ),
    ("train-batch-too-big", T, [*FRESH, "--set", "train.batch_size=999"], 2, "'train.batch_size'"),
    (
        "train-device",
        T,
        [
            "{root}/train.yaml",
            "--out",
            "{root}/fresh",
            "--set",
            "train.device=cuda:7" if torch.cuda.is_available() else "train.device=cuda",
        ],
        2,
        "'train.device'",
    ),
    (
        "train-weights-exist",
        T,
        ["{root}/train.yaml", "--out", "{root}/fresh", "--set", "output.weights={root}/garbage.pt"],
        2,
        "pass --replace-weights",
    ),
    ("train-fastmri-root", T, [*FRESH, "--set", "data={name: fastmri}"], 2, "'data.root'"),
    # --- argparse
    ("no-command", None, [], 2, None),
    ("unknown-flag", R, ["{good}", "--frobnicate"], 2, None),
]


def _argv(root: Path, command, argv: list[str]) -> list[str]:
    good = _cfg(root, "case.yaml")
    out = [a.replace("{good}", good).replace("{root}", str(root)) for a in argv]
    if command == R and "--out" not in out and "{good}" in argv:
        out += ["--out", str(root / "never")]
    return ([command] if command else []) + out + (["--quiet"] if command == R else [])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, reading evil.pt
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input(corpus, case, capsys):
    name, command, argv, code, fragment = case
    before = _hashes(corpus)
    capsys.readouterr()
    assert main(_argv(corpus, command, argv)) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if fragment is not None:  # argparse prints its usage (two lines) for its own errors
        assert err.startswith("medrecon: error: ") and err.count("\n") == 1, err
        assert fragment in err, err
    after = _hashes(corpus)
    changed = {p for p in before if after.get(p) != before[p]} | {
        p for p in after if p not in before and "/case.yaml" not in p
    }
    assert not changed, f"{name} changed or created {sorted(changed)}"
    assert not (corpus / "PWNED").exists()
    assert not (corpus / "never").exists() and not (corpus / "fresh").exists()


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)
    assert len({(c[1], tuple(c[2])) for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------- real subprocesses
# Each one that reaches torch costs an import (seconds); the in-process cases above cover the rest.
def _run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "medrecon.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "argv, code, fragment",
    [
        (["reconstruct", "{root}/syntax.yaml"], 2, "invalid YAML"),
        (
            [
                "reconstruct",
                "{root}/good.yaml",
                "--quiet",
                "--out",
                "{root}/never",
                "--set",
                "methods=[{name: fbp}, {name: tv, options: {n_iter: -1}}]",
            ],
            2,
            "'methods.1.options.n_iter'",
        ),
        (["--version"], 0, "medrecon "),
    ],
)
def test_real_cli_subprocess(corpus, argv, code, fragment):
    before = _hashes(corpus)
    proc = _run([a.replace("{root}", str(corpus)) for a in argv], corpus)
    assert proc.returncode == code, proc.stderr
    text = proc.stdout if code == 0 else proc.stderr
    assert fragment in text and "Traceback" not in proc.stderr
    if code:
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert _hashes(corpus) == before


# ----------------------------------------------------------------------------- the Python API
def _api_cases():
    import medrecon
    from medrecon.config import ConfigError, load_config
    from medrecon.data.dicom import DicomError, read_dicom_slice
    from medrecon.data.images import ImageLoadError, load_images
    from medrecon.experiment import ExperimentConfig
    from medrecon.operators import ParallelBeamCT, SingleCoilMRI
    from medrecon.operators.base import OperatorInputError
    from medrecon.priors.base import CheckpointMismatchError, load_prior

    ct = ParallelBeamCT(8, 4)
    mri = SingleCoilMRI(torch.ones(8, 8))
    return [
        (
            "reconstruct-2d-y",
            lambda root: medrecon.reconstruct(ct, torch.zeros(ct.out_shape), "tv"),
            ValueError,
            "(B, C, 4,",
        ),
        (
            "ct-complex-input",
            lambda root: ct(torch.zeros(1, 1, 8, 8, dtype=torch.complex64)),
            OperatorInputError,
            "wrong kind of dtype for this operator: it takes real tensors",
        ),
        (
            "mri-real-input",
            lambda root: mri(torch.zeros(1, 1, 8, 8)),
            OperatorInputError,
            "wrong kind of dtype for this operator: it takes complex tensors",
        ),
        (
            "reconstruct-n-iter",
            lambda root: medrecon.reconstruct(ct, torch.zeros(1, 1, *ct.out_shape), "tv", n_iter=0),
            ValueError,
            "n_iter must be an integer >= 1",
        ),
        ("load-prior-pickle", lambda root: load_prior(root / "evil.pt"), CheckpointMismatchError, "evil.pt"),
        ("load-prior-text", lambda root: load_prior(root / "a_file"), CheckpointMismatchError, "a_file"),
        (
            "dicom-truncated",
            lambda root: read_dicom_slice(root / "truncated.dcm"),
            DicomError,
            "truncated.dcm",
        ),
        (
            "images-png-as-npy",
            lambda root: load_images("npy", 16, path=str(root / "img.png")),
            ImageLoadError,
            "not an .npy file",
        ),
        (
            "config-unknown-key",
            lambda root: load_config({**GOOD, "x": 1}, ExperimentConfig),
            ConfigError,
            "unknown config key 'x'",
        ),
    ]


API_IDS = [
    "reconstruct-2d-y",
    "ct-complex-input",
    "mri-real-input",
    "reconstruct-n-iter",
    "load-prior-pickle",
    "load-prior-text",
    "dicom-truncated",
    "images-png-as-npy",
    "config-unknown-key",
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("index", range(len(API_IDS)), ids=API_IDS)
def test_api_bad_input(corpus, index):
    name, call, error, fragment = _api_cases()[index]
    before = _hashes(corpus)
    with pytest.raises(error) as info:
        call(corpus)
    message = str(info.value)
    assert fragment in message, message
    assert "\n" not in message.strip() or name.startswith("load-prior"), message
    assert _hashes(corpus) == before and not (corpus / "PWNED").exists()


def test_zz_bundled_data_and_weights_untouched(corpus):
    """After every case above (and the training run of the corpus), the bundled files are byte-identical."""
    assert _hashes(*BUNDLED) == BUNDLED_BEFORE
