"""``medrecon.reconstruct(op, y, method, **options)``: one entry point, methods by name.

Each method is a function ``fn(op, y, *, <keyword options>) -> x`` with
``y: (B, C, *op.out_shape) -> x: (B, C, *op.in_shape)``. The registry maps a name to
``"module:function"`` and imports lazily, so naming a CT method never imports the MRI stack.
Options are checked against the function's signature before it runs: an unknown option is
an error that lists the valid ones.
"""
from __future__ import annotations

import inspect
from importlib import import_module
from typing import Callable

from torch import Tensor

from .operators.base import LinearOperator

__all__ = ["reconstruct", "available_methods", "register_method", "method_options", "get_method"]

# name -> "module:function". Each subpackage owns its lines.
_REGISTRY: dict[str, str] = {
    # classical image-space methods (solvers/classical.py)
    "fbp": "medrecon.solvers.classical:fbp",
    "zero-filled": "medrecon.solvers.classical:zero_filled",
    "cgls": "medrecon.solvers.classical:cgls",
    "tikhonov": "medrecon.solvers.classical:tikhonov",
    "tv": "medrecon.solvers.classical:tv",
    "sense": "medrecon.solvers.classical:sense",
    # generative priors: each prior module owns its method functions, built on solvers/latent.py
    "vae-range": "medrecon.priors.vae:reconstruct_range",
    "vae-soft": "medrecon.priors.vae:reconstruct_soft",
    "flow": "medrecon.priors.flow:reconstruct_flow",
    "dip": "medrecon.priors.dip:reconstruct_dip",
    "dip-tv": "medrecon.priors.dip:reconstruct_dip_tv",
    "csgm": "medrecon.priors.gan:reconstruct_csgm",
    "gan-d": "medrecon.priors.gan:reconstruct_gan_d",
}


def register_method(name: str, target: str | Callable) -> None:
    """Add a method: ``target`` is a function or a ``"module:function"`` string."""
    _REGISTRY[name] = target  # type: ignore[assignment]


def get_method(name: str) -> Callable:
    """The function behind a method name (imports its module)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(available_methods())}")
    target = _REGISTRY[name]
    if callable(target):
        return target
    module_name, attr = target.split(":")
    try:
        module = import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"method {name!r} is registered but not available ({target}): {exc}") from exc


def available_methods() -> list[str]:
    """Names of the registered methods whose implementation can be imported."""
    names = []
    for name, target in _REGISTRY.items():
        if callable(target):
            names.append(name)
            continue
        module_name, attr = target.split(":")
        try:
            if hasattr(import_module(module_name), attr):
                names.append(name)
        except ImportError:
            pass
    return names


def method_options(name: str) -> list[str]:
    """The keyword options a method accepts."""
    sig = inspect.signature(get_method(name))
    return [p.name for p in list(sig.parameters.values())[2:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def reconstruct(op: LinearOperator, y: Tensor, method: str, **options) -> Tensor:
    """x = method(op, y): ``y (B, C, *op.out_shape) -> x (B, C, *op.in_shape)``.

    >>> import torch, medrecon
    >>> from medrecon.operators import Identity
    >>> x = medrecon.reconstruct(Identity((4, 4)), torch.ones(1, 1, 4, 4), "cgls", n_iter=5)
    >>> round(float(x.mean()), 4)
    1.0
    """
    fn = get_method(method)
    valid = method_options(method)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"method {method!r} got unknown option(s) {', '.join(unknown)}; valid options: {', '.join(valid) or 'none'}"
        )
    return fn(op, y, **options)
