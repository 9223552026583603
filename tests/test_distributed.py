"""torch.distributed on CPU (gloo, 2 processes launched by ``python -m torch.distributed.run``):
training with DDP follows the one-process trajectory of the same global batch, a checkpoint from
2 processes resumes in 1, a sharded ``medrecon reconstruct`` equals the one-process run, and a
killed rank ends the job (no hang) leaving the last checkpoint readable.

Each launch starts 3 Python processes (agent + 2 workers), a few seconds on a shared 2-core box."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medrecon import distributed
from medrecon.cli.main import main
from medrecon.priors.base import read_checkpoint
from medrecon.training import FitConfig, fit
from medrecon.training.fit import step_seed

# The worker: a tiny VAE trained with a deterministic step (encoder mean, no sampling), so that
# DDP's averaged gradient of the global batch equals the one-process gradient (no BatchNorm here).
WORKER = textwrap.dedent("""
    import os, sys, json
    import torch
    from medrecon import distributed
    from medrecon.priors.vae import ConvVAE
    from medrecon.training import FitConfig, fit

    class Images(torch.utils.data.Dataset):
        def __init__(self, n=32):
            g = torch.Generator().manual_seed(0)
            self.x = torch.rand(n, 1, 8, 8, generator=g)
        def __len__(self):
            return len(self.x)
        def __getitem__(self, i):
            return self.x[i]

    def model():
        torch.manual_seed(0)
        return ConvVAE(image_size=8, latent_dim=2, channels=(4,), hidden=16)

    def step(net, x, ctx):
        vae = getattr(net, "module", net)
        out = net(x, sample=False)
        rec, kl = vae.elbo_terms(x, out)
        loss = (rec + 0.1 * kl).mean()
        opt = ctx.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    def cfg(**kw):
        base = dict(epochs=2, batch_size=8, lr=1e-2, seed=3, device="cpu", log_every=1, progress=False,
                    tensorboard=False)
        base.update(kw)
        return FitConfig(**base)

    if __name__ == "__main__":
        out, max_steps, kill_step, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        state = distributed.init_from_env("cpu", timeout_s=20)
        callbacks = []
        if kill_step:
            def die(ctx, metrics):
                if ctx.rank == 1 and ctx.step == kill_step:
                    os.kill(os.getpid(), 9)  # a dead peer: no exception, no cleanup
            callbacks.append(die)
        m = model()
        res = fit(m, step, Images(), cfg(max_steps=max_steps, checkpoint_every=every), out_dir=out,
                  callbacks=callbacks, rank=state.rank, world_size=state.world_size)
        if state.rank == 0:
            torch.save({k: v.clone() for k, v in m.state_dict().items()}, os.path.join(out, "params.pt"))
            with open(os.path.join(out, "result.json"), "w") as f:
                json.dump({"step": res.step, "epoch": res.epoch, "loss": res.train_metrics["loss"],
                           "world_size": state.world_size, "backend": state.backend}, f)
        distributed.shutdown()
""")


def _torchrun(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDRECON_DIST_TIMEOUT_S": "20", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max_restarts=0",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _load_worker(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        return script, importlib.import_module("worker")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("worker", None)


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    state = distributed.init_from_env("cpu")
    assert (state.rank, state.world_size, state.backend) == (0, 1, None)
    assert distributed.is_main() and distributed.gather_objects({"a": 1}) == [{"a": 1}]
    distributed.barrier()
    distributed.shutdown()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        distributed.init_from_env("cpu")


def test_fit_checks_the_global_batch_and_the_process_group():
    from medrecon.priors.vae import ConvVAE, vae_step

    data = torch.rand(8, 1, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        fit(
            ConvVAE(image_size=8, latent_dim=2, channels=(4,), hidden=16),
            vae_step,
            data,
            FitConfig(batch_size=3, device="cpu", progress=False, tensorboard=False),
            rank=0,
            world_size=2,
        )
    with pytest.raises(ValueError, match="process group"):
        fit(
            ConvVAE(image_size=8, latent_dim=2, channels=(4,), hidden=16),
            vae_step,
            data,
            FitConfig(batch_size=4, device="cpu", progress=False, tensorboard=False),
            rank=0,
            world_size=2,
        )
    assert step_seed(0, 0, 1) != step_seed(0, 0, 2) and step_seed(1, 0, 1) != step_seed(0, 0, 1)


@pytest.mark.slow
def test_two_processes_match_one_and_resume_in_one(tmp_path):
    script, worker = _load_worker(tmp_path)
    # one process, 8 steps (2 epochs x 4 global batches of 8)
    ref = worker.model()
    res1 = fit(ref, worker.step, worker.Images(), worker.cfg())
    assert res1.step == 8
    # two processes (4 items per rank per step), stopped after 5 steps with a checkpoint
    out = tmp_path / "ddp"
    t0 = time.perf_counter()
    proc = _torchrun([str(script), str(out), "5", "0", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = yaml.safe_load((out / "result.json").read_text())
    assert (info["world_size"], info["backend"], info["step"]) == (2, "gloo", 5)
    ckpt = read_checkpoint(out / "checkpoint.pt")
    assert (
        ckpt["step"],
        ckpt["epoch"],
        ckpt["batch_in_epoch"],
        ckpt["samples_in_epoch"],
        ckpt["world_size"],
    ) == (5, 1, 1, 8, 2)
    # the same trajectory: one process after 5 steps
    ref5 = worker.model()
    fit(ref5, worker.step, worker.Images(), worker.cfg(max_steps=5))
    ddp = torch.load(out / "params.pt", weights_only=True)
    diff = max(float((ddp[k] - v).abs().max()) for k, v in ref5.state_dict().items())
    print(
        f"max |param(2 processes) - param(1 process)| after 5 Adam steps: {diff:.2e} "
        f"({time.perf_counter() - t0:.1f} s launch)"
    )
    assert diff < 1e-5
    # resume the 2-process checkpoint with 1 process: continues at global step 5, ends as the 1-process run
    resumed = worker.model()
    res = fit(resumed, worker.step, worker.Images(), worker.cfg(), out_dir=out, resume=True)
    assert res.step == 8 and res.epoch == 2
    diff = max(float((resumed.state_dict()[k] - v).abs().max()) for k, v in ref.state_dict().items())
    assert diff < 1e-5, diff
    rows = list(csv.DictReader(open(out / "train_metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    # the logged 2-process losses are the global-batch means: equal to the one-process log
    for r, h in zip(rows, res1.history):
        assert abs(float(r["loss"]) - h["loss"]) < 1e-4 * abs(h["loss"])


@pytest.mark.slow
def test_medrecon_train_under_torchrun(tmp_path):
    """The CLI path: same config, only the launcher changes; rank 0 writes the run folder and the weights."""
    cfg = {
        "model": {
            "name": "conv_vae",
            "params": {"image_size": 16, "latent_dim": 4, "channels": [4, 8], "hidden": 16},
        },
        "data": {"name": "ellipses", "n": 32, "val_n": 8, "seed": 0},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "seed": 0,
            "device": "cpu",
            "log_every": 2,
            "progress": False,
            "tensorboard": False,
        },
        "output": {"weights": str(tmp_path / "w.pt")},
    }
    path = tmp_path / "train_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _torchrun(
        ["-m", "medrecon.cli.main", "train", str(path), "--out", str(tmp_path / "run")], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = yaml.safe_load((tmp_path / "run" / "config.json").read_text())
    assert (info["world_size"], info["backend"]) == (2, "gloo")
    summary = yaml.safe_load((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["val"]["loss"] > 0  # 32 items / global batch 8
    assert read_checkpoint(tmp_path / "w.pt")["model_class"] == "medrecon.priors.vae:ConvVAE"
    assert proc.stderr.count("training conv_vae") == 1  # one rank talks


@pytest.mark.slow
def test_killed_rank_ends_the_job_and_keeps_the_last_checkpoint(tmp_path):
    script, _ = _load_worker(tmp_path)
    out = tmp_path / "killed"
    t0 = time.perf_counter()
    proc = _torchrun([str(script), str(out), "8", "3", "2"], tmp_path, timeout=90)  # rank 1 dies after step 3
    seconds = time.perf_counter() - t0
    assert proc.returncode != 0
    assert "FAILED" in proc.stderr or "failed" in proc.stderr, proc.stderr[-3000:]
    assert "Signal 9" in proc.stderr or "SIGKILL" in proc.stderr or "exitcode  : -9" in proc.stderr, (
        proc.stderr[-3000:]
    )
    assert seconds < 60, seconds  # ended by the agent / the collective error, not by a hang
    ckpt = read_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 2 and not (out / "params.pt").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_dead_peer_without_the_agent_raises_a_clear_error(tmp_path):
    """Ranks started by hand (as srun would, no torchrun agent): the survivor's collective fails at once."""
    import socket

    script, _ = _load_worker(tmp_path)
    out = tmp_path / "killed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    t0 = time.perf_counter()
    for r in (0, 1):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "WORLD_SIZE": "2",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), str(out), "8", "3", "2"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=90) for p in procs]
    seconds = time.perf_counter() - t0
    assert procs[1].returncode == -9 and procs[0].returncode != 0
    err = results[0][1]
    assert "rank 0/2: a collective failed after step 3" in err and "another process died" in err, err[-3000:]
    assert "step 2) is intact" in err
    assert seconds < 60, seconds
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 2


TINY = {
    "name": "tiny_dist",
    "seed": 5,
    "image_size": 24,
    "images": [{"kind": "ellipses", "n": 2, "seed": 2}, {"kind": "shepp_logan"}],  # 3: an uneven 2 + 1 split
    "operator": {"modality": "ct", "n_angles": 8, "noise_level": 0.03},
    "methods": [
        {"name": "fbp"},
        {"name": "tv", "options": {"lam": "discrepancy", "n_iter": 40}},
        {"name": "dip", "options": {"n_iter": 4, "channels": 4, "depth": 2, "stopping": "none"}},
    ],
    "figure_max_images": 2,
}


def _rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:discrepancy principle"
)  # 40 TV iterations: a loose bracket, same on both runs
def test_sharded_reconstruction_equals_one_process(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY, sort_keys=False))
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["reconstruct", str(cfg), "--out", str(one), "--quiet"]) == 0
    proc = _torchrun(
        ["-m", "medrecon.cli.main", "reconstruct", str(cfg), "--out", str(two), "--quiet"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rows(one) == _rows(two)  # same rows, same order (seconds aside)
    assert len(_rows(one)) == 3 * 3
    files = sorted(p.relative_to(one) for p in (one / "recon").rglob("*.npy"))
    assert files == sorted(p.relative_to(two) for p in (two / "recon").rglob("*.npy")) and len(files) == 9
    worst = max(float(np.abs(np.load(one / f) - np.load(two / f)).max()) for f in files)
    print(f"max |recon(2 processes) - recon(1 process)| = {worst:.2e}")
    assert worst < 1e-5
    for name in ("summary.txt", "figure.png", "config.yaml", "run.json"):
        assert (two / name).is_file(), name
    run = yaml.safe_load((two / "run.json").read_text())
    assert (
        run["world_size"] == 2
        and run["noise_sigma"] == yaml.safe_load((one / "run.json").read_text())["noise_sigma"]
    )
