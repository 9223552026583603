"""The one training loop (medrecon.training.fit): loss falls, checkpoints round-trip, resume is exact,
interrupted writes keep the previous checkpoint, the global RNG is untouched."""

import csv

import pytest
import torch

from medrecon.priors.base import load_prior, read_checkpoint
from medrecon.priors.flow import flow_step
from medrecon.priors.vae import ConvVAE, vae_eval, vae_step
from medrecon.training import FitConfig, epoch_order, fit

torch.use_deterministic_algorithms(True, warn_only=True)


class _Images(torch.utils.data.Dataset):
    """24 fixed 8x8 images in [0, 1]: blobs at random positions."""

    def __init__(self, seed=0, n=24):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        c = 1 + 6 * torch.rand(n, 2, generator=g)
        self.x = torch.exp(-((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / 3.0).unsqueeze(1)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def _model(seed=0):
    torch.manual_seed(seed)  # tests may seed; library code does not
    return ConvVAE(image_size=8, latent_dim=2, channels=(4,), hidden=16)


CFG = FitConfig(
    epochs=3, batch_size=8, lr=3e-3, seed=1, device="cpu", log_every=1, progress=False, tensorboard=False
)


def test_vae_loss_falls(tmp_path):
    res = fit(
        _model(),
        vae_step,
        _Images(),
        FitConfig(
            epochs=10, batch_size=8, lr=1e-2, device="cpu", log_every=3, progress=False, tensorboard=False
        ),
    )
    losses = [row["loss"] for row in res.history]
    assert res.step == 30
    assert losses[-1] < 0.9 * losses[0], losses


def test_logs_checkpoint_and_tensorboard(tmp_path):
    data = _Images()
    cfg = FitConfig(epochs=2, batch_size=8, device="cpu", log_every=2, progress=False)
    res = fit(
        _model(),
        vae_step,
        data,
        cfg,
        out_dir=tmp_path,
        val_data=_Images(seed=5, n=8),
        eval_fn=vae_eval,
        config={"note": "x"},
    )
    rows = list(csv.DictReader(open(tmp_path / "train_metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]  # every 2 steps and at each epoch end
    assert {"loss", "recon", "kl"} <= set(rows[0])
    val = list(csv.DictReader(open(tmp_path / "val_metrics.csv")))
    assert [int(r["step"]) for r in val] == [3, 6] and "mse" in val[0]
    assert any((tmp_path / "tensorboard").iterdir())
    ckpt = read_checkpoint(tmp_path / "checkpoint.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (6, 2, 0)
    assert ckpt["model_class"] == "medrecon.priors.vae:ConvVAE" and ckpt["config"] == {"note": "x"}
    assert set(ckpt["optimizers"]) == {"model"} and res.checkpoint == tmp_path / "checkpoint.pt"
    loaded = load_prior(tmp_path / "checkpoint.pt", expected=ConvVAE)
    trained = res  # parameters of the loaded model equal the trained ones
    for (k, v), (k2, v2) in zip(loaded.state_dict().items(), ckpt["model_state"].items()):
        assert k == k2 and torch.equal(v, v2)
    assert trained.val_metrics["loss"] > 0


def test_resume_continues_at_same_step_and_matches_uninterrupted(tmp_path):
    data = _Images()
    full = _model()
    fit(full, vae_step, data, CFG)

    # interrupted after step 7 (mid-epoch 0..2: 3 batches per epoch), then resumed
    part = _model()
    fit(part, vae_step, data, FitConfig(**{**CFG.__dict__, "max_steps": 7}), out_dir=tmp_path)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 7
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    res = fit(resumed, vae_step, data, CFG, out_dir=tmp_path, resume=True)
    assert res.step == 9 and res.epoch == 3
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "train_metrics.csv"))]
    assert steps == list(range(1, 10))


def test_keyboard_interrupt_saves_a_resumable_checkpoint(tmp_path):
    data = _Images()
    full = _model()
    fit(full, vae_step, data, CFG)

    def stop_at_5(ctx, metrics):
        if ctx.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), vae_step, data, CFG, out_dir=tmp_path, callbacks=[stop_at_5])
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 5
    resumed = _model(seed=7)
    fit(resumed, vae_step, data, CFG, out_dir=tmp_path, resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data = _Images()
    fit(_model(), vae_step, data, FitConfig(**{**CFG.__dict__, "max_steps": 3}), out_dir=tmp_path)

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        fit(_model(), vae_step, data, CFG, out_dir=tmp_path, resume=True)
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".pt") or ".tmp" in p.name) == [
        "checkpoint.pt"
    ]


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path):
    data = _Images()
    cfg = FitConfig(**{**CFG.__dict__, "max_steps": 1})
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        fit(_model(), vae_step, data, cfg, out_dir=tmp_path, resume=True)
    fit(_model(), vae_step, data, cfg, out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(_model(), vae_step, data, cfg, out_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        fit(
            _model(),
            vae_step,
            data,
            FitConfig(**{**cfg.__dict__, "batch_size": 4}),
            out_dir=tmp_path,
            resume=True,
        )


def test_resume_into_another_model_names_the_mismatch(tmp_path):
    fit(_model(), vae_step, _Images(), FitConfig(**{**CFG.__dict__, "max_steps": 1}), out_dir=tmp_path)
    other = ConvVAE(image_size=8, latent_dim=3, channels=(4,), hidden=16)
    with pytest.raises(ValueError, match=r"latent_dim: expected 3, found 2"):
        fit(other, vae_step, _Images(), CFG, out_dir=tmp_path, resume=True)


def test_two_optimizer_step_and_global_rng_untouched():
    """A GAN-style step with two optimizers fits the same loop; fit never draws from the global RNG."""
    model = _model()
    opts = {
        "encoder": torch.optim.SGD(model.encoder.parameters(), lr=0.1),
        "decoder": torch.optim.SGD(model.decoder_conv.parameters(), lr=0.1),
    }
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def step(m, batch, ctx):
        for name in ("encoder", "decoder"):
            out = m(batch, generator=ctx.generator)
            rec, kl = m.elbo_terms(batch, out)
            ctx.optimizers[name].zero_grad()
            (rec + kl).mean().backward()
            ctx.optimizers[name].step()
        return {"loss": float((rec + kl).mean().detach())}

    state = torch.get_rng_state()
    fit(
        model,
        step,
        _Images(),
        FitConfig(epochs=1, batch_size=8, device="cpu", progress=False, tensorboard=False),
        optimizers=opts,
    )
    assert torch.equal(state, torch.get_rng_state())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("encoder") for n in changed) and any(
        n.startswith("decoder_conv") for n in changed
    )
    assert not any(n.startswith("to_mu") for n in changed)  # no optimizer owns it


def test_grad_clip_bounds_the_flow_step_and_keeps_the_direction():
    """``train.grad_clip``: the flow step reports the norm before clipping and moves the parameters by
    Adam-free SGD exactly ``lr x clip x unit gradient``; without it the full gradient is used."""
    import copy

    from medrecon.priors.patchnr import PatchFlow
    from medrecon.training import StepContext

    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    start = PatchFlow(patch_size=4, n_couplings=1, hidden=8, actnorm=False)  # no data-dependent init

    def step_with(clip):
        model = copy.deepcopy(start)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ctx = StepContext(
            step=0,
            epoch=0,
            optimizers={"model": opt},
            generator=torch.Generator().manual_seed(1),
            device=torch.device("cpu"),
            cfg=FitConfig(grad_clip=clip),
        )
        metrics = flow_step(model, x, ctx)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return metrics, (before - after) / 0.1  # the gradient the optimizer used

    free, g_free = step_with(None)
    clipped, g_clip = step_with(0.5)
    assert free["grad_norm"] == pytest.approx(clipped["grad_norm"]) and free["grad_norm"] > 0.5
    assert float(g_free.norm()) == pytest.approx(free["grad_norm"], rel=1e-4)
    assert float(g_clip.norm()) == pytest.approx(0.5, rel=1e-4)
    assert torch.allclose(g_clip / g_clip.norm(), g_free / g_free.norm(), atol=1e-4)


def test_epoch_order_is_a_seeded_sharded_permutation():
    a = epoch_order(10, seed=3, epoch=1)
    assert sorted(a.tolist()) == list(range(10))
    assert torch.equal(a, epoch_order(10, seed=3, epoch=1)) and not torch.equal(
        a, epoch_order(10, seed=3, epoch=2)
    )
    shards = [epoch_order(10, seed=3, epoch=1, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 4 for s in shards) and set(torch.cat(shards).tolist()) == set(range(10))


def test_train_from_config_writes_checked_weights(tmp_path):
    from medrecon.training.run import train_from_config

    cfg = {
        "model": {
            "name": "conv_vae",
            "params": {"image_size": 16, "latent_dim": 2, "channels": [4], "hidden": 8},
        },
        "data": {"name": "ellipses", "n": 32, "val_n": 8},
        "train": {"epochs": 1, "batch_size": 16, "device": "cpu", "progress": False, "tensorboard": False},
        "output": {"weights": str(tmp_path / "w.pt")},
    }
    assert train_from_config(cfg, ["train.epochs=2"], tmp_path / "run", False) == 0
    model = load_prior(tmp_path / "w.pt", expected=ConvVAE)
    assert model.hparams["latent_dim"] == 2
    meta = read_checkpoint(tmp_path / "w.pt")["metadata"]
    assert meta["steps"] == 4 and meta["config"]["train"]["epochs"] == 2
    assert (tmp_path / "run" / "config.json").exists() and (tmp_path / "run" / "checkpoint.pt").exists()


def test_training_datasets(tmp_path):
    """Items are (1, S, S) float32 in [0, 1]; ellipses are fixed per (seed, index); fastMRI files give magnitudes."""
    from medrecon.data.datasets import MNIST_TEST_INDICES, make_dataset, mnist_split_indices
    from medrecon.data.fastmri import write_fastmri_h5

    ell = make_dataset("ellipses", "train", 16, n=3, seed=4)
    again = make_dataset("ellipses", "train", 16, n=3, seed=4)
    val = make_dataset("ellipses", "val", 16, n=3, seed=4)
    assert ell[2].shape == (1, 16, 16) and ell[2].dtype == torch.float32
    assert torch.equal(ell[2], again[2]) and not torch.equal(ell[2], val[2])
    assert set(mnist_split_indices("test")) == set(MNIST_TEST_INDICES) and len(MNIST_TEST_INDICES) == 500
    assert not set(mnist_split_indices("train")) & set(MNIST_TEST_INDICES)

    g = torch.Generator().manual_seed(0)
    k = torch.complex(torch.randn(2, 3, 20, 18, generator=g), torch.randn(2, 3, 20, 18, generator=g))
    write_fastmri_h5(tmp_path / "a.h5", k)  # 2 slices, 3 coils
    mri = make_dataset("fastmri", "train", 16, root=str(tmp_path))
    assert len(mri) == 2 and mri[1].shape == (1, 16, 16) and float(mri[1].max()) == 1.0
    assert make_dataset("fastmri", "val", 16, root=str(tmp_path)) is None  # no val/ folder
    with pytest.raises(ValueError, match="MNIST images are 28x28"):
        make_dataset("mnist", "train", 32)


# ----------------------------------------------------------------------------- nothing lost (medrecon train)
def _train_cfg(tmp_path, **output):
    import yaml

    cfg = {
        "model": {
            "name": "conv_vae",
            "params": {"image_size": 16, "latent_dim": 2, "channels": [4], "hidden": 8},
        },
        "data": {"name": "ellipses", "n": 32, "val_n": 8},
        "train": {
            "epochs": 1,
            "batch_size": 16,
            "device": "cpu",
            "progress": False,
            "tensorboard": False,
            "log_every": 1,
        },
        "output": output,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _hashes(folder):
    import hashlib

    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_exported_weights_stay_in_the_run_folder_and_are_never_replaced_silently(tmp_path, capsys):
    from medrecon.cli.main import main

    cfg = _train_cfg(tmp_path, weights="data/weights/vae_mnist28.pt")  # the path of a bundled file
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run)]) == 0
    assert (run / "data" / "weights" / "vae_mnist28.pt").is_file()  # inside --out, not the repository's
    load_prior(run / "data" / "weights" / "vae_mnist28.pt", expected=ConvVAE)
    target = tmp_path / "mine.pt"
    target.write_bytes(b"my own weights")
    before = _hashes(tmp_path)
    capsys.readouterr()
    assert (
        main(["train", str(cfg), "--out", str(tmp_path / "run2"), "--set", f"output.weights={target}"]) == 2
    )
    err = capsys.readouterr().err
    assert "exists: pass --replace-weights" in err and err.count("\n") == 1
    assert _hashes(tmp_path) == before and not (tmp_path / "run2").exists()  # refused: nothing written
    assert (
        main(
            [
                "train",
                str(cfg),
                "--out",
                str(tmp_path / "run2"),
                "--set",
                f"output.weights={target}",
                "--replace-weights",
            ]
        )
        == 0
    )
    load_prior(target, expected=ConvVAE)


def test_refused_train_changes_nothing(tmp_path, capsys):
    from medrecon.cli.main import main

    cfg = _train_cfg(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run)]) == 0
    before = _hashes(tmp_path)
    capsys.readouterr()
    for argv, message in [
        ([], "already exists and holds a checkpoint: pass --resume"),
        (["--set", "train.epochs=0"], "'train.epochs' must be >= 1"),
        (["--set", "data.name=imagenet"], "unknown dataset 'imagenet'"),
        (["--set", "model.params.image_size=0"], "'model.params.image_size' must be an integer >= 4"),
        (
            ["--set", "train.device=cuda"]
            if not torch.cuda.is_available()
            else ["--set", "train.device=cuda:99"],
            "train.device",
        ),
        (["--set", "model.name=unet"], "unknown model 'unet'"),
    ]:
        assert main(["train", str(cfg), "--out", str(run), *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert main(["train", str(cfg), "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert _hashes(tmp_path) == before and not (tmp_path / "fresh").exists()


@pytest.mark.slow  # two subprocesses (about 20 s on a busy 2-core machine)
@pytest.mark.parametrize("first, second", [("SIGINT", "SIGTERM")])
def test_a_signal_writes_a_checkpoint_and_exits_130(tmp_path, first, second):
    """A real signal to a ``medrecon train`` subprocess: checkpoint, one line naming it and --resume, exit 130;
    the resumed run continues from that step and stops the same way on the other signal."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = _train_cfg(tmp_path)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def interrupted(extra, sig, min_step):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "medrecon.cli.main",
                "train",
                str(cfg),
                "--out",
                str(run),
                "--set",
                "train.epochs=100000",
                *extra,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            log = run / "train_metrics.csv"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # wait until this process has made two steps
                if log.exists() and sum(1 for _ in open(log)) >= min_step + 3:
                    break
                time.sleep(0.1)
            proc.send_signal(getattr(signal, sig))
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        return proc.returncode, err

    rc, err = interrupted([], first, 0)
    step = read_checkpoint(run / "checkpoint.pt")["step"]
    assert rc == 130 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert f"interrupted ({first}) at step {step}" in last and "checkpoint" in last and "--resume" in last, (
        err
    )
    assert step >= 2
    rc, err = interrupted(["--resume"], second, step)
    assert rc == 130 and "Traceback" not in err and f"({second})" in err, err
    assert read_checkpoint(run / "checkpoint.pt")["step"] > step
