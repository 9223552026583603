"""Patch-normalizing-flow method ``patchnr`` (Altekrueger et al., Inverse Problems 2023) for
``medrecon.priors.patchnr.PatchFlow``.

    x* = argmin_x 1/2 ||A x - y||^2 + lam ||A||^2 H W R(x),   R(x) = mean_i -log p(P_i x)

over the overlapping ``p x p`` patches ``P_i x`` of the image (a random subset per Adam step). As for
``tv``, ``lam`` is **relative**: ``||A||^2`` makes it independent of the operator's scaling and
``H W`` of the image size (the data term sums over measurements, ``R`` is a mean over patches).

Weights without a ground truth, from the known noise std sigma of the measurements:

* ``lam="noise"`` (:func:`noise_rule_weight`): ``lam = c (sigma / ||A||)^q``, by default ``q = 2``:
  ``lam = c sigma^2 / ||A||^2``. With ``c = 1/p^2`` this is the MAP estimate for Gaussian noise of std
  sigma and the patch-product prior ``p(x) ~ prod_i p(P_i x)^(1/p^2)`` (each pixel lies in ``p^2``
  patches, so the product counts it ``p^2`` times): ``1/2 ||Ax - y||^2 / sigma^2 + (1/p^2) sum_i
  -log p(P_i x)`` with the sum over all ``N ~ H W`` patches, i.e. ``sigma^2 N / (p^2 ||A||^2 H W) ~
  sigma^2 / (p^2 ||A||^2)`` in the relative scale above. The product of overlapping patch densities is not a normalised image density,
  so its best exponent is an empirical matter: for the bundled weights ``(c, q)`` is :data:`NOISE_RULE`
  (CT / MRI), fitted on TRAINING-split slices by ``benchmarks/real_anatomy.py`` (see there); other
  weights use ``c = 1/p^2, q = 2``; ``noise_c=`` / ``noise_power=`` override. The scale-free form
  ``(sigma / ||A||)^q`` keeps ``lam`` independent of the operator's scaling for every ``q`` (``y`` and
  ``sigma`` scale with ``A``). The benchmark measures the rule against the best weight of a sweep on the
  validation slices (``evaluate --oracle``).
* ``lam="discrepancy"``: Morozov's discrepancy principle (``medrecon.solvers.weights``), bisection on
  ``log lam`` with warm-started solves: several solves, so several times slower.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from medrecon.operators.base import LinearOperator
from medrecon.priors.base import image_size_of, modality_of, resolve_weights
from medrecon.priors.patchnr import DEFAULT_WEIGHTS, PatchFlow, load_patchnr, patch_nll
from medrecon.solvers.variational import minimize

from .registry import integer, number, one_of, optional, register_method, weight_or_rule

__all__ = [
    "DEFAULT_LAM",
    "DEFAULT_N_PATCHES",
    "NOISE_RULE",
    "NOISE_RULE_C",
    "TV_INIT_LAM",
    "noise_rule_weight",
    "reconstruct_patchnr",
]

#: Default relative weight, for the default start ``init="direct"``: sweeps from the direct start on 3 CT
#: training-split slices at 128x128 with 1 % noise (before ``nonneg``) chose 1e-7 for 30 angles and 1e-6
#: for 10 angles; 3e-7 is within 0.1 dB / 0.5 dB of those. (From the TV start with ``nonneg`` the train
#: sweeps chose 1e-7 / 3e-7: benchmarks/results/real_anatomy_calibration.json.) With a known noise level
#: prefer ``lam="noise"``.
DEFAULT_LAM = 3e-7

#: Patches per image and Adam step (of the 15129 overlapping 6x6 patches of a 128x128 image); the paper
#: also samples a random subset. ``None``: every patch (deterministic; what L-BFGS always uses).
DEFAULT_N_PATCHES = 1024


#: ``(c, q)`` of ``lam="noise"`` (``lam = c (sigma / ||A||)^q``) for the bundled weights, by image kind,
#: chosen on TRAINING-split slices only (1 % noise, 450 Adam steps, ``nonneg``, each setting at its
#: calibrated start, the TV image):
#:
#: * CT: the MAP exponent ``q = 2`` with ``c = 0.010`` (3 lung2/head slices at 10 and 30 angles,
#:   ``python benchmarks/real_anatomy.py calibrate``, ``noise_rule`` in
#:   benchmarks/results/real_anatomy_calibration.json; 0.011 before ``nonneg``). Its exponent was not
#:   re-fitted (no CT ``noise-sweep``).
#: * MRI: ``q = 0``, i.e. the constant ``lam = 3e-7`` whatever sigma. ``python benchmarks/real_anatomy.py
#:   noise-sweep`` swept 1e-7..3e-6 (4x) and 1e-7..1e-5 (8x) on 8 colin27 slices (TV-discrepancy start,
#:   benchmarks/results/real_anatomy_calibration_noise.json) and fitted ``(c, q)`` for q in 0..3 by the
#:   mean PSNR: q = 0 is best (28.73 dB), if only by 0.04 dB over q = 2 (28.69); before ``nonneg`` it was
#:   0.09 dB, with the constant 1e-7. The reason measured then: the best weight does not grow with sigma
#:   on these slices (with noise 1 % of each slice's own signal, a larger sigma means more tissue and
#:   detail, not more noise, and the undersampling error dominates the noise). Limitation: the MRI rule
#:   does not adapt to the noise level (it was fitted at 1 % noise only).
NOISE_RULE: dict[str, tuple[float, float]] = {"ct": (0.010, 2.0), "mri": (3e-7, 0.0)}

#: ``c`` of :data:`NOISE_RULE` by image kind (its exponents: ``NOISE_RULE[kind][1]``).
NOISE_RULE_C = {kind: c for kind, (c, _) in NOISE_RULE.items()}

#: Relative TV weight of ``init="tv"`` when no ``noise_std`` is given (with one, TV uses the discrepancy
#: principle): the ``tv`` method's own default.
TV_INIT_LAM = 1e-2


def noise_rule_weight(
    op: LinearOperator,
    noise_std: float | Tensor,
    patch_size: int,
    *,
    c: float | None = None,
    power: float = 2.0,
) -> Tensor:
    """lam = c (sigma / ||A||)^power with ``c = 1 / patch_size^2`` by default (``power = 2``: the MAP weight
    ``c sigma^2 / ||A||^2``, see the module doc): ``()`` or ``(B,)`` float64.

    ``noise_std``: the std of the measurement noise (of each real and imaginary part for complex data).
    """
    std = torch.as_tensor(noise_std, dtype=torch.float64).detach().cpu()
    if std.numel() == 0 or not bool((std > 0).all()):
        raise ValueError(f"lam='noise' needs noise_std > 0, got {noise_std}")
    c = 1.0 / patch_size**2 if c is None else float(c)
    return c * (std / float(op.norm_squared()) ** 0.5).pow(float(power))


def _load(weights: str | os.PathLike | PatchFlow | None, op: LinearOperator) -> PatchFlow:
    """A frozen PatchFlow: the given model (a copy), the file, or the bundled CT (real operator) / MRI
    (complex operator) weights."""
    if isinstance(weights, PatchFlow):
        return copy.deepcopy(weights).requires_grad_(False).eval().to(op.device)
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a path, a PatchFlow or None, got {type(weights).__name__}")
    kind = modality_of(op)
    return load_patchnr(resolve_weights(weights, 0, {0: DEFAULT_WEIGHTS[kind]}, "patchnr"), device=op.device)


def _default_noise_rule(weights, op: LinearOperator) -> tuple[float, float] | None:
    """:data:`NOISE_RULE` ``(c, q)`` of the bundled weights in use (``weights`` None or a bundled file's
    name), else None (``noise_rule_weight``'s ``1 / p^2`` and ``q = 2``)."""
    if weights is None:
        return NOISE_RULE[modality_of(op)]
    if isinstance(weights, (str, os.PathLike)):
        name = os.path.basename(os.fspath(weights))
        for kind, path in DEFAULT_WEIGHTS.items():
            if name == os.path.basename(path):
                return NOISE_RULE[kind]
    return None


def _default_noise_c(weights, op: LinearOperator) -> float | None:
    """``c`` of :func:`_default_noise_rule` (None for other weights)."""
    rule = _default_noise_rule(weights, op)
    return None if rule is None else rule[0]


def _start_image(
    op: LinearOperator, y: Tensor, init: str, noise_std: float | Tensor | None, tau: float, tv_iter: int
) -> Tensor:
    """The starting image of ``init``, real (magnitude if complex): ``"direct"``, ``op.direct(y)`` (FBP,
    zero-filled, A^H y / ||A||^2); ``"tv"``, the ``tv`` method's reconstruction (the discrepancy principle
    with ``noise_std``, else ``lam=TV_INIT_LAM``)."""
    from .classical import tv

    with torch.no_grad():
        if init == "direct":
            x = op.direct(y)
        elif noise_std is not None:
            x = tv(op, y, lam="discrepancy", noise_std=noise_std, tau=tau, n_iter=tv_iter)
        else:
            x = tv(op, y, lam=TV_INIT_LAM, n_iter=tv_iter)
    return x.abs() if x.is_complex() else x


@register_method(
    "patchnr",
    checks={
        "lam": weight_or_rule("noise", "discrepancy"),
        "optimizer": one_of("adam", "lbfgs"),
        "lr": optional(number(0.0, strict=True)),
        "n_patches": optional(integer(1)),
        "init": one_of("direct", "tv"),
        "tv_iter": integer(1),
        "noise_c": optional(number(0.0, strict=True)),
        "noise_power": optional(number(0.0)),
        "nonneg": optional(one_of(True, False)),
    },
)
def reconstruct_patchnr(
    op: LinearOperator,
    y: Tensor,
    *,
    weights: str | os.PathLike | PatchFlow | None = None,
    lam: float | Literal["noise", "discrepancy"] = DEFAULT_LAM,
    noise_std: float | Tensor | None = None,
    noise_c: float | None = None,
    noise_power: float | None = None,
    tau: float = 1.0,
    optimizer: Literal["adam", "lbfgs"] = "adam",
    n_iter: int = 450,
    lr: float | None = None,
    n_patches: int | None = DEFAULT_N_PATCHES,
    init: Literal["direct", "tv"] = "direct",
    tv_iter: int = 200,
    x0: Tensor | None = None,
    nonneg: bool | None = None,
    callback: Callable | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x* = argmin 1/2 ||A x - y||^2 + lam ||A||^2 H W R(x), R the mean patch NLL: ``y (B, 1, *out) -> x (B, 1, H, W)``.

    PatchNR (Altekrueger et al. 2023); ``lam`` is relative (see the module doc). Any image size and operator.

    Args:
        weights: a ``PatchFlow``, a file from ``medrecon train``, or None: the bundled CT weights for
            real operators, the MRI weights for complex ones.
        lam: relative weight, ``"noise"`` (``noise_rule_weight``) or ``"discrepancy"``; both rules need
            ``noise_std`` (``tau``: the discrepancy principle's safety factor).
        noise_c, noise_power: ``c`` and ``q`` of ``lam="noise"`` (``lam = c (sigma / ||A||)^q``); default
            :data:`NOISE_RULE` for the bundled weights (None or a path to ``patchnr_ct.pt`` /
            ``patchnr_mri.pt``; fitted on training slices), ``1 / patch_size^2`` and 2 for others.
        optimizer: ``"adam"`` (lr default 5e-3, ``n_patches`` random patches per image and step; the
            last third of the steps at lr / 5) or ``"lbfgs"`` (lr default 1, every patch: L-BFGS needs
            a deterministic objective).
        n_patches: patches per image and Adam step; ``None``: all of them.
        init: the starting image: ``"direct"`` (``op.direct(y)``: FBP, zero-filled magnitude) or
            ``"tv"`` (the ``tv`` method's image, magnitude for MRI, ``tv_iter`` PDHG steps per solve:
            with ``noise_std`` its weight comes from the discrepancy principle, without it
            ``lam=TV_INIT_LAM``). At 10 CT angles the FBP start's streaks survive the patch prior; the
            TV start removes them (benchmarks/results/real_anatomy_diagnosis_a10.json).
        x0: a user's starting image ``(B, 1, H, W)`` instead of ``init`` (give one of the two).
        nonneg: minimise over ``x >= 0`` (projected Adam; not with ``"lbfgs"``): attenuation and
            magnitude images are non-negative. None (default): on for Adam, off for L-BFGS. For MRI it
            matters: without it the real image the method fits goes negative on the background, and
            its magnitude turns those values into bright artefacts (on 3 training slices per setting
            it raised the best PatchNR PSNR by 0.6-0.7 dB at MRI 4x and 8x; README, "Real anatomy").
        generator: draws the patch subsets (``None``: the global RNG).

    MRI (``op.in_complex``): the prior models real magnitude images; x enters the operator as a
    complex image with zero imaginary part and is returned as ``op.in_dtype``.
    """
    h, w = image_size_of(op, y, "patchnr")
    real = op.real_dtype
    flow = _load(weights, op).to(dtype=real)
    b = y.shape[0]
    scale = float(op.norm_squared()) * h * w
    if optimizer == "lbfgs":
        n_patches = None
    if lr is None:
        lr = 1.0 if optimizer == "lbfgs" else 5e-3

    def to_op(x: Tensor) -> Tensor:
        return x.to(op.in_dtype) if op.in_complex else x

    if x0 is None:
        x0 = _start_image(op, y, init, noise_std, tau, tv_iter).to(real)
    elif init != "direct":
        raise ValueError(f"patchnr: give x0= or init={init!r}, not both")
    elif tuple(x0.shape) != (b, 1, h, w):
        raise ValueError(f"x0 must have shape {(b, 1, h, w)}, got {tuple(x0.shape)}")

    if nonneg is None:
        nonneg = optimizer == "adam"
    if nonneg and optimizer == "lbfgs":
        raise ValueError("patchnr: nonneg=True needs optimizer='adam' (a projection breaks L-BFGS)")
    project = (lambda v: v.clamp(min=0.0)) if nonneg else None

    def cb(k: int, x: Tensor, info: dict):
        return callback(k, to_op(x), info) if callback is not None else None

    def solve(lam_t: Tensor, start: Tensor | None) -> Tensor:
        weight = (lam_t.to(device=y.device, dtype=real) * scale).reshape(b)

        def objective(x: Tensor) -> Tensor:
            r = op(to_op(x)) - y
            data = 0.5 * (r.abs().pow(2) if r.is_complex() else r.pow(2)).reshape(b, -1).sum(1)
            return data + weight * patch_nll(flow, x, n_patches=n_patches, generator=generator)

        init = x0 if start is None else (start.abs() if start.is_complex() else start).to(real)
        if optimizer == "lbfgs":
            return to_op(
                minimize(objective, init.contiguous(), method="lbfgs", n_iter=n_iter, lr=lr, callback=cb)
            )
        # Adam on a stochastic objective jitters at the scale of its step: the last third of the steps
        # run at lr / 5 (a restarted Adam), which removes most of the jitter
        n_fast = n_iter - n_iter // 3
        x = minimize(
            objective, init.contiguous(), method="adam", n_iter=n_fast, lr=lr, callback=cb, project=project
        )
        if n_iter > n_fast:
            x = minimize(
                objective,
                x,
                method="adam",
                n_iter=n_iter - n_fast,
                lr=lr / 5,
                callback=None if callback is None else lambda k, v, info: cb(k + n_fast, v, info),
                project=project,
            )
        return to_op(x)

    if isinstance(lam, str):
        if noise_std is None:
            raise ValueError(f"patchnr: lam={lam!r} needs noise_std= (the std of the measurement noise)")
        if lam == "noise":
            rule = _default_noise_rule(weights, op) or (None, 2.0)
            c = rule[0] if noise_c is None else noise_c
            q = rule[1] if noise_power is None else noise_power
            lam_t = noise_rule_weight(op, noise_std, flow.patch_size, c=c, power=q)
            return solve(lam_t.reshape(-1).expand(b), None)
        from medrecon.solvers.weights import discrepancy_weight

        _, x = discrepancy_weight(
            solve, op, y, noise_std=noise_std, tau=tau, rtol=0.05, max_solves=8, bracket=(1e-8, 1.0)
        )
        return x
    return solve(torch.full((b,), float(lam), dtype=torch.float64), None)
