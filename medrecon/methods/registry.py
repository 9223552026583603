"""The method registry: ``@register_method(name)`` beside each method, one checked way in.

A method is ``fn(op, y, *, <keyword options>) -> x``, ``y (B, C, *op.out_shape) -> x (B, C, *op.in_shape)``.
:func:`register_method` wraps it so that every call, whether through :func:`reconstruct`, through
:func:`get_method` or by importing the function, first runs the same checks:

* ``y`` against ``(B, C, *op.out_shape)`` and the operator's kind of dtype (:func:`check_measurements`);
* the option names against the function's keyword arguments (an unknown one lists the valid ones);
  deprecated names (``aliases``) are renamed with a ``DeprecationWarning``;
* the option values by :data:`OPTION_CHECKS`, one rule per option name shared by all methods (an
  iteration count is an integer >= 1 in every method), plus the method's own ``checks``.

:func:`validate_options` runs the option checks alone, so that a caller (the CLI) can reject a bad
option of the fifth method before the first one runs.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from medrecon.operators.base import LinearOperator

__all__ = [
    "OPTION_CHECKS",
    "Check",
    "available_methods",
    "check_measurements",
    "get_method",
    "integer",
    "method_defaults",
    "method_options",
    "number",
    "one_of",
    "optional",
    "reconstruct",
    "register_method",
    "validate_options",
    "weight_or_rule",
]

Check = Callable[[Any], "str | None"]
"""An option check: ``check(value)`` returns None when the value is valid, else what was expected."""


# --------------------------------------------------------------------------- option checks
def integer(minimum: int = 1) -> Check:
    """An integer >= ``minimum`` (not a bool, not a float)."""

    def check(v: Any) -> str | None:
        ok = isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum
        return None if ok else f"an integer >= {minimum}"

    return check


def number(
    minimum: float = 0.0, *, strict: bool = False, maximum: float | None = None, strict_max: bool = False
) -> Check:
    """A finite real number in ``[minimum, maximum]`` (``strict``: the bound itself excluded)."""
    lo = f"> {minimum:g}" if strict else f">= {minimum:g}"
    hi = "" if maximum is None else (f" and < {maximum:g}" if strict_max else f" and <= {maximum:g}")

    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            return f"a finite number {lo}{hi}"
        ok = (v > minimum if strict else v >= minimum) and (
            maximum is None or (v < maximum if strict_max else v <= maximum)
        )
        return None if ok else f"a finite number {lo}{hi}"

    return check


def one_of(*values: Any) -> Check:
    """One of ``values``."""

    def check(v: Any) -> str | None:
        return (
            None
            if any(v is w or (type(v) is type(w) and v == w) for w in values)
            else ("one of " + ", ".join(repr(w) for w in values))
        )

    return check


def optional(inner: Check) -> Check:
    """None, or what ``inner`` accepts."""

    def check(v: Any) -> str | None:
        if v is None:
            return None
        bad = inner(v)
        return None if bad is None else f"None or {bad}"

    return check


def _positive_or_tensor(v: Any) -> str | None:
    """A number > 0, or a tensor of them (one per batch element)."""
    if isinstance(v, Tensor):
        vals = v.detach().reshape(-1).double().cpu()
        ok = vals.numel() > 0 and bool(vals.isfinite().all()) and bool((vals > 0).all())
    else:
        ok = number(0.0, strict=True)(v) is None
    return None if ok else "a finite number > 0 (or a tensor of them, one per batch element)"


def _callable(v: Any) -> str | None:
    return None if callable(v) else "a function"


def weight_or_rule(*rules: str) -> Check:
    """A weight >= 0, or one of the named rules that choose it (``"discrepancy"``, ``"sweep"``)."""
    base = number(0.0)

    def check(v: Any) -> str | None:
        if isinstance(v, str):
            return None if v in rules else "a number >= 0 or " + " or ".join(repr(r) for r in rules)
        return None if base(v) is None else "a number >= 0 or " + " or ".join(repr(r) for r in rules)

    return check


#: The rule for each option name, shared by every method that has the option (one name per
#: concept). A method overrides or adds rules with ``register_method(..., checks=...)``.
OPTION_CHECKS: dict[str, Check] = {
    "n_iter": integer(1),
    "lam": number(0.0),
    "lr": number(0.0, strict=True),
    "step": optional(number(0.0, strict=True)),
    "step_ratio": number(0.0, strict=True),
    "tol": number(0.0),
    "tau": number(0.0, strict=True),
    "noise_std": optional(_positive_or_tensor),
    "restarts": integer(1),
    "cg_iter": integer(1),
    "z_steps": integer(1),
    "z_lr": number(0.0, strict=True),
    "mu": number(0.0),
    "init_std": number(0.0, strict=True),
    "z_norm_bound": optional(number(0.0, strict=True)),
    "d_weight": number(0.0),
    "p": number(0.0, strict=True),
    "frequency_scaling": number(0.0, strict=True, maximum=1.0),
    "nonneg": one_of(True, False),
    "blend": one_of(False, "copy", "poisson"),
    "callback": optional(_callable),
}


# --------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class _Spec:
    name: str
    fn: Callable
    options: tuple[str, ...]
    checks: Mapping[str, Check]
    aliases: Mapping[str, str] = field(default_factory=dict)
    value_aliases: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)


_REGISTRY: dict[str, Callable] = {}


def _signature(fn: Callable, options_from: Callable | None, exclude: tuple[str, ...]) -> inspect.Signature:
    """``fn``'s signature; a ``**options`` catch-all is replaced by ``options_from``'s keyword-only
    parameters (less ``exclude`` and those ``fn`` names itself), so the options are listed once."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind != p.VAR_KEYWORD]
    has_var = len(params) != len(sig.parameters)
    if has_var != (options_from is not None):
        raise TypeError(f"{fn.__qualname__}: give options_from= exactly when the function takes **options")
    if options_from is not None:
        named = {p.name for p in params} | set(exclude)
        params += [
            p
            for p in inspect.signature(options_from).parameters.values()
            if p.kind == p.KEYWORD_ONLY and p.name not in named
        ]
    return sig.replace(parameters=params)


def _keyword_options(sig: inspect.Signature) -> tuple[str, ...]:
    params = list(sig.parameters.values())[2:]
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def register_method(
    name: str,
    *,
    checks: Mapping[str, Check] | None = None,
    aliases: Mapping[str, str] | None = None,
    value_aliases: Mapping[str, Mapping[Any, Any]] | None = None,
    options_from: Callable | None = None,
    exclude: tuple[str, ...] = (),
) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn(op, y, *, options)`` as method ``name`` and check every call.

    Args:
        checks: rules for this method's options, over :data:`OPTION_CHECKS` (by option name).
        aliases: deprecated option names -> current ones (``{"gamma": "lam"}``).
        value_aliases: per option, deprecated values -> current ones (``{"init": {"zero": "zeros"}}``).
        options_from: for ``fn(op, y, *, own options, **options)`` that passes ``options`` on: the
            function whose keyword-only parameters (less ``exclude``) are the rest of the options.
            The registered method's signature lists them all (``help``, ``inspect.signature``).

    Usage (in a family module of :mod:`medrecon.methods`)::

        @register_method("landweber", checks={"relax": number(0.0, strict=True, maximum=2.0)})
        def landweber(op, y, *, n_iter: int = 50, relax: float = 1.0, callback=None): ...
    """

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY and getattr(_REGISTRY[name], "__wrapped__", None) is not fn:
            raise ValueError(f"method {name!r} is already registered (by {_REGISTRY[name].__module__})")
        sig = _signature(fn, options_from, exclude)
        options = _keyword_options(sig)
        own = dict(checks or {})
        unknown = sorted(set(own) - set(options))
        if unknown:
            raise ValueError(f"register_method({name!r}): checks for options the function lacks: {unknown}")
        rules = {k: OPTION_CHECKS[k] for k in options if k in OPTION_CHECKS}
        rules.update(own)
        spec = _Spec(name, fn, options, rules, dict(aliases or {}), dict(value_aliases or {}))

        @functools.wraps(fn)
        def method(op: LinearOperator, y: Tensor, **opts: Any) -> Tensor:
            check_measurements(op, y, name)
            return fn(op, y, **_checked(spec, opts))

        method.__signature__ = sig  # type: ignore[attr-defined]
        method.method_name = name  # type: ignore[attr-defined]
        method.spec = spec  # type: ignore[attr-defined]
        _REGISTRY[name] = method
        return method

    return deco


def _spec(name: str) -> _Spec:
    return get_method(name).spec  # type: ignore[attr-defined]


def _checked(spec: _Spec, options: Mapping[str, Any], *, warn: bool = True) -> dict[str, Any]:
    """``options`` with deprecated names and values replaced, after checking names and values."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in spec.aliases:
            new = spec.aliases[key]
            if new in options:
                raise ValueError(f"method {spec.name!r}: give {new!r} only ({key!r} is its deprecated name)")
            if warn:
                warnings.warn(
                    f"method {spec.name!r}: option {key!r} is deprecated, use {new!r}",
                    DeprecationWarning,
                    stacklevel=4,
                )
            key = new
        out[key] = value
    unknown = sorted(set(out) - set(spec.options))
    if unknown:
        raise ValueError(
            f"method {spec.name!r} got unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(spec.options) or 'none'}"
        )
    for key, value in out.items():
        renames = spec.value_aliases.get(key, {})
        if isinstance(value, str) and value in renames:
            if warn:
                warnings.warn(
                    f"method {spec.name!r}: {key}={value!r} is deprecated, use {renames[value]!r}",
                    DeprecationWarning,
                    stacklevel=4,
                )
            out[key] = value = renames[value]
        check = spec.checks.get(key)
        expected = check(value) if check is not None else None
        if expected is not None:
            raise ValueError(f"method {spec.name!r}: option {key} must be {expected}, got {value!r}")
    return out


def get_method(name: str) -> Callable:
    """The (checking) function behind a method name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(available_methods())}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_REGISTRY)


def method_options(name: str) -> list[str]:
    """The keyword options a method accepts (deprecated aliases not included)."""
    return list(_spec(name).options)


def method_defaults(name: str) -> dict[str, Any]:
    """Each option of a method with its default value (options without a default left out).

    >>> method_defaults("tv")["n_iter"]
    300
    """
    params = inspect.signature(get_method(name)).parameters
    empty = inspect.Parameter.empty
    return {k: params[k].default for k in _spec(name).options if params[k].default is not empty}


def validate_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check a method name and its options without running anything; returns the options with
    deprecated names and values replaced. Raises ``ValueError`` naming the method, option and rule.

    >>> validate_options("tv", {"n_iter": 0})
    Traceback (most recent call last):
    ...
    ValueError: method 'tv': option n_iter must be an integer >= 1, got 0
    """
    return _checked(_spec(method), options, warn=False)


def check_measurements(op: LinearOperator, y: Any, method: str = "reconstruct") -> None:
    """Raise ``ValueError`` unless ``y`` is a tensor of shape ``(B, C, *op.out_shape)`` of the operator's kind
    (complex for a complex operator, real otherwise)."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"method {method!r}: op must be a medrecon LinearOperator, got {type(op).__name__}")
    want = f"(B, C, {', '.join(map(str, op.out_shape))})"
    if not isinstance(y, Tensor):
        raise TypeError(
            f"method {method!r}: y must be a torch.Tensor of shape {want}, got {type(y).__name__}"
        )
    if y.dim() != len(op.out_shape) + 2 or tuple(y.shape[2:]) != tuple(op.out_shape):
        same = tuple(y.shape) == tuple(op.out_shape)
        hint = "; add the batch and channel axes, e.g. y[None, None]" if same else ""
        raise ValueError(
            f"method {method!r}: y must have shape {want} = (B, C, *op.out_shape) for "
            f"{type(op).__name__}, got {tuple(y.shape)}{hint}"
        )
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"method {method!r}: y has an empty batch or channel axis, shape {tuple(y.shape)}")
    if y.is_complex() != op.out_complex:
        raise ValueError(
            f"method {method!r}: {type(op).__name__} takes {'complex' if op.out_complex else 'real'} "
            f"measurements, got y of dtype {y.dtype}"
        )


def reconstruct(op: LinearOperator, y: Tensor, method: str, **options: Any) -> Tensor:
    """x = method(op, y): ``y (B, C, *op.out_shape) -> x (B, C, *op.in_shape)``.

    >>> import torch, medrecon
    >>> from medrecon.operators import Identity
    >>> x = medrecon.reconstruct(Identity((4, 4)), torch.ones(1, 1, 4, 4), "cgls", n_iter=5)
    >>> round(float(x.mean()), 4)
    1.0
    """
    return get_method(method)(op, y, **options)
