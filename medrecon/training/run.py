"""``medrecon train CONFIG.yaml``: build model, data and step from a YAML and run ``fit``.

A training YAML (see ``configs/train_vae_mnist.yaml``)::

    model:  {name: conv_vae, params: {image_size: 28, latent_dim: 16, channels: [32, 64]}}
    data:   {name: mnist}                 # ellipses | mnist | fastmri (+ n, seed, root)
    train:  {epochs: 20, batch_size: 64, lr: 1.0e-3, seed: 0}   # medrecon.training.FitConfig
    output: {weights: data/weights/vae_mnist28.pt}              # optional final export

Several processes: launch the same command with ``torchrun`` (see the README); nothing in the
config changes. ``train.batch_size`` stays the GLOBAL batch (each of the N processes takes
``batch_size / N`` items per step), gradients are averaged by ``DistributedDataParallel``, rank 0
writes ``config.json``, the checkpoints, the logs, ``summary.json`` and the weights, and
``--resume`` works with any number of processes (see ``medrecon.training.fit``).

Extension point: ``MODELS`` maps ``model.name`` to ``("module:Class", "module:step_fn",
"module:eval_fn")`` (and optionally a fourth entry ``"module:make_optimizers"`` returning the
optimizer dict, e.g. a GAN's two Adams). Flow and GAN priors add their line here.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Sequence

import torch

from medrecon.priors.base import model_record
from medrecon.training.fit import FitConfig, FitResult, fit, resolve_device
from medrecon.utils_io import git_revision

__all__ = ["ModelConfig", "DataConfig", "OutputConfig", "TrainRunConfig", "MODELS", "train_from_config",
           "build_model", "export_weights"]

#: model.name -> (model class, step_fn, eval_fn[, make_optimizers]) as "module:attr" strings.
MODELS: dict[str, tuple[str, ...]] = {
    "conv_vae": ("medrecon.priors.vae:ConvVAE", "medrecon.priors.vae:vae_step", "medrecon.priors.vae:vae_eval"),
    "dcgan": ("medrecon.priors.gan:DCGANPrior", "medrecon.priors.gan:gan_step", "medrecon.priors.gan:gan_eval",
              "medrecon.priors.gan:make_optimizers"),
    "flow": ("medrecon.priors.flow:MultiScaleFlow", "medrecon.priors.flow:flow_step", "medrecon.priors.flow:flow_eval"),
}


@dataclass(frozen=True)
class ModelConfig:
    """``name``: a key of ``MODELS``; ``params``: the model constructor's keyword arguments."""

    name: str = "conv_vae"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """``name``: ellipses | mnist | fastmri; ``n``: items (ellipses: phantoms per epoch; others: cap);
    ``seed``: the ellipse phantoms' seed (validation uses seed + 1); ``root``: fastMRI folder;
    ``val_n``: validation items (ellipses; others use their held-out split)."""

    name: str = "mnist"
    n: int | None = None
    val_n: int | None = 256
    seed: int = 0
    root: str | None = None


@dataclass(frozen=True)
class OutputConfig:
    """``weights``: where the final weights-only file goes (relative to the working directory), or None."""

    weights: str | None = None


@dataclass(frozen=True)
class TrainRunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: FitConfig = field(default_factory=FitConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """The model named by ``cfg`` (uses the global torch RNG for initialisation: seed it first)."""
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; valid: {', '.join(MODELS)}")
    cls = _resolve(MODELS[cfg.name][0])
    try:
        return cls(**dict(cfg.params))
    except TypeError as exc:
        raise ValueError(f"model.params do not fit {cls.__name__}: {exc}") from exc


def export_weights(model: torch.nn.Module, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write the weights-only file that ``medrecon.priors.base.load_prior`` reads (atomic)."""
    from medrecon.utils_io import atomic_save_torch

    rec = model_record(model)
    rec["metadata"] = json.loads(json.dumps(metadata or {}, default=str))  # plain types only
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_torch(rec, path)
    return path


def train_from_config(
    config_path: str | os.PathLike | dict,
    overrides: Sequence[str] = (),
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
) -> int:
    """Train the model of a YAML config; returns 0 on success (the ``medrecon train`` exit code).

    ``overrides``: ``["train.epochs=2", ...]`` (dotted, as ``medrecon.config.load_config`` takes);
    ``out_dir``: run folder for checkpoint and logs (default ``runs/<config stem>``); ``resume``:
    continue from ``out_dir/checkpoint.pt``. Seeds the global torch RNG once from ``train.seed``
    (model initialisation) and writes ``config.json`` (resolved config, seed, git hash) there.
    Under ``torchrun`` it joins the process group (``medrecon.distributed.init_from_env``) and
    trains with every rank; only rank 0 writes files.
    """
    from medrecon import distributed

    cfg: TrainRunConfig = _load(config_path, overrides)
    state = distributed.init_from_env(cfg.train.device)
    try:
        code = _train(cfg, config_path, overrides, out_dir, resume, state)
    except BaseException:
        distributed.shutdown()
        raise
    distributed.shutdown(sync=True)
    return code


def _load(config_path, overrides) -> "TrainRunConfig":
    from medrecon.config import load_config

    return load_config(config_path, TrainRunConfig, overrides=list(overrides))


def _train(cfg: "TrainRunConfig", config_path, overrides, out_dir, resume, state) -> int:
    from medrecon import distributed
    from medrecon.data.datasets import make_dataset

    main_rank = state.rank == 0
    stem = Path(config_path).stem if not isinstance(config_path, dict) else "train"
    out = Path(out_dir) if out_dir is not None else Path("runs") / stem
    if cfg.model.name not in MODELS:
        raise ValueError(f"unknown model {cfg.model.name!r}; valid: {', '.join(MODELS)}")
    entry = MODELS[cfg.model.name]

    torch.manual_seed(cfg.train.seed)  # the one global seeding: model initialisation
    model = build_model(cfg.model)
    image_size = int(getattr(model, "image_size", cfg.model.params.get("image_size", 0)))
    train_data = make_dataset(cfg.data.name, "train", image_size, n=cfg.data.n, seed=cfg.data.seed,
                              root=cfg.data.root)
    val_data = make_dataset(cfg.data.name, "val", image_size, n=cfg.data.val_n if cfg.data.name == "ellipses" else None,
                            seed=cfg.data.seed, root=cfg.data.root)
    step_fn, eval_fn = _resolve(entry[1]), _resolve(entry[2])
    optimizers = None
    if len(entry) > 3:
        model.to(state.device if state.world_size > 1 else resolve_device(cfg.train.device))
        optimizers = _resolve(entry[3])(model, cfg.train)

    resolved = dataclasses.asdict(cfg)
    run_info = {"config": resolved, "config_path": str(config_path) if not isinstance(config_path, dict) else None,
                "overrides": list(overrides), "seed": cfg.train.seed, "git": git_revision(), "resume": bool(resume),
                "torch": torch.__version__, "argv": sys.argv, "world_size": state.world_size,
                "backend": state.backend}
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(run_info, indent=2, default=str))
    distributed.barrier()  # every rank sees the run folder before fit checks it

    if main_rank:
        n_val = len(val_data) if val_data is not None else 0
        print(f"training {cfg.model.name} on {cfg.data.name} ({len(train_data)} train / {n_val} val items), "
              f"{sum(p.numel() for p in model.parameters())} parameters, run folder {out}, "
              f"{state.world_size} process(es)", file=sys.stderr)
    t0 = time.perf_counter()
    result: FitResult = fit(model, step_fn, train_data, cfg.train, optimizers=optimizers, out_dir=out,
                            resume=resume, val_data=val_data, eval_fn=eval_fn, config=resolved,
                            rank=state.rank, world_size=state.world_size)
    if not main_rank:
        return 0
    seconds = time.perf_counter() - t0
    summary = {"steps": result.step, "epochs": result.epoch, "seconds": round(seconds, 1),
               "train": result.train_metrics, "val": result.val_metrics}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.output.weights:
        path = export_weights(model, cfg.output.weights, metadata={
            "config": resolved, "config_path": run_info["config_path"], "overrides": list(overrides),
            "seed": cfg.train.seed, "git": run_info["git"], **summary})
        print(f"weights written to {path}", file=sys.stderr)
    print(json.dumps(summary), file=sys.stderr)
    return 0
