"""``fit(model, step_fn, data, cfg)``: the one training loop of medrecon (VAE, flow and GAN priors).

What the loop owns, so that no prior rewrites it:

* **Data order.** Each epoch visits ``data`` (a map-style ``torch.utils.data.Dataset``) in the
  permutation ``epoch_order(len(data), cfg.seed, epoch, rank, world_size)``: a pure function of
  the seed and the epoch, sharded ``rank::world_size`` like ``DistributedSampler``. A resumed run
  therefore sees exactly the batches the interrupted one would have seen (it skips the batches of
  the current epoch already done, without loading them).
* **Several processes** (``rank``/``world_size``, e.g. from ``medrecon.distributed.init_from_env``
  under ``torchrun``). ``cfg.batch_size`` is the GLOBAL batch: each rank takes
  ``batch_size // world_size`` items (it must divide). Because the shards are strided, global
  batch ``k`` (the union of the ranks' ``k``-th batches) is exactly the single-process batch ``k``
  of the same seed, and the model is wrapped in ``DistributedDataParallel``, which averages the
  ranks' gradients: with a mean-reduced loss, a deterministic step and no BatchNorm (or
  ``cfg.sync_batchnorm`` on GPUs), N processes follow the one-process trajectory up to float
  rounding. Layers that initialise themselves from their first batch (Glow's ActNorm) see the
  rank's ``batch_size / N`` items; after the first step every rank copies rank 0's parameters and
  buffers, so the replicas agree (the one place where N processes and one differ beyond rounding).
  The epoch length is ``len(data) // batch_size`` global batches (``drop_last``; else
  ceil, the last batch padded as ``DistributedSampler`` does). Step metrics are averaged over the
  ranks before logging; rank 0 writes every file.
* **Randomness inside a step.** ``ctx.generator`` (a ``torch.Generator`` on the training device)
  is the only RNG a step should use (VAE reparametrisation noise, GAN latent draws). Before each
  step it is re-seeded from ``(cfg.seed, rank, step)`` (``step_seed``), so the draws of any step
  are a pure function of those three numbers: a resume is exact, also from a checkpoint written by
  a different number of processes (the resumed run then draws what a run started with the new
  number of processes would draw at that step). Validation re-seeds it from ``(cfg.seed, step)``
  on every rank. The global torch/NumPy/Python RNG states (rank 0's) are saved and restored too,
  for layers that use them (dropout); those draws are bit-identical on resume only at the same
  world size.
* **Checkpoints.** ``out_dir/checkpoint.pt``, written atomically (``medrecon.utils_io``) every
  ``cfg.checkpoint_every`` steps, at the end of each epoch and at the end: model (class path,
  hyperparameters, weights), every optimizer, step, epoch, position in the epoch, RNG states, the
  run's config. ``torch.load(weights_only=True)`` reads it.
* **Interruption.** While ``fit`` runs in the main thread, SIGINT (Ctrl-C) and SIGTERM only set a
  flag: the current step finishes, a checkpoint is written (atomically) and ``fit`` raises
  :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) naming it; ``resume=True`` continues from
  there. A second signal stops at once (the last checkpoint stays intact). With several processes
  the ranks agree after every step, so all of them stop at the same step.
* **Logging.** Running means of the step's metrics every ``cfg.log_every`` steps to
  ``out_dir/train_metrics.csv`` and TensorBoard (``out_dir/tensorboard``), validation means each
  epoch to ``val_metrics.csv``; a tqdm progress bar.

Extension points:

* ``step_fn(model, batch, ctx) -> dict[str, float]`` does the whole update: zero_grad, backward,
  ``optimizer.step()`` on the optimizers it needs from ``ctx.optimizers`` (a dict by name). A GAN
  passes ``optimizers={"generator": ..., "discriminator": ...}`` and a step that updates both.
  Steps must call ``model(...)`` (its ``forward``) for the parts being trained, not bare
  submodules, so that the ``DistributedDataParallel`` wrapper ``fit`` passes when
  ``world_size > 1`` syncs gradients; reach other methods through ``getattr(model, "module", model)``.
* ``eval_fn(model, batch, ctx) -> dict[str, float]`` (no grad) on ``val_data`` each epoch.
* ``callbacks``: ``cb(ctx, metrics)`` after every step (e.g. schedulers, EMA of weights).
* The model must expose ``hparams`` (see ``medrecon.priors.base``) so checkpoints can be checked.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate

from medrecon.priors.base import check_state_matches, model_record, read_checkpoint

__all__ = [
    "CHECKPOINT_NAME",
    "FitConfig",
    "FitResult",
    "StepContext",
    "TrainingInterrupted",
    "clip_gradients",
    "epoch_order",
    "fit",
    "resolve_device",
    "step_seed",
]

CHECKPOINT_NAME = "checkpoint.pt"


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped ``fit`` between two steps; ``checkpoint`` (or None without ``out_dir``) holds
    the state after ``step`` steps."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None) -> None:
        where = f"checkpoint {checkpoint} written" if checkpoint is not None else "no out_dir: nothing saved"
        super().__init__(f"{signal_name} at step {step}: {where}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


class _StopSignals:
    """Inside ``with``: the first SIGINT/SIGTERM sets ``self.signal``; a second one raises KeyboardInterrupt.
    Only in the main thread (elsewhere ``signal.signal`` is not allowed; nothing changes there)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict = {}

    def _handler(self, signum, frame) -> None:
        import signal

        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> _StopSignals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class FitConfig:
    """Settings of ``fit`` (the ``train:`` section of a training YAML).

    ``epochs``: passes over the data; ``max_steps``: stop earlier after this many optimizer steps
    (counted over the whole run, including before a resume); ``checkpoint_every``: steps between
    checkpoints (0: only at epoch ends); ``device``: ``"auto"`` (cuda, else mps, else cpu) or a
    torch device string; ``lr``: learning rate of the default Adam (when ``fit`` gets no optimizers).
    ``batch_size`` is the global batch (split over the processes of a distributed run);
    ``sync_batchnorm``: convert BatchNorm layers to ``SyncBatchNorm`` when ``world_size > 1``
    (CUDA only; otherwise each rank normalises with its own batch statistics).
    ``grad_clip``: the largest global gradient norm of a step (``torch.nn.utils.clip_grad_norm_``,
    applied by the step functions that call :func:`clip_gradients`, e.g. the flows'); None: no clipping.
    """

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    max_steps: int | None = None
    device: str = "auto"
    log_every: int = 20
    checkpoint_every: int = 0
    drop_last: bool = True
    num_workers: int = 0
    progress: bool = True
    tensorboard: bool = True
    sync_batchnorm: bool = False
    grad_clip: float | None = None


def clip_gradients(model: torch.nn.Module, ctx) -> float:
    """Clip the gradients of ``model`` to ``ctx.cfg.grad_clip`` (if set) after ``backward``; returns
    the global gradient norm before clipping (for the step's metrics; inf/nan if a gradient is)."""
    limit = getattr(getattr(ctx, "cfg", None), "grad_clip", None)
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(params, float("inf") if limit is None else limit))


@dataclass
class StepContext:
    """What a ``step_fn`` / ``eval_fn`` may use besides the model and the batch."""

    step: int
    epoch: int
    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator
    device: torch.device
    cfg: FitConfig
    rank: int = 0
    world_size: int = 1


@dataclass
class FitResult:
    """The end state of a run: counters, last logged train means, last validation means, paths."""

    step: int
    epoch: int
    train_metrics: dict[str, float]
    val_metrics: dict[str, float]
    checkpoint: Path | None
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda if available, else mps, else cpu; otherwise ``torch.device(name)``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """The indices one rank visits in ``epoch``: a permutation of ``range(n)`` that depends only on
    ``(seed, epoch)``, padded to a multiple of ``world_size`` and sharded ``rank::world_size``.

    >>> epoch_order(6, seed=0, epoch=0).tolist() == epoch_order(6, seed=0, epoch=0).tolist()
    True
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g)
    if world_size > 1:
        total = math.ceil(n / world_size) * world_size
        perm = torch.cat([perm, perm[: total - n]])
        perm = perm[rank::world_size]
    return perm


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of ``ctx.generator`` for optimizer step ``step`` (0-based) on ``rank``: a stable
    64-bit hash of the three numbers (the same on every machine and Python process).

    >>> step_seed(0, 0, 5) == step_seed(0, 0, 5) != step_seed(0, 1, 5)
    True
    """
    digest = hashlib.blake2b(
        f"medrecon-fit/{int(seed)}/{int(rank)}/{int(step)}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _is_collective_failure(exc: BaseException) -> bool:
    """A torch.distributed error (dead peer, timeout), as raised by gloo/NCCL during a collective."""
    import torch.distributed as dist

    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    text = str(exc)
    return any(
        s in text for s in ("gloo", "NCCL", "Connection closed", "Connection reset", "timed out", "Timed out")
    )


def _broadcast_state(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (after the first step of a distributed run:
    DDP keeps replicas equal only if they start equal and change only through averaged gradients)."""
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _plain(obj: Any) -> Any:
    """A config as nested dicts/lists/primitives (safe for ``weights_only`` loading)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _rng_state(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    state = {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class _CSVLog:
    """Append rows to a CSV whose header is fixed by the first row; on resume, rows after the resumed
    step are dropped so the file matches the run."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.exists():
            if resume_step is None:
                path.unlink()
            else:
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
                    fields = list(rows[0].keys()) if rows else None
                rows = [r for r in rows if int(float(r["step"])) <= resume_step]
                if fields:
                    self.fields = fields
                    with open(path, "w", newline="") as f:
                        w = csv.DictWriter(f, fieldnames=fields)
                        w.writeheader()
                        w.writerows(rows)

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizers: dict,
    ctx: StepContext,
    batch_in_epoch: int,
    config: Any,
    metrics: dict,
) -> None:
    """Everything a resume needs, in global units: ``step`` (optimizer steps), ``epoch``,
    ``batch_in_epoch`` (global batches done in this epoch; ``samples_in_epoch`` = that times the
    global batch), so any number of processes can continue it."""
    from medrecon.utils_io import atomic_save_torch

    ckpt = model_record(model)
    ckpt.update(
        optimizers={k: o.state_dict() for k, o in optimizers.items()},
        step=ctx.step,
        epoch=ctx.epoch,
        batch_in_epoch=batch_in_epoch,
        samples_in_epoch=batch_in_epoch * ctx.cfg.batch_size,
        world_size=ctx.world_size,
        rng=_rng_state(ctx.generator),
        config=_plain(config),
        fit_config=_plain(ctx.cfg),
        metrics={k: float(v) for k, v in metrics.items()},
        torch_version=str(torch.__version__),
    )
    atomic_save_torch(ckpt, path)


def _evaluate(model: nn.Module, eval_fn: Callable, val_data: Dataset, ctx: StepContext, collate_fn) -> dict:
    # every rank evaluates the whole validation set with the same noise (so rank 0's log equals a
    # single-process run's); the generator is re-seeded as for a step of rank 0, offset by a constant.
    ctx.generator.manual_seed(step_seed(ctx.cfg.seed, -1, ctx.step))
    loader = DataLoader(
        val_data,
        batch_size=ctx.cfg.batch_size,
        shuffle=False,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(0),
    )
    sums: dict[str, float] = {}
    count = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = _to_device(batch, ctx.device)
            n = len(batch[0] if isinstance(batch, (list, tuple)) else batch)
            for k, v in eval_fn(model, batch, ctx).items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            count += n
    model.train(was_training)
    return {k: v / max(count, 1) for k, v in sums.items()}


def fit(
    model: nn.Module,
    step_fn: Callable[[nn.Module, Any, StepContext], Mapping[str, float]],
    data: Dataset,
    cfg: FitConfig,
    *,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool | str | os.PathLike = False,
    val_data: Dataset | None = None,
    eval_fn: Callable[[nn.Module, Any, StepContext], Mapping[str, float]] | None = None,
    callbacks: Sequence[Callable[[StepContext, Mapping[str, float]], None]] = (),
    config: Any = None,
    collate_fn: Callable | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> FitResult:
    """Train ``model`` with ``step_fn`` on ``data`` for ``cfg.epochs`` epochs (or ``cfg.max_steps`` steps).

    Args:
        model: an ``nn.Module`` with ``hparams`` (moved to the training device here).
        step_fn: one update, ``step_fn(model, batch, ctx) -> {"loss": ..., ...}`` (see module doc).
        data: map-style dataset; items are collated by ``collate_fn`` (default: torch's).
        optimizers: by name; default ``{"model": Adam(model.parameters(), lr=cfg.lr)}``. Create
            them after moving the model to ``resolve_device(cfg.device)`` when passing your own.
        out_dir: where checkpoint, CSV logs and TensorBoard events go (None: no files at all).
        resume: ``True`` continues from ``out_dir/checkpoint.pt``; a path continues from that file.
            The model must match the checkpoint (class, hyperparameters, shapes), and the optimizer
            names too. Without ``resume``, an ``out_dir`` that already holds a checkpoint is an error.
        config: the run's resolved configuration, stored in every checkpoint.

    Returns a ``FitResult``; ``history`` holds every logged train row.
    """
    t_start = time.perf_counter()
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} of world_size {world_size}: expected 0 <= rank < world_size")
    if cfg.batch_size % world_size:
        raise ValueError(
            f"train.batch_size={cfg.batch_size} is the global batch: it must be divisible by the "
            f"number of processes ({world_size})"
        )
    local_batch = cfg.batch_size // world_size
    device = resolve_device(cfg.device)
    if world_size > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK (init_from_env set it)
    model.to(device)
    model.train()
    if optimizers is None:
        optimizers = {"model": torch.optim.Adam(model.parameters(), lr=cfg.lr)}
    optimizers = dict(optimizers)
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed) * 7919 + rank)
    ctx = StepContext(
        step=0,
        epoch=0,
        optimizers=optimizers,
        generator=generator,
        device=device,
        cfg=cfg,
        rank=rank,
        world_size=world_size,
    )
    start_batch = 0
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None

    resume_file: Path | None = None
    if resume:
        resume_file = Path(resume) if not isinstance(resume, bool) else ckpt_path
        if resume_file is None or not resume_file.is_file():
            raise FileNotFoundError(f"nothing to resume: no checkpoint at {resume_file}")
    elif ckpt_path is not None and ckpt_path.exists():
        raise FileExistsError(
            f"{ckpt_path} exists: pass resume=True (medrecon train --resume) to continue that run, "
            "or choose another output directory"
        )
    if resume_file is not None:
        ckpt = read_checkpoint(resume_file)
        check_state_matches(model, ckpt, source=f"checkpoint {resume_file}")
        getattr(model, "module", model).load_state_dict(ckpt["model_state"])
        if set(ckpt["optimizers"]) != set(optimizers):
            raise ValueError(
                f"checkpoint {resume_file} has optimizers {sorted(ckpt['optimizers'])}, this run has {sorted(optimizers)}"
            )
        for k, o in optimizers.items():
            o.load_state_dict(ckpt["optimizers"][k])
        _set_rng_state(ckpt["rng"], generator)
        ctx.step, ctx.epoch, start_batch = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt["batch_in_epoch"])
        resumed_metrics = {k: float(v) for k, v in ckpt.get("metrics", {}).items()}
        old = ckpt.get("fit_config", {})
        for key in ("batch_size", "seed"):
            if key in old and old[key] != getattr(cfg, key):
                raise ValueError(
                    f"cannot resume with {key}={getattr(cfg, key)!r}: the checkpoint was trained with "
                    f"{key}={old[key]!r} (the data order depends on it)"
                )

    n = len(data)
    # global batches per epoch (each rank's shard gives at least this many local batches)
    steps_per_epoch = n // cfg.batch_size if cfg.drop_last else math.ceil(n / cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(
            f"dataset of {n} items gives no batch of size {cfg.batch_size} (drop_last={cfg.drop_last})"
        )
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)

    writer = None
    train_log = val_log = None
    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        resume_step = ctx.step if resume_file is not None else None
        train_log = _CSVLog(out / "train_metrics.csv", resume_step)
        val_log = _CSVLog(out / "val_metrics.csv", resume_step)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step)

    net: nn.Module = model  # what step_fn gets: the model, or its DistributedDataParallel wrapper
    if world_size > 1:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() != world_size:
            raise ValueError(
                f"world_size={world_size} needs an initialised process group of that size "
                "(medrecon.distributed.init_from_env() under torchrun)"
            )
        if cfg.sync_batchnorm and device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # shares the parameters with model
        from torch.nn.parallel import DistributedDataParallel

        # Several optimizers (GAN): a step's backward may leave some parameters without gradients.
        net = DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=len(optimizers) > 1,
        )

    from tqdm.auto import tqdm

    pbar = tqdm(
        total=total,
        initial=min(ctx.step, total),
        disable=not cfg.progress or rank != 0,
        desc="train",
        dynamic_ncols=True,
    )
    running: dict[str, float] = {}
    n_running = 0
    last_train: dict[str, float] = resumed_metrics if resume_file is not None else {}
    last_val: dict[str, float] = {}
    history: list[dict[str, float]] = []
    batch_in_epoch = start_batch
    in_step = False
    synced = False

    def save() -> None:
        if ckpt_path is not None and rank == 0:
            _save_checkpoint(ckpt_path, model, optimizers, ctx, batch_in_epoch, config, last_train)

    def log_train() -> None:
        nonlocal running, n_running, last_train
        if not n_running:
            return
        if world_size > 1:  # mean over the ranks too (every rank reaches this at the same step)
            import torch.distributed as dist

            keys = sorted(running)
            sums = torch.tensor([running[k] for k in keys], dtype=torch.float64, device=device)
            dist.all_reduce(sums)
            running = dict(zip(keys, (sums / world_size).tolist()))
        last_train = {k: v / n_running for k, v in running.items()}
        row = {
            "step": ctx.step,
            "epoch": ctx.epoch,
            "time_s": round(time.perf_counter() - t_start, 3),
            **last_train,
        }
        history.append(row)
        if train_log is not None:
            train_log.write(row)
        if writer is not None:
            for k, v in last_train.items():
                writer.add_scalar(f"train/{k}", v, ctx.step)
        pbar.set_postfix({k: f"{v:.4g}" for k, v in list(last_train.items())[:3]})
        running, n_running = {}, 0

    stop = _StopSignals()

    def check_stop() -> None:
        """After a complete step: on a signal (any rank's), save and raise TrainingInterrupted."""
        name = stop.signal
        if world_size > 1:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if name else 0.0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            name = name or ("SIGTERM" if float(flag) > 0 else None)
        if name is None:
            return
        log_train()
        save()
        raise TrainingInterrupted(name, ctx.step, ckpt_path if ckpt_path is not None and rank == 0 else None)

    try:
        stop.__enter__()
        while ctx.epoch < cfg.epochs and ctx.step < total:
            order = epoch_order(n, cfg.seed, ctx.epoch, rank, world_size)
            batches = [order[i : i + local_batch].tolist() for i in range(0, len(order), local_batch)]
            if cfg.drop_last:
                batches = [b for b in batches if len(b) == local_batch]
            batches = batches[:steps_per_epoch]  # global batches only (padding never completes one)
            # The loader's own generator (worker base seeds) keeps the global RNG untouched.
            loader = DataLoader(
                data,
                batch_sampler=batches[batch_in_epoch:],
                num_workers=cfg.num_workers,
                collate_fn=collate_fn or default_collate,
                generator=torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + ctx.epoch),
            )
            for batch in loader:
                if ctx.step >= total:
                    break
                batch = _to_device(batch, device)
                in_step = True
                generator.manual_seed(step_seed(cfg.seed, rank, ctx.step))
                metrics = step_fn(net, batch, ctx)
                if world_size > 1 and not synced:
                    _broadcast_state(model)  # layers initialised from their first local batch (ActNorm)
                    synced = True
                ctx.step += 1
                batch_in_epoch += 1
                in_step = False
                for k, v in metrics.items():
                    running[k] = running.get(k, 0.0) + float(v)
                n_running += 1
                for cb in callbacks:
                    cb(ctx, metrics)
                pbar.update(1)
                if ctx.step % cfg.log_every == 0:
                    log_train()
                if cfg.checkpoint_every and ctx.step % cfg.checkpoint_every == 0:
                    log_train()
                    save()
                check_stop()
            if batch_in_epoch >= len(batches):  # epoch complete
                ctx.epoch += 1
                batch_in_epoch = 0
                log_train()
                if val_data is not None and eval_fn is not None:
                    last_val = _evaluate(model, eval_fn, val_data, ctx, collate_fn or default_collate)
                    if val_log is not None:
                        val_log.write({"step": ctx.step, "epoch": ctx.epoch, **last_val})
                    if writer is not None:
                        for k, v in last_val.items():
                            writer.add_scalar(f"val/{k}", v, ctx.step)
                save()
                check_stop()
        log_train()
        save()
    except RuntimeError as exc:
        if world_size > 1 and _is_collective_failure(exc):
            last = (
                read_checkpoint(ckpt_path)["step"] if ckpt_path is not None and ckpt_path.is_file() else None
            )
            raise RuntimeError(
                f"rank {rank}/{world_size}: a collective failed after step {ctx.step} - another process died, "
                f"hung past the timeout or lost its network ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). "
                + (
                    f"The last checkpoint ({ckpt_path}, step {last}) is intact: relaunch with --resume "
                    "(any number of processes)."
                    if last is not None
                    else "No checkpoint was written yet."
                )
            ) from exc
        raise
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        # Between two steps the state is consistent: save it so that --resume continues from here.
        # Inside a step, parameters may be half-updated: keep the last periodic checkpoint instead.
        if not in_step:
            save()
        raise
    finally:
        stop.__exit__()
        pbar.close()
        if writer is not None:
            writer.close()
    if val_data is not None and eval_fn is not None and not last_val:
        last_val = _evaluate(model, eval_fn, val_data, ctx, collate_fn or default_collate)
    return FitResult(
        step=ctx.step,
        epoch=ctx.epoch,
        train_metrics=last_train,
        val_metrics=last_val,
        checkpoint=ckpt_path if ckpt_path is not None and rank == 0 else None,
        seconds=time.perf_counter() - t_start,
        history=history,
    )
