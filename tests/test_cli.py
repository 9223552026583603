"""The ``medrecon`` CLI, in process through ``main([...])``, on tiny configs (seconds)."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import numpy as np
import pytest
import yaml

from medrecon.cli.main import main

TINY_CT = {
    "name": "tiny_ct",
    "seed": 3,
    "image_size": 32,
    "images": [{"kind": "ellipses", "n": 2, "seed": 7}, {"kind": "shepp_logan"}],
    "operator": {"modality": "ct", "n_angles": 10, "noise_level": 0.02},
    "methods": [
        {"name": "fbp"},
        {"name": "tv", "options": {"lam": 5.0e-5, "n_iter": 150}},
    ],
}


def _write(tmp_path, cfg, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


def _rows(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_reconstruct_writes_outputs_and_tv_beats_fbp(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reconstruct", str(_write(tmp_path, TINY_CT)), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "PSNR [dB]" in printed and "fbp" in printed and "tv" in printed
    for name in ("metrics.csv", "summary.txt", "figure.png", "config.yaml", "run.json"):
        assert (out / name).is_file(), name
    rows = _rows(out)
    assert list(rows[0]) == ["image", "method", "psnr", "ssim", "nmse", "seconds"]
    assert len(rows) == 3 * 2
    for r in rows:
        assert all(math.isfinite(float(r[k])) for k in ("psnr", "ssim", "nmse", "seconds"))
    psnr = {(r["image"], r["method"]): float(r["psnr"]) for r in rows}
    for image in {r["image"] for r in rows}:
        assert psnr[(image, "tv")] > psnr[(image, "fbp")] + 3.0, image  # 10 angles: TV far above FBP
    recon = np.load(out / "recon" / "tv" / "shepp_logan.npy")
    assert recon.shape == (32, 32) and recon.dtype == np.float32
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 3 and "torch" in run["versions"] and run["git_revision"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["operator"]["n_angles"] == 10 and resolved["seed"] == 3
    assert not [p for p in out.rglob(".*tmp*")]  # no temporary files left


def test_second_run_refuses_without_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "my_notes.txt").write_text("precious")
    cfg = _write(tmp_path, {**TINY_CT, "methods": [{"name": "fbp"}]})
    assert main(["reconstruct", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["my_notes.txt"]  # nothing written, nothing lost
    assert main(["reconstruct", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "my_notes.txt").read_text() == "precious" and (out / "metrics.csv").is_file()


def test_set_overrides_and_mri_h5_output(tmp_path):
    cfg = {
        "name": "tiny_mri",
        "image_size": 32,
        "images": [{"kind": "shepp_logan"}],
        "operator": {
            "modality": "mri",
            "mask": "equispaced",
            "acceleration": 4,
            "center_fraction": 0.16,
            "coils": 4,
            "noise_level": 0.01,
        },
        "methods": [{"name": "zero-filled"}, {"name": "sense", "options": {"n_iter": 5}}],
    }
    out = tmp_path / "mri"
    code = main(
        [
            "reconstruct",
            str(_write(tmp_path, cfg)),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "methods.sense.options.n_iter=8",
            "--set",
            "operator.acceleration=2",
        ]
    )
    assert code == 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["methods"][1]["options"]["n_iter"] == 8 and resolved["operator"]["acceleration"] == 2.0
    import h5py

    with h5py.File(out / "recon" / "sense" / "shepp_logan.h5") as f:
        assert f["reconstruction"].shape == (1, 32, 32) and f["reconstruction"].dtype == np.float32
    assert np.iscomplexobj(np.load(out / "recon" / "sense" / "shepp_logan.npy"))
    psnr = {r["method"]: float(r["psnr"]) for r in _rows(out)}
    assert psnr["sense"] > psnr["zero-filled"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"operator": {"modality": "ct", "n_angle": 10}},
            "unknown config key 'operator.n_angle'; valid keys of 'operator': modality",
        ),
        (
            {"operator": {"modality": "ct", "n_angles": "ten"}},
            "config key 'operator.n_angles': expected int, got str 'ten'",
        ),
        ({"seed": 1.5}, "config key 'seed': expected int, got float 1.5"),
        ({"methods": [{"name": "art"}]}, "methods.0: unknown method 'art'; valid methods: fbp,"),
        (
            {"methods": [{"name": "tv", "options": {"weight": 0.1}}]},
            "methods.0 (tv): unknown option(s) weight; valid options: lam, n_iter",
        ),
        ({"images": [{"kind": "jpeg"}]}, "unknown image kind 'jpeg'"),
        ({"images": [{"kind": "npy", "path": "does/not/exist.npy"}]}, "does/not/exist.npy does not exist"),
        (
            {"operator": {"modality": "xray"}},
            "config key 'operator.modality': expected one of 'ct', 'mri', got 'xray'",
        ),
    ],
)
def test_bad_configs_fail_with_one_line_message(tmp_path, capsys, change, message):
    cfg = {**TINY_CT, **change}
    out = tmp_path / "never"
    assert main(["reconstruct", str(_write(tmp_path, cfg)), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_bad_override_and_missing_file(tmp_path, capsys):
    cfg = _write(tmp_path, TINY_CT)
    assert (
        main(["reconstruct", str(cfg), "--set", "operator.n_angles=many", "--out", str(tmp_path / "o")]) == 2
    )
    assert "'operator.n_angles': expected int, got str 'many'" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["reconstruct"]) == 2  # argparse usage error
    assert main(["--help"]) == 0


def test_train_delegates_to_the_training_module(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("medrecon.training.run")
    fake.train_from_config = lambda config, overrides, out, resume, replace_weights: (
        calls.append((config, overrides, out, resume, replace_weights)) or 0
    )
    monkeypatch.setitem(sys.modules, "medrecon.training.run", fake)
    assert main(["train", "c.yaml", "--set", "a=1", "--out", str(tmp_path), "--resume"]) == 0
    assert main(["train", "c.yaml", "--replace-weights"]) == 0
    assert calls == [("c.yaml", ["a=1"], tmp_path, True, False), ("c.yaml", [], None, False, True)]


def test_repository_configs_load_and_name_existing_methods():
    """Every experiment config in configs/ (all but train_*.yaml) is valid: keys, types, methods, options."""
    from pathlib import Path

    from medrecon.experiment import load_experiment_config

    root = Path(__file__).resolve().parents[1] / "configs"
    names = sorted(p.name for p in root.glob("*.yaml") if not p.name.startswith("train_"))
    for required in (
        "ct_sparse_angle_10.yaml",
        "ct_sparse_angle_30.yaml",
        "mri_multicoil_8x.yaml",
        "mri_singlecoil_4x.yaml",
    ):
        assert required in names
    for name in names:
        load_experiment_config(root / name)  # raises on an unknown key, type, method or option


def test_a_failing_method_exits_1_with_its_name(tmp_path, capsys):
    cfg = {
        **TINY_CT,
        "operator": {"modality": "mri", "acceleration": 2, "center_fraction": 0.2},
        "images": [{"kind": "shepp_logan"}],
        "methods": [{"name": "fbp"}],
    }
    assert main(["reconstruct", str(_write(tmp_path, cfg)), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "method 'fbp' failed" in err and "SingleCoilMRI has none" in err and "Traceback" not in err


def _hashes(folder):
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_overwrite_keeps_the_complete_old_run_until_the_new_one_is_complete(tmp_path, capsys):
    out = tmp_path / "res"
    good = _write(tmp_path, {**TINY_CT, "images": [{"kind": "shepp_logan"}]}, "good.yaml")
    assert main(["reconstruct", str(good), "--out", str(out), "--quiet"]) == 0
    (out / "my_notes.txt").write_text("precious")
    before = _hashes(out)
    assert "recon/tv/shepp_logan.npy" in before
    # fails part way: zero-filled runs and writes its files, then fbp fails on the MRI operator
    bad = _write(
        tmp_path,
        {
            **TINY_CT,
            "images": [{"kind": "shepp_logan"}],
            "operator": {"modality": "mri", "acceleration": 2, "center_fraction": 0.2},
            "methods": [{"name": "zero-filled"}, {"name": "fbp"}],
        },
        "bad.yaml",
    )
    assert main(["reconstruct", str(bad), "--out", str(out), "--quiet", "--overwrite"]) == 1
    assert "method 'fbp' failed" in capsys.readouterr().err
    assert _hashes(out) == before  # the complete old run, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.yaml",
        "good.yaml",
        "res",
    ]  # no work folder left
    only_fbp = _write(
        tmp_path, {**TINY_CT, "images": [{"kind": "shepp_logan"}], "methods": [{"name": "fbp"}]}, "fbp.yaml"
    )
    assert main(["reconstruct", str(only_fbp), "--out", str(out), "--quiet", "--overwrite"]) == 0
    after = _hashes(out)
    assert (
        "recon/tv/shepp_logan.npy" not in after and "recon/fbp/shepp_logan.npy" in after
    )  # the new run only
    assert (out / "my_notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "fbp.yaml", "good.yaml", "res"]


def test_a_failed_first_run_leaves_no_folder_and_the_rerun_works(tmp_path, capsys):
    out = tmp_path / "res"
    bad = {
        **TINY_CT,
        "images": [{"kind": "shepp_logan"}],
        "operator": {"modality": "mri", "acceleration": 2, "center_fraction": 0.2},
        "methods": [{"name": "zero-filled"}, {"name": "fbp"}],
    }
    assert main(["reconstruct", str(_write(tmp_path, bad)), "--out", str(out), "--quiet"]) == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["cfg.yaml"]
    bad["methods"] = [{"name": "zero-filled"}]
    assert main(["reconstruct", str(_write(tmp_path, bad)), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()


def test_version_and_help_example(tmp_path, capsys):
    import medrecon

    with pytest.raises(SystemExit):
        from medrecon.cli.main import build_parser

        build_parser().parse_args(["--version"])
    assert medrecon.__version__ in capsys.readouterr().out
    assert main(["reconstruct", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    example = "--set 'images=[{kind: npy, path: my.npy}]'"
    assert example in text
    np.save(tmp_path / "my.npy", np.random.default_rng(0).random((32, 32)))
    cfg = _write(tmp_path, {**TINY_CT, "methods": [{"name": "fbp"}]})
    assert (
        main(
            [
                "reconstruct",
                str(cfg),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--set",
                f"images=[{{kind: npy, path: {tmp_path / 'my.npy'}}}]",
            ]
        )
        == 0
    )
    assert (tmp_path / "o" / "recon" / "fbp" / "my.npy").is_file()


def test_progress_says_method_k_of_n_with_an_estimate(tmp_path, capsys):
    cfg = _write(tmp_path, {**TINY_CT, "images": [{"kind": "shepp_logan"}]})
    out = tmp_path / "o"
    assert main(["reconstruct", str(cfg), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "method 1/2: fbp ..." in err and "method 2/2: tv took" in err
    assert (
        "about" in err and "left (a rough guess: the mean so far)" in err
    )  # after method 1 of 2, from the mean so far
    seconds = json.loads((out / "run.json").read_text())["method_seconds"]
    assert set(seconds) == {"fbp", "tv"}
    assert main(["reconstruct", str(cfg), "--out", str(out), "--overwrite"]) == 0
    assert "left (previous run)" in capsys.readouterr().err  # the second run knows the first one's times


def test_ctrl_c_and_unexpected_errors_leave_outputs_as_they_were(tmp_path, capsys, monkeypatch):
    """Ctrl-C in the second method: exit 130, one line, the old run intact, no work folder; an unexpected
    exception is one line with exit 1, and ``--debug`` shows its traceback instead."""
    import medrecon.experiment.run as run_mod

    cfg = _write(tmp_path, {**TINY_CT, "images": [{"kind": "shepp_logan"}]})
    out = tmp_path / "o"
    assert main(["reconstruct", str(cfg), "--out", str(out), "--quiet"]) == 0
    before = _hashes(out)
    real = run_mod._apply_method

    def interrupted(spec, *args, **kwargs):
        if spec.name == "tv":
            raise KeyboardInterrupt
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(run_mod, "_apply_method", interrupted)
    capsys.readouterr()
    assert main(["reconstruct", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "unchanged" in err
    assert _hashes(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "o"]

    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(run_mod, "_apply_method", broken)
    assert main(["reconstruct", str(cfg), "--out", str(out), "--quiet", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TypeError: boom" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(TypeError, match="boom"):
        main(["--debug", "reconstruct", str(cfg), "--out", str(out), "--quiet", "--overwrite"])
    assert _hashes(out) == before
