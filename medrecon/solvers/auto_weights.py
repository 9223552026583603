"""Weights of the learned priors without a ground truth: rules from the known noise level.

For ``vae-range``, ``vae-soft``, ``flow`` (latent and MAP), ``csgm`` and ``gan-d`` the weight ``lam`` may
be a number (relative to ``||A||^2``, as documented by each method) or one of

* ``"noise"``: the **MAP weight** of the method's own objective for Gaussian measurement noise of std
  ``noise_std``, times a calibration factor (:data:`CALIBRATION`: 10 for ``vae-soft`` and ``flow`` MAP,
  1 for the others); one solve. Each objective is ``||A x - y||^2 / ||A||^2 + lam R``;
  multiplying the negative log-posterior ``||A x - y||^2 / (2 sigma^2) - log p`` by ``2 sigma^2 / ||A||^2``
  gives (:func:`noise_rule_weight`):

  ============  =========================================  =========================================
  method        prior term ``R`` (``-log p`` up to consts)  ``lam`` of the MAP estimate
  ============  =========================================  =========================================
  vae-range     ``||z||^2``  (``z ~ N(0, I)``: ``||z||^2/2``)  ``sigma^2 / ||A||^2``
  csgm          ``||z||^2``                                 ``sigma^2 / ||A||^2``
  flow latent   ``||z||^2``                                 ``sigma^2 / ||A||^2``
  gan-d         ``d log((1-D)/D) + ||z||^2 / 2``            ``2 sigma^2 / ||A||^2``
  flow map      ``-log p(x) / D`` (D pixels)                ``2 D sigma^2 / ||A||^2``
  vae-soft      ``||G(z) - x||^2 + mu ||z||^2``             ``sigma^2 / (mu ||A||^2)``
  ============  =========================================  =========================================

  (vae-soft: ``x = G(z) + e`` with ``e ~ N(0, t^2 I)`` and ``z ~ N(0, I)`` gives
  ``||G(z) - x||^2 / (2 t^2) + ||z||^2 / 2``, i.e. ``mu = t^2`` and ``lam = sigma^2 / (t^2 ||A||^2)``.)

  The calibration was chosen on TRAIN-split images only (``benchmarks/auto_weights.py``, 30-angle CT,
  1 % noise, weights swept in decades around the MAP weight): on MNIST training digits and ellipse
  phantoms of the training seed, the best decade for ``vae-soft`` and ``flow`` MAP was 10x the MAP
  weight (the MAP weight itself lost 0.07-0.4 dB for vae-soft, 0.7-3.4 dB for flow MAP); for the
  latent methods the MAP weight was within 0.4 dB of the best. The learned densities need more
  weight than the MAP weight gives them. The factor is not universal: with the weaker real-CT 128
  priors the MAP weight did better (``benchmarks/results/priors_ct128.json``).
* ``"discrepancy"``: Morozov's discrepancy principle through
  :func:`medrecon.solvers.weights.discrepancy_weight` (secant/regula falsi on ``log lam``, started at
  the ``"noise"`` weight): the ``lam`` whose residual is ``||A x - y|| = tau * noise_std * sqrt(m)``.
  It fits the methods whose image can fit the data below the noise level (``vae-soft``, ``flow``
  in either mode). For the **range methods** (``vae-range``, ``csgm``, ``gan-d``: x = G(z) exactly),
  the residual is bounded below by G's representation error; when even ``lam -> 0`` leaves the
  residual above the target, the principle returns the smallest weight of its bracket (the best data
  fit G allows) and warns; the rule is then "fit the data as well as the range allows".
* ``"sweep"`` with ``x_true=``: the best weight of ``grid`` against the ground truth (benchmarks only),
  through :func:`medrecon.solvers.weights._resolve_lam`.

How far each rule lands from the best swept weight is measured by ``benchmarks/auto_weights.py``
(``benchmarks/results/auto_weights.json``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.solvers.weights import _resolve_lam, discrepancy_weight

__all__ = [
    "AUTO_RULES",
    "CALIBRATION",
    "CALIBRATION_BY_WEIGHTS",
    "calibration_factor",
    "LEARNED_PRIOR_RULES",
    "noise_rule_weight",
    "per_element",
    "resolve_learned_weight",
]

#: Names ``lam`` may take in the learned-prior methods besides a number.
AUTO_RULES: tuple[str, ...] = ("noise", "discrepancy", "sweep")

#: Method -> (factor c, counts pixels): ``lam = c sigma^2 / ||A||^2`` (times D pixels for flow MAP; divided
#: by mu for vae-soft, see :func:`noise_rule_weight`).
LEARNED_PRIOR_RULES: dict[str, float] = {
    "vae-range": 1.0,
    "csgm": 1.0,
    "flow-latent": 1.0,
    "gan-d": 2.0,
    "flow-map": 2.0,
    "vae-soft": 1.0,
}

#: Factor on the MAP weight in ``lam="noise"``, chosen on training images (see the module doc); 1 if absent.
CALIBRATION: dict[str, float] = {"vae-soft": 10.0, "flow-map": 10.0}

#: Factors of particular bundled prior files (by file name), replacing :data:`CALIBRATION` for them; chosen
#: on TRAIN-split slices (``benchmarks/real_anatomy_generative.py calibrate``: 3 slices per setting, 128 px,
#: 1 % noise; CT: lung2/head, 10 and 30 angles; MRI: Colin27, 4x and 8x; factors 0.03-3000 of the MAP
#: weight): the factor with the smallest summed loss to each setting's best. CT: vae-soft factor 1 loses
#: 0.00 / 0.06 dB (30 / 10 angles); flow MAP factor 1 loses 0.00 / 0.48 dB (factor 3: 0.50 / 0.08); flow
#: latent factor 1000 loses 0.23 / 0.00 dB (factor 100: 0.00 / 0.72; factor 1: 0.21 / 1.60). MRI:
#: flow MAP factor 300 is the best at 4x and 8x (factor 10 loses 3.85 / 2.19 dB); flow latent factor 1000
#: loses 0.10 / 0.00 dB (4x / 8x); vae-soft keeps the default 10 (0.00 / 0.00 dB, flat from 10 to 100).
CALIBRATION_BY_WEIGHTS: dict[str, dict[str, float]] = {
    "vae_ct128.pt": {"vae-soft": 1.0},
    "flow_ct128.pt": {"flow-map": 1.0, "flow-latent": 1000.0},
    "flow_mri128.pt": {"flow-map": 300.0, "flow-latent": 1000.0},
}


def calibration_factor(rule: str, weights_file: str | None = None) -> float:
    """The factor on the MAP weight of ``lam="noise"`` for the rule ``rule`` (a key of
    :data:`LEARNED_PRIOR_RULES`) and the prior file in use (its name; None: a model object or unknown)."""
    own = CALIBRATION_BY_WEIGHTS.get(Path(weights_file).name, {}) if weights_file else {}
    return own.get(rule, CALIBRATION.get(rule, 1.0))


#: Bracket of the discrepancy search (relative weights): wide, the learned priors' weights span decades.
_BRACKET = (1e-10, 1e3)
#: The discrepancy search stops within 5 % of the target residual or after 8 solves (each solve of a
#: learned prior is a full latent/image optimisation; more solves would multiply its cost).
_RTOL, _MAX_SOLVES = 0.05, 8


def _std(noise_std: float | Tensor | None, b: int, name: str, rule: str) -> Tensor:
    """noise_std as a (B,) float64 tensor, checked (finite, > 0)."""
    if noise_std is None:
        raise ValueError(f"{name}: lam={rule!r} needs noise_std= (the std of the measurement noise)")
    try:
        std = torch.as_tensor(noise_std, dtype=torch.float64).detach().cpu().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        std = torch.full((0,), math.nan, dtype=torch.float64)
    if std.numel() == 1:
        std = std.expand(b)
    if (
        isinstance(noise_std, bool)
        or std.shape != (b,)
        or not bool(torch.isfinite(std).all())
        or not bool((std > 0).all())
    ):
        raise ValueError(
            f"{name}: noise_std must be a finite number > 0 (or {b} of them, one per batch "
            f"element), got {noise_std!r}"
        )
    return std


def noise_rule_weight(
    method: str,
    op: LinearOperator,
    noise_std: float | Tensor,
    *,
    batch: int = 1,
    n_pixels: int | None = None,
    mu: float | None = None,
    calibrated: bool = True,
    weights_file: str | None = None,
) -> Tensor:
    """``lam (B,)`` float64 of ``lam="noise"``: the MAP weight (module doc's table) times the calibration
    factor (:func:`calibration_factor`: :data:`CALIBRATION`, or :data:`CALIBRATION_BY_WEIGHTS` for the
    bundled prior file ``weights_file``).

    ``method``: a key of :data:`LEARNED_PRIOR_RULES`; ``n_pixels``: D (``flow-map``); ``mu``: vae-soft's
    latent weight; ``calibrated=False``: the MAP weight alone.

    >>> from medrecon.operators import Identity
    >>> noise_rule_weight("vae-range", Identity((4, 4)), 0.1)
    tensor([0.0100], dtype=torch.float64)
    """
    if method not in LEARNED_PRIOR_RULES:
        raise ValueError(f"no noise rule for {method!r}; valid: {', '.join(LEARNED_PRIOR_RULES)}")
    std = _std(noise_std, batch, method, "noise")
    lam = LEARNED_PRIOR_RULES[method] * std.pow(2) / float(op.norm_squared())
    if calibrated:
        lam = lam * calibration_factor(method, weights_file)
    if method == "flow-map":
        if not n_pixels or n_pixels < 1:
            raise ValueError("flow-map: the noise rule needs n_pixels (D) >= 1")
        lam = lam * n_pixels
    if method == "vae-soft":
        if mu is None or not mu > 0:
            raise ValueError(
                f"vae-soft: the noise rule needs mu > 0 (lam = sigma^2 / (mu ||A||^2)), got mu={mu}"
            )
        lam = lam / mu
    return lam


def per_element(run: Callable[[slice, float], Tensor], lam: Tensor) -> Tensor:
    """``run(slice(None), lam)`` with one float when all of ``lam (B,)`` are equal, else
    ``run(slice(i, i + 1), lam[i])`` for each batch element ``i``, concatenated."""
    lam = lam.reshape(-1)
    if bool((lam == lam[0]).all()):
        return run(slice(None), float(lam[0]))
    return torch.cat([run(slice(i, i + 1), float(lam[i])) for i in range(lam.shape[0])])


def resolve_learned_weight(
    lam: float | str,
    name: str,
    rule: str,
    run: Callable[[slice, float], Tensor],
    op: LinearOperator,
    y: Tensor,
    *,
    noise_std: float | Tensor | None = None,
    tau: float = 1.0,
    x_true: Tensor | None = None,
    grid: Sequence[float] | None = None,
    n_pixels: int | None = None,
    mu: float | None = None,
    weights_file: str | None = None,
) -> Tensor:
    """x of a learned-prior method for the weight ``lam`` names (a number or one of :data:`AUTO_RULES`).

    ``weights_file``: the prior file in use (for its calibration factor, :func:`calibration_factor`).

    ``run(sel: slice, lam: float) -> x`` solves for the batch elements ``y[sel]`` with one weight;
    ``rule``: the key of :data:`LEARNED_PRIOR_RULES` for ``"noise"`` (also the discrepancy search's
    start); ``name``: the method, for messages.
    """
    b = y.shape[0]

    def solve(lam_t: Tensor, _x0: object = None) -> Tensor:
        return per_element(run, lam_t.expand(b) if lam_t.numel() == 1 else lam_t)

    if lam == "noise":
        std = _std(noise_std, b, name, "noise")
        return solve(
            noise_rule_weight(rule, op, std, batch=b, n_pixels=n_pixels, mu=mu, weights_file=weights_file)
        )
    if lam == "discrepancy":
        std = _std(noise_std, b, name, "discrepancy")
        start = noise_rule_weight(rule, op, std, batch=b, n_pixels=n_pixels, mu=mu, weights_file=weights_file)
        start = float(torch.exp(torch.log(start).mean()).clamp(*_BRACKET))
        _, x = discrepancy_weight(
            solve,
            op,
            y,
            noise_std=std,
            tau=tau,
            rtol=_RTOL,
            max_solves=_MAX_SOLVES,
            bracket=_BRACKET,
            start=start,
        )
        return x
    if isinstance(lam, str) and lam not in AUTO_RULES:
        raise ValueError(
            f"{name}: lam must be a number >= 0 or one of {', '.join(map(repr, AUTO_RULES))}, got {lam!r}"
        )
    if not isinstance(lam, str) and (
        isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0
    ):
        raise ValueError(
            f"{name}: lam must be a number >= 0 or one of {', '.join(map(repr, AUTO_RULES))}, got {lam!r}"
        )
    return _resolve_lam(lam, name, solve, op, y, noise_std, tau, x_true, grid)
