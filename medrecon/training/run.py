"""``medrecon train CONFIG.yaml``: build model, data and step from a YAML and run ``fit``.

A training YAML (see ``configs/train_vae_mnist.yaml``)::

    model:  {name: conv_vae, params: {image_size: 28, latent_dim: 16, channels: [32, 64]}}
    data:   {name: mnist}                 # ellipses | mnist | fastmri (+ n, seed, root)
    train:  {epochs: 20, batch_size: 64, lr: 1.0e-3, seed: 0}   # medrecon.training.FitConfig
    output: {weights: vae_mnist28.pt}     # optional final export, inside the run folder

Several processes: launch the same command with ``torchrun`` (see the README); nothing in the
config changes. ``train.batch_size`` stays the GLOBAL batch (each of the N processes takes
``batch_size / N`` items per step), gradients are averaged by ``DistributedDataParallel``, rank 0
writes ``config.json``, the checkpoints, the logs, ``summary.json`` and the weights, and
``--resume`` works with any number of processes (see ``medrecon.training.fit``).

Nothing is lost: a relative ``output.weights`` is written inside the run folder (``--out``), never
over the bundled ``data/weights/`` files; an existing weights file is replaced only with
``replace_weights=True`` (``medrecon train --replace-weights``). A refused command (an existing run
folder without ``--resume``, nothing to resume, a config error) writes nothing. SIGINT/SIGTERM
during training write a checkpoint and raise :class:`~medrecon.training.fit.TrainingInterrupted`
(``medrecon train`` exits with 130 and prints the ``--resume`` command).

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import torch

from medrecon.priors.base import model_record
from medrecon.training.fit import FitConfig, FitResult, fit, resolve_device
from medrecon.utils_io import git_revision

__all__ = [
    "MODELS",
    "DataConfig",
    "ModelConfig",
    "OutputConfig",
    "TrainRunConfig",
    "build_model",
    "export_weights",
    "train_from_config",
]

#: model.name -> (model class, step_fn, eval_fn[, make_optimizers]) as "module:attr" strings.
MODELS: dict[str, tuple[str, ...]] = {
    "conv_vae": (
        "medrecon.priors.vae:ConvVAE",
        "medrecon.priors.vae:vae_step",
        "medrecon.priors.vae:vae_eval",
    ),
    "dcgan": (
        "medrecon.priors.gan:DCGANPrior",
        "medrecon.priors.gan:gan_step",
        "medrecon.priors.gan:gan_eval",
        "medrecon.priors.gan:make_optimizers",
    ),
    "flow": (
        "medrecon.priors.flow:MultiScaleFlow",
        "medrecon.priors.flow:flow_step",
        "medrecon.priors.flow:flow_eval",
    ),
    # PatchNR: a flow on patches, trained by the flow's step (data: ct_patches / mri_patches)
    "patchnr": (
        "medrecon.priors.patchnr:PatchFlow",
        "medrecon.priors.flow:flow_step",
        "medrecon.priors.flow:flow_eval",
    ),
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

    def __post_init__(self) -> None:
        from medrecon.config import ConfigError
        from medrecon.data.datasets import DATASETS

        if self.name not in DATASETS:
            raise ConfigError(
                f"config key 'data.name': unknown dataset {self.name!r}; valid: {', '.join(DATASETS)}"
            )
        for key in ("n", "val_n"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"config key 'data.{key}' must be >= 1 (or null), got {value}")
        if self.name == "fastmri" and not self.root:
            raise ConfigError("config key 'data.root' must name the fastMRI folder for data.name 'fastmri'")


@dataclass(frozen=True)
class OutputConfig:
    """``weights``: the final weights-only file, relative to the run folder (an absolute path is used as
    given), or None for no export."""

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
    replace_weights: bool = False,
) -> int:
    """Train the model of a YAML config; returns 0 on success (the ``medrecon train`` exit code).

    ``overrides``: ``["train.epochs=2", ...]`` (dotted, as ``medrecon.config.load_config`` takes);
    ``out_dir``: run folder for checkpoint, logs and (relative ``output.weights``) the exported
    weights (default ``runs/<config stem>``); ``resume``: continue from ``out_dir/checkpoint.pt``;
    ``replace_weights``: allow the export to replace an existing weights file. Everything that can be
    checked (config, model parameters, dataset, device, run folder, weights file) is checked before
    anything is written; errors are :class:`~medrecon.config.ConfigError`. Seeds the global torch
    RNG once from ``train.seed`` (model initialisation) and writes ``config.json`` (resolved config,
    seed, git hash) into the run folder. Under ``torchrun`` it joins the process group
    (``medrecon.distributed.init_from_env``) and trains with every rank; only rank 0 writes files.
    """
    from medrecon import distributed

    cfg: TrainRunConfig = _load(config_path, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / _stem(config_path)
    weights = _check_before_training(cfg, out, resume, replace_weights)
    state = distributed.init_from_env(cfg.train.device)
    try:
        code = _train(cfg, config_path, overrides, out, weights, resume, state)
    except BaseException:
        distributed.shutdown()
        raise
    distributed.shutdown(sync=True)
    return code


def _stem(config_path) -> str:
    return Path(config_path).stem if not isinstance(config_path, dict) else "train"


def _load(config_path, overrides) -> TrainRunConfig:
    from medrecon.config import load_config

    return load_config(config_path, TrainRunConfig, overrides=list(overrides))


def weights_path(cfg: TrainRunConfig, out: Path) -> Path | None:
    """Where the run exports its weights: ``output.weights`` inside the run folder ``out`` (absolute: as given)."""
    if not cfg.output.weights:
        return None
    p = Path(cfg.output.weights).expanduser()
    return p if p.is_absolute() else out / p


def _check_before_training(
    cfg: TrainRunConfig, out: Path, resume: bool, replace_weights: bool
) -> Path | None:
    """Every refusal a run can meet, raised before the run writes anything (ConfigError)."""
    import math

    from medrecon.config import ConfigError, check_device
    from medrecon.training.fit import CHECKPOINT_NAME

    t = cfg.train
    for key, low in (
        ("epochs", 1),
        ("batch_size", 1),
        ("log_every", 1),
        ("checkpoint_every", 0),
        ("num_workers", 0),
    ):
        if getattr(t, key) < low:
            raise ConfigError(f"config key 'train.{key}' must be >= {low}, got {getattr(t, key)}")
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError(f"config key 'train.max_steps' must be >= 1 (or null), got {t.max_steps}")
    if not (math.isfinite(t.lr) and t.lr > 0):
        raise ConfigError(f"config key 'train.lr' must be a finite number > 0, got {t.lr}")
    if t.grad_clip is not None and not (
        isinstance(t.grad_clip, int | float) and math.isfinite(t.grad_clip) and t.grad_clip > 0
    ):
        raise ConfigError(
            f"config key 'train.grad_clip' must be a finite number > 0 (or null), got {t.grad_clip!r}"
        )
    check_device(t.device, "train.device")
    if cfg.model.name not in MODELS:
        raise ConfigError(
            f"config key 'model.name': unknown model {cfg.model.name!r}; valid: {', '.join(MODELS)}"
        )
    size = cfg.model.params.get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 4):
        raise ConfigError(f"config key 'model.params.image_size' must be an integer >= 4, got {size!r}")
    if cfg.data.name == "mnist" and size not in (None, 28):
        raise ConfigError(f"config key 'model.params.image_size': MNIST images are 28x28, got {size}")
    if cfg.data.name == "fastmri" and not Path(cfg.data.root or "").is_dir():
        raise ConfigError(f"config key 'data.root': {cfg.data.root} is not a folder")
    ckpt = out / CHECKPOINT_NAME
    if resume:
        if not ckpt.is_file():
            raise ConfigError(
                f"nothing to resume: no checkpoint at {ckpt} (start a new run without --resume)"
            )
    elif out.exists():
        if not out.is_dir():
            raise ConfigError(f"run folder {out} exists and is not a folder; choose another --out")
        if any(out.iterdir()):
            what = "holds a checkpoint" if ckpt.exists() else "is not empty"
            raise ConfigError(
                f"run folder {out} already exists and {what}: pass --resume to continue that run, "
                "or choose another --out"
            )
    weights = weights_path(cfg, out)
    own = (
        resume and weights is not None and out.resolve() in weights.resolve().parents
    )  # the run's own export
    if weights is not None and weights.exists() and not replace_weights and not own:
        raise ConfigError(
            f"weights file {weights} exists: pass --replace-weights to replace it, or set "
            "output.weights to a new file"
        )
    return weights


def _train(
    cfg: TrainRunConfig, config_path, overrides, out: Path, weights: Path | None, resume, state
) -> int:
    from medrecon import distributed
    from medrecon.config import ConfigError
    from medrecon.data.datasets import make_dataset
    from medrecon.utils_io import atomic_write_text

    main_rank = state.rank == 0
    entry = MODELS[cfg.model.name]

    torch.manual_seed(cfg.train.seed)  # the one global seeding: model initialisation
    try:
        model = build_model(cfg.model)
        image_size = int(getattr(model, "image_size", cfg.model.params.get("image_size", 0)))
        train_data = make_dataset(
            cfg.data.name, "train", image_size, n=cfg.data.n, seed=cfg.data.seed, root=cfg.data.root
        )
        val_data = make_dataset(
            cfg.data.name,
            "val",
            image_size,
            n=cfg.data.val_n if cfg.data.name == "ellipses" else None,
            seed=cfg.data.seed,
            root=cfg.data.root,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(" ".join(str(exc).split())) from None
    if len(train_data) < cfg.train.batch_size and cfg.train.drop_last:
        raise ConfigError(
            f"config key 'train.batch_size': {cfg.train.batch_size} is more than the "
            f"{len(train_data)} training items (drop_last would leave no batch)"
        )
    step_fn, eval_fn = _resolve(entry[1]), _resolve(entry[2])
    optimizers = None
    if len(entry) > 3:
        model.to(state.device if state.world_size > 1 else resolve_device(cfg.train.device))
        optimizers = _resolve(entry[3])(model, cfg.train)

    resolved = dataclasses.asdict(cfg)
    run_info = {
        "config": resolved,
        "config_path": str(config_path) if not isinstance(config_path, dict) else None,
        "overrides": list(overrides),
        "seed": cfg.train.seed,
        "git": git_revision(),
        "resume": bool(resume),
        "torch": torch.__version__,
        "argv": sys.argv,
        "world_size": state.world_size,
        "backend": state.backend,
    }
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(run_info, indent=2, default=str))
    distributed.barrier()  # every rank sees the run folder before fit checks it

    if main_rank:
        n_val = len(val_data) if val_data is not None else 0
        print(
            f"training {cfg.model.name} on {cfg.data.name} ({len(train_data)} train / {n_val} val items), "
            f"{sum(p.numel() for p in model.parameters())} parameters, run folder {out}, "
            f"{state.world_size} process(es)",
            file=sys.stderr,
            flush=True,
        )
    t0 = time.perf_counter()
    result: FitResult = fit(
        model,
        step_fn,
        train_data,
        cfg.train,
        optimizers=optimizers,
        out_dir=out,
        resume=resume,
        val_data=val_data,
        eval_fn=eval_fn,
        config=resolved,
        rank=state.rank,
        world_size=state.world_size,
    )
    if not main_rank:
        return 0
    seconds = time.perf_counter() - t0
    summary = {
        "steps": result.step,
        "epochs": result.epoch,
        "seconds": round(seconds, 1),
        "train": result.train_metrics,
        "val": result.val_metrics,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    if weights is not None:
        path = export_weights(
            model,
            weights,
            metadata={
                "config": resolved,
                "config_path": run_info["config_path"],
                "overrides": list(overrides),
                "seed": cfg.train.seed,
                "git": run_info["git"],
                **summary,
            },
        )
        print(f"weights written to {path}", file=sys.stderr)
    print(json.dumps(summary), file=sys.stderr)
    return 0
