"""``torch.distributed`` glue for ``medrecon train`` and ``medrecon reconstruct`` under ``torchrun``.

A process started by ``torchrun`` (or ``srun`` + ``torchrun`` on a cluster) finds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment;
:func:`init_from_env` reads them and joins the process group: NCCL when the run's device is a GPU
(after ``torch.cuda.set_device(LOCAL_RANK)``), gloo on CPU. Without those variables (a plain
``medrecon ...`` call) nothing is initialised and every helper here is a no-op for one process, so
single-process code paths stay exactly as they were.

Every collective has a timeout (``timeout_s``, default ``MEDRECON_DIST_TIMEOUT_S`` or 1800 s): a
peer that died or hangs makes the others raise instead of waiting forever. Under ``torchrun`` the
agent also tears the whole job down as soon as one worker exits with an error.

>>> state = init_from_env()          # no torchrun variables here: one process
>>> (state.rank, state.world_size, is_main(), gather_objects("x"))
(0, 1, True, ['x'])
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistState",
    "all_gather_objects",
    "barrier",
    "gather_objects",
    "init_from_env",
    "is_main",
    "rank",
    "shutdown",
    "world_size",
]

#: seconds a collective waits for its peers before it raises (override with MEDRECON_DIST_TIMEOUT_S).
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DistState:
    """Where this process stands: ``rank`` in ``world_size`` processes, ``local_rank`` on its node,
    the ``backend`` (``None`` for a single process) and the ``device`` it should compute on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")


_STATE: DistState | None = None  # set by init_from_env, cleared by shutdown
_OWNS_GROUP = False  # True when init_from_env created the process group (so shutdown destroys it)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _resolve(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def init_from_env(device: str | torch.device = "auto", *, timeout_s: float | None = None) -> DistState:
    """Join the process group described by the torchrun environment variables (idempotent).

    ``device``: the run's device (``"auto"``: cuda if available, else cpu). A CUDA device selects
    NCCL and ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``); anything else selects gloo (CPU
    tensors). With ``WORLD_SIZE`` unset or 1, nothing is initialised and the state is
    ``rank 0 of 1`` on ``device``. ``timeout_s``: collective timeout (a dead peer raises after it).
    """
    global _STATE, _OWNS_GROUP
    dev = _resolve(device)
    n = _env_int("WORLD_SIZE", 1)
    if dist.is_available() and dist.is_initialized():  # someone (a test, a caller) already joined
        r, n = dist.get_rank(), dist.get_world_size()
        local = _env_int("LOCAL_RANK", r)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        _STATE = DistState(r, n, local, dist.get_backend(), dev)
        return _STATE
    if n <= 1:
        if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
        _STATE = DistState(device=dev)
        return _STATE
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    r, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={n} but {var} is not set: launch with torchrun (see README)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {dev} requested but CUDA is not available on rank {r}")
        index = local if dev.index is None else dev.index
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
        backend = "nccl"
    else:
        backend = "gloo"
    if timeout_s is None:
        timeout_s = float(os.environ.get("MEDRECON_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        kwargs["device_id"] = dev  # eager NCCL init: a broken GPU/network fails here, not mid-run
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=r,
        world_size=n,
        timeout=datetime.timedelta(seconds=timeout_s),
        **kwargs,
    )
    _OWNS_GROUP = True
    _STATE = DistState(r, n, local, backend, dev)
    return _STATE


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (the process that writes shared files), and in a single-process run."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op for one process); raises after the group's timeout."""
    if _active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Picklable ``obj`` of every rank, as a list indexed by rank, on ``dst``; ``None`` elsewhere.
    One process: ``[obj]``."""
    if not _active():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """Picklable ``obj`` of every rank, as a list indexed by rank, on every rank."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown(*, sync: bool = False) -> None:
    """Leave the process group if :func:`init_from_env` created it (safe to call twice).

    ``sync=True`` (after a successful run) waits at a barrier first, so that every rank leaves
    together: a rank that destroys its gloo group while a peer's last collective is still in
    flight can abort that peer ("terminate called without an active exception"). After an error
    no barrier is attempted (a dead peer would make it wait for the timeout).
    """
    global _STATE, _OWNS_GROUP
    if _OWNS_GROUP and dist.is_available() and dist.is_initialized():
        if sync and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()
    _OWNS_GROUP = False
    _STATE = None
