"""How many threads torch should use here: the cores this process may run on, shared fairly.

Two torch processes that each start one thread per core on the same cores oversubscribe them; on a
2-core machine that made one TV reconstruction 10x slower (README, "Speed"). :func:`choose_threads`
picks the count, first match wins:

1. an explicit request (the CLI's ``--threads N``, a benchmark's ``--threads``);
2. ``MEDRECON_THREADS`` (medrecon's own override);
3. ``OMP_NUM_THREADS`` (the OpenMP convention, which torch also reads at import);
4. otherwise the cores available to this process (its CPU affinity, ``os.sched_getaffinity``,
   capped by a cgroup CPU quota when one is set), less the cores other jobs keep busy (the 1-minute
   load average, rounded), divided by the number of processes that torchrun started on this machine
   (``LOCAL_WORLD_SIZE``), at least 1. On a 2-core machine that another job keeps busy this gives one
   thread: two threads there made one PDHG iteration 6x slower (README, "Threads").

:func:`configure_threads` applies the choice with ``torch.set_num_threads`` and returns it, with the
reason, so that callers can say what they chose. Library code never calls it: only entry points do
(the CLI, ``make demo``, the benchmarks).

>>> choose_threads(3).threads
3
>>> choose_threads(environ={"MEDRECON_THREADS": "2", "OMP_NUM_THREADS": "8"}).reason
'MEDRECON_THREADS=2'
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ENV_VAR", "ThreadChoice", "available_cores", "choose_threads", "configure_threads"]

ENV_VAR = "MEDRECON_THREADS"
_CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "<quota> <period>" or "max <period>"


@dataclass(frozen=True)
class ThreadChoice:
    """``threads``: the torch intra-op thread count; ``reason``: where it came from (one line)."""

    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} torch thread{'s' if self.threads != 1 else ''} ({self.reason})"


def _cgroup_cpu_limit(path: str = _CGROUP_CPU_MAX) -> float | None:
    """The cgroup v2 CPU quota in cores (``None`` when unlimited or unknown)."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return float(quota) / float(period)
    except (ValueError, ZeroDivisionError):
        return None


def available_cores(*, cgroup_path: str = _CGROUP_CPU_MAX) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_limit(cgroup_path)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def _positive_int(value: str | int, name: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return n


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return 0.0


def choose_threads(
    requested: int | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
    load: float | None = None,
) -> ThreadChoice:
    """The thread count for this process and why (see the module doc for the order of the rules).

    ``environ`` defaults to ``os.environ``, ``cores`` to :func:`available_cores`, ``load`` to the
    1-minute load average (all three for tests).
    """
    env = os.environ if environ is None else environ
    if requested is not None:
        n = _positive_int(requested, "threads")
        return ThreadChoice(n, f"requested {n}")
    for name in (ENV_VAR, "OMP_NUM_THREADS"):
        value = env.get(name, "").strip()
        if value:
            return ThreadChoice(_positive_int(value, name), f"{name}={value}")
    n_cores = available_cores() if cores is None else int(cores)
    busy = min(n_cores - 1, max(0, round(_load_average() if load is None else load)))
    local = env.get("LOCAL_WORLD_SIZE", "").strip()
    n_local = _positive_int(local, "LOCAL_WORLD_SIZE") if local else 1
    n = max(1, (n_cores - busy) // n_local)
    reason = f"{n_cores} available core{'s' if n_cores != 1 else ''}"
    if busy:
        reason += f", {busy} busy with other jobs (load average)"
    if n_local > 1:
        reason += f" shared by {n_local} local processes (LOCAL_WORLD_SIZE)"
    return ThreadChoice(n, reason)


def configure_threads(
    requested: int | None = None, *, environ: Mapping[str, str] | None = None
) -> ThreadChoice:
    """Choose the thread count (:func:`choose_threads`) and apply it with ``torch.set_num_threads``."""
    import torch

    choice = choose_threads(requested, environ=environ)
    torch.set_num_threads(choice.threads)
    return choice
