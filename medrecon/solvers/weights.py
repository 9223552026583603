"""Choosing the weight ``lam`` of a regularised reconstruction: the discrepancy principle and a sweep.

Weights are **relative to the operator's squared norm** (see :mod:`medrecon.methods.classical`).
``lam`` of a classical method may be a number or

* ``"discrepancy"`` with ``noise_std=``: Morozov's discrepancy principle, the ``lam`` (per batch
  element) whose residual is ``||Ax - y|| = tau * noise_std * sqrt(m)``; ``m`` is the number of real
  measurement values in the range of ``A`` (the entries where ``A A^H 1 != 0``, counted twice for
  complex data: ``noise_std`` is the std of each real and each imaginary part). Found by bisection
  on ``log lam`` (the residual grows with ``lam``) to ``discrepancy_rtol``. [Morozov 1966; Hansen,
  Discrete Inverse Problems, 2010, Sec. 5.6.]
* ``"sweep"`` with ``x_true=``: the ``lam`` of ``grid`` (default ``10**linspace(-5, 0, 11)``) with
  the smallest error against the ground truth, per batch element (benchmarking only; see
  :func:`sweep_weight`).

Each function takes ``solve(lam (B,), x0) -> x`` (or a method ``fn(op, y, *, lam)``) and knows nothing
about the method behind it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.solvers.variational import WarmStart

__all__ = ["DEFAULT_GRID", "SweepResult", "discrepancy_weight", "sweep_weight"]

DEFAULT_GRID: tuple[float, ...] = tuple(float(v) for v in torch.logspace(-5, 0, 11, dtype=torch.float64))
"""Relative weights tried by ``lam="sweep"``: 1e-5 ... 1 in half decades."""

_Lam = float | str  # a number, "discrepancy" or "sweep"


def _error(x: Tensor, x_true: Tensor) -> Tensor:
    """Mean squared error per batch element; magnitudes when either is complex."""
    if x.is_complex() or x_true.is_complex():
        x, x_true = x.abs(), x_true.abs()
    return (x - x_true.to(x.dtype)).pow(2).flatten(1).mean(1)


@dataclass(frozen=True)
class SweepResult:
    """Result of :func:`sweep_weight`: ``lam (B,)`` chosen per element, ``errors (len(grid), B)`` (MSE), ``x`` (best)."""

    lam: Tensor
    grid: tuple[float, ...]
    errors: Tensor
    x: Tensor


def sweep_weight(
    op: LinearOperator,
    y: Tensor,
    method: Callable,
    x_true: Tensor,
    grid: Sequence[float] | None = None,
    **options,
) -> SweepResult:
    """The weight of ``grid`` (relative, see the module doc) with the smallest MSE against ``x_true``, per element.

    ``method`` is a function ``fn(op, y, *, lam, ...)`` (``medrecon.methods.sweep_weight`` also takes a
    method name); ``options`` go to every solve. For benchmarking against a known ground truth only.
    """
    grid = tuple(float(g) for g in (DEFAULT_GRID if grid is None else grid))
    if not grid or any(not g >= 0 for g in grid):
        raise ValueError(f"grid must be a non-empty list of weights >= 0, got {grid}")
    if x_true.shape[0] != y.shape[0]:
        raise ValueError(f"x_true has batch {x_true.shape[0]} but y has batch {y.shape[0]}")
    errors, best_x = [], None
    best_err = torch.full((y.shape[0],), math.inf, dtype=torch.float64, device=y.device)
    for lam in grid:
        x = method(op, y, lam=lam, **options)
        err = _error(x, x_true).to(torch.float64)
        errors.append(err)
        better = err < best_err
        best_x = (
            x.clone()
            if best_x is None
            else torch.where(better.reshape(-1, *([1] * (x.dim() - 1))), x, best_x)
        )
        best_err = torch.minimum(best_err, err)
    errors_t = torch.stack(errors)  # (G, B)
    lam_t = torch.tensor(grid, dtype=torch.float64, device=y.device)[errors_t.argmin(0)]
    return SweepResult(lam=lam_t, grid=grid, errors=errors_t, x=best_x)


def _n_measurements(op: LinearOperator, y: Tensor) -> int:
    """Real measurement values in the range of A for all channels of one image: ``op.n_measurements() * C``."""
    return op.n_measurements() * y.shape[1]


# d log||A x_lam - y|| / d log lam near the discrepancy target: 0.1-0.5 for TV on 64-128 px CT with 10-30
# angles (measured, benchmarks/methods.py); the first step assumes this value, later steps use the secant.
_ASSUMED_SLOPE = 0.3


def discrepancy_weight(
    solve: Callable[[Tensor, Tensor | WarmStart | None], Tensor],
    op: LinearOperator,
    y: Tensor,
    *,
    noise_std: float | Tensor,
    tau: float = 1.0,
    rtol: float = 0.02,
    max_solves: int = 20,
    bracket: tuple[float, float] = (1e-7, 10.0),
    start: float = 1e-3,
    warm_start: bool = False,
) -> tuple[Tensor, Tensor]:
    """(lam (B,), x) with ``||A x_lam - y|| ≈ tau * noise_std * sqrt(m)`` per element, by a safeguarded secant.

    ``solve(lam, x0)`` returns the regularised solution for per-element relative weights ``lam (B,)``,
    warm-started from ``x0``: the previous solution, or with ``warm_start`` one
    :class:`~medrecon.solvers.variational.WarmStart` shared by all solves (for solvers that accept it,
    :func:`~medrecon.solvers.variational.least_squares` and :func:`~medrecon.solvers.variational.pdhg_tv`,
    which then carry their whole state from one weight to the next; the first solve starts from zero).

    The residual grows with ``lam``, and ``f = log(||A x_lam - y|| / target)`` is nearly linear in
    ``log lam`` near the target. From a first solve at ``start``: while the target is not bracketed, a
    Newton step on ``f`` with the secant slope of the last two solves (an assumed slope for the second),
    at most a decade long; once bracketed, regula falsi with the Illinois modification (the end kept
    twice has its ``f`` halved), which converges superlinearly and never leaves the bracket
    [Dowell and Jarratt, BIT 11, 1971]. Stops when every residual is within ``rtol`` of the target
    or after ``max_solves`` solves. When the target lies outside what ``bracket`` reaches, the nearest
    end is used and a warning says so.
    """
    b = y.shape[0]
    std = torch.as_tensor(noise_std, dtype=torch.float64).detach().cpu().reshape(-1)
    if std.numel() == 1:
        std = std.expand(b)
    if std.shape != (b,) or not bool((std > 0).all()):
        raise ValueError(
            f"lam='discrepancy' needs noise_std > 0 (a number or one per batch element), got {noise_std}"
        )
    if not 0 < bracket[0] <= start <= bracket[1]:
        raise ValueError(f"need 0 < bracket[0] <= start <= bracket[1], got bracket={bracket}, start={start}")
    target = tau * std * math.sqrt(_n_measurements(op, y))  # (B,)
    log_min, log_max, decade = math.log(bracket[0]), math.log(bracket[1]), math.log(10.0)
    nan = torch.full((b,), math.nan, dtype=torch.float64)
    lo, f_lo, hi, f_hi = nan.clone(), nan.clone(), nan.clone(), nan.clone()  # the bracket: f(lo) < 0 <= f(hi)
    prev, f_prev = nan.clone(), nan.clone()
    kept_side = torch.zeros(b, dtype=torch.int8)  # the end regula falsi kept last: -1 lo, +1 hi
    cur = torch.full((b,), math.log(start), dtype=torch.float64)
    x0: Tensor | WarmStart | None = WarmStart() if warm_start else None
    best_lam = torch.exp(cur)
    best_gap = torch.full((b,), math.inf, dtype=torch.float64)
    best_x = None
    for _ in range(max_solves):
        lam = torch.exp(cur)
        x = solve(lam, x0)
        if not warm_start:
            x0 = x
        with torch.no_grad():
            res = torch.linalg.vector_norm((op(x) - y).flatten(1), dim=1).to(torch.float64).cpu()
        gap = (res - target).abs() / target
        better = gap < best_gap
        best_gap = torch.where(better, gap, best_gap)
        best_lam = torch.where(better, lam, best_lam)
        best_x = (
            x.clone()
            if best_x is None
            else torch.where(better.to(x.device).reshape(-1, *([1] * (x.dim() - 1))), x, best_x)
        )
        f = torch.log(res.clamp_min(1e-300)) - torch.log(target)
        below = f < 0  # residual too small: lam must grow
        at_end = (below & (cur >= log_max)) | (~below & (cur <= log_min))
        done = (gap <= rtol) | at_end
        if bool(done.all()):
            break
        was_bracketed = ~torch.isnan(lo) & ~torch.isnan(hi)
        # Illinois: the end that stays for a second time in a row has its f halved
        f_lo = torch.where(was_bracketed & ~below & (kept_side == -1), f_lo / 2, f_lo)
        f_hi = torch.where(was_bracketed & below & (kept_side == 1), f_hi / 2, f_hi)
        kept_side = torch.where(below, torch.ones_like(kept_side), -torch.ones_like(kept_side))
        lo, f_lo = torch.where(below, cur, lo), torch.where(below, f, f_lo)
        hi, f_hi = torch.where(below, hi, cur), torch.where(below, f_hi, f)
        bracketed = ~torch.isnan(lo) & ~torch.isnan(hi)
        falsi = lo - f_lo * (hi - lo) / (f_hi - f_lo)
        slope = (f - f_prev) / (cur - prev)
        slope = torch.where(
            torch.isfinite(slope) & (slope > 0), slope, torch.full_like(slope, _ASSUMED_SLOPE)
        )
        newton = cur - (f / slope).clamp(-decade, decade)
        new = torch.where(bracketed, falsi, newton).clamp(log_min, log_max)
        prev, f_prev = cur, f
        cur = torch.where(done, cur, new)  # finished elements keep their weight
    if bool((best_gap > rtol).any()):
        warnings.warn(
            f"discrepancy principle: residual only within {float(best_gap.max()):.1%} of the target "
            f"(rtol {rtol}); the noise level may not fit the data or the bracket",
            RuntimeWarning,
            stacklevel=3,
        )
    return best_lam, best_x


def _resolve_lam(
    lam: _Lam,
    name: str,
    solve: Callable[[Tensor, Tensor | None], Tensor],
    op: LinearOperator,
    y: Tensor,
    noise_std: float | Tensor | None,
    tau: float,
    x_true: Tensor | None,
    grid: Sequence[float] | None,
) -> Tensor:
    """Run ``solve`` with the weight that ``lam`` names and return x."""
    if isinstance(lam, str):
        if lam == "discrepancy":
            if noise_std is None:
                raise ValueError(f"{name}: lam='discrepancy' needs noise_std=")
            _, x = discrepancy_weight(solve, op, y, noise_std=noise_std, tau=tau, warm_start=True)
            return x
        if lam == "sweep":
            if x_true is None:
                raise ValueError(f"{name}: lam='sweep' needs x_true= (a ground truth)")
            result = sweep_weight(
                op,
                y,
                lambda o, yy, *, lam: solve(torch.full((y.shape[0],), lam, dtype=torch.float64), None),
                x_true,
                grid,
            )
            return result.x
        raise ValueError(f"{name}: lam must be a number, 'discrepancy' or 'sweep', got {lam!r}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
        raise ValueError(f"{name}: lam must be a number >= 0, 'discrepancy' or 'sweep', got {lam!r}")
    return solve(torch.full((y.shape[0],), float(lam), dtype=torch.float64), None)


def _per_element(lam: Tensor, y: Tensor, scale: float) -> float | Tensor:
    """Absolute weights from relative ones: a float when all equal, else a (B,) tensor."""
    lam = lam * scale
    if bool((lam == lam[0]).all()):
        return float(lam[0])
    return lam.to(device=y.device)
