"""Strict typed configs: YAML (or a dict) -> frozen dataclasses, with dotted command-line overrides.

Generic: any (nested) dataclass works as a schema. Unknown keys, missing required keys and wrong
types are :class:`ConfigError` s that name the dotted key, e.g. ``operator.n_angles``.

Supported field types: ``bool``, ``int``, ``float`` (an int is accepted), ``str``, ``pathlib.Path``
(from a string), ``None``, ``Any``, ``X | Y`` / ``Optional``, ``Literal[...]``, ``list[T]``,
``tuple[T, ...]``, ``tuple[A, B]``, ``dict[str, T]``, nested dataclasses, and tagged choices: a union
of dataclasses that share a field typed as a one-value ``Literal`` (e.g. ``modality: Literal["ct"]``
in one, ``Literal["mri"]`` in the other) picks the member by that field's value. ``bool`` is never
accepted for ``int``/``float`` (and vice versa). YAML is read with ``yaml.safe_load`` semantics
plus YAML 1.2 floats, so ``1e-3`` is a float (PyYAML alone reads it as the string ``'1e-3'``).

Overrides are ``key.sub=value`` strings; ``value`` is parsed as YAML (``n_iter=50`` is an int,
``name=tv`` a string, ``angles=[0, 90]`` a list). A path segment that indexes a list is either
a position (``methods.1.options.lam=0.1``) or, for a list of mappings with a ``name`` key, the
entry's ``label`` or ``name`` (``methods.tv.options.lam=0.1``; a label wins, so ``tv`` picks the one
plain ``tv`` entry beside ``{name: tv, label: tv-discrepancy}``).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Solver:
...     n_iter: int = 10
...     lam: float = 1e-2
>>> load_config({"n_iter": 5}, Solver, overrides=["lam=1e-3"])
Solver(n_iter=5, lam=0.001)
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build_config",
    "check_device",
    "config_to_dict",
    "dump_config",
    "load_config",
    "read_yaml",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config does not fit its schema (the message names the dotted key)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats without a dot (``1e-3``, ``2E5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        msg = " ".join(str(exc).split())
        raise ConfigError(f"{where}: invalid YAML: {msg}") from None


def read_yaml(path: str | Path) -> dict:
    """The mapping in a YAML file (ConfigError when missing, unreadable or not a mapping)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    data = _yaml_load(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level of a config must be a mapping, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- overrides
def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    value = _yaml_load(raw, f"override {key}") if raw.strip() else ""
    return key.split("."), value


def _list_index(seq: list, part: str, dotted: str) -> int:
    if re.fullmatch(r"-?\d+", part):
        i = int(part)
        if not -len(seq) <= i < len(seq):
            raise ConfigError(f"override {dotted}: index {i} out of range (the list has {len(seq)} entries)")
        return i % len(seq)
    names = [e.get("label") or e.get("name") for e in seq if isinstance(e, dict)]
    # an entry's title is its label, else its name (methods: [{name: tv}, {name: tv, label: tv-2}])
    hits = [i for i, e in enumerate(seq) if isinstance(e, dict) and (e.get("label") or e.get("name")) == part]
    if not hits:
        hits = [i for i, e in enumerate(seq) if isinstance(e, dict) and e.get("name") == part]
    if len(hits) != 1:
        raise ConfigError(
            f"override {dotted}: {part!r} is not a list position or the name of exactly one entry "
            f"(names: {', '.join(map(str, names)) or 'none'})"
        )
    return hits[0]


def apply_overrides(data: Mapping, overrides: Iterable[str]) -> dict:
    """A deep copy of ``data`` with each ``a.b.c=value`` override applied (missing mappings are created)."""
    import copy

    out = copy.deepcopy(dict(data))
    for item in overrides:
        parts, value = _parse_override(item)
        dotted = ".".join(parts)
        node: Any = out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                i = _list_index(node, part, dotted)
                if last:
                    node[i] = value
                else:
                    node = node[i]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                prefix = ".".join(parts[:depth])
                raise ConfigError(f"override {dotted}: {prefix} is a {type(node).__name__}, not a mapping")
    return out


# --------------------------------------------------------------------------- building
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"


def _tagged_choice(members: tuple) -> tuple[str, dict[Any, type]] | None:
    """``(tag, {value: dataclass})`` when every member of a union is a dataclass whose field ``tag``
    is a one-value ``Literal`` (a tagged choice, e.g. ``modality: Literal["ct"]``), else ``None``."""
    if not members or not all(dataclasses.is_dataclass(m) and isinstance(m, type) for m in members):
        return None
    for f in dataclasses.fields(members[0]):
        choices: dict[Any, type] = {}
        for m in members:
            hint = typing.get_type_hints(m).get(f.name)
            lit = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
            if len(lit) != 1:
                break
            choices[lit[0]] = m
        else:
            if len(choices) == len(members):
                return f.name, choices
    return None


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise ConfigError(f"config key '{where}': expected null, got {_describe(value)}")
    if origin in (Union, types.UnionType):
        tagged = _tagged_choice(args)
        if tagged is not None and isinstance(value, Mapping):
            tag, choices = tagged
            if tag not in value:
                raise ConfigError(
                    f"missing required config key '{where}.{tag}' "
                    f"(one of {', '.join(repr(c) for c in choices)})"
                )
            if value[tag] not in choices or isinstance(value[tag], bool):
                raise ConfigError(
                    f"config key '{where}.{tag}': expected one of "
                    f"{', '.join(repr(c) for c in choices)}, got {value[tag]!r}"
                )
            return build_config(choices[value[tag]], value, _where=where)
        errors = []
        for member in args:
            try:
                return _convert(value, member, where)
            except ConfigError as exc:
                errors.append(exc)
        expected = " | ".join(_type_name(a) for a in args)
        raise ConfigError(f"config key '{where}': expected {expected}, got {_describe(value)}")
    if origin is Literal:
        if any(type(a) is type(value) and a == value for a in args):  # 1 is not True, 1.0 is not 1
            return value
        raise ConfigError(
            f"config key '{where}': expected one of {', '.join(repr(a) for a in args)}, got {value!r}"
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"config key '{where}': expected a mapping ({tp.__name__}), got {_describe(value)}"
            )
        return build_config(tp, value, _where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{where}': expected bool, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{where}': expected int, got {_describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{where}': expected float, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{where}': expected str, got {_describe(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"config key '{where}': expected a path (str), got {_describe(value)}")
    if origin in (list, Sequence, typing.Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{where}': expected a list, got {_describe(value)}")
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{where}': expected a list, got {_describe(value)}")
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_tp = args[0] if args else Any
            return tuple(_convert(v, item_tp, f"{where}.{i}") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"config key '{where}': expected a list of {len(args)} entries, got {len(value)}"
            )
        return tuple(_convert(v, a, f"{where}.{i}") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}': expected a mapping, got {_describe(value)}")
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _convert(k, key_tp, f"{where}.{k}"): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()
        }
    raise ConfigError(f"config key '{where}': unsupported field type {_type_name(tp)} in the schema")


def build_config(cls: type[T], data: Mapping, *, _where: str = "") -> T:
    """``cls(**data)`` checked strictly against ``cls``'s type hints, recursively."""
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config{' key ' + repr(_where) if _where else ''}: expected a mapping, got {_describe(data)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{_where}." if _where else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys{' of ' + repr(_where) if _where else ''}: "
            f"{', '.join(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"missing required config key '{prefix}{name}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a __post_init__ check of the schema
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config{' ' + repr(_where) if _where else ''}: {exc}") from None


def load_config(source: str | Path | Mapping, cls: type[T], overrides: Iterable[str] = ()) -> T:
    """YAML file (or mapping) -> ``cls`` instance, after applying ``key.sub=value`` overrides."""
    data = read_yaml(source) if isinstance(source, (str, Path)) else dict(source)
    data = apply_overrides(data, list(overrides))
    return build_config(cls, data)


# --------------------------------------------------------------------------- writing back
def config_to_dict(cfg: Any) -> Any:
    """A dataclass config as plain YAML-friendly data (paths -> str, tuples -> lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def dump_config(cfg: Any) -> str:
    """The YAML text of a config (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------- values that need the machine
def check_device(name: str, key: str = "device") -> None:
    """A ConfigError unless ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``) exists on this machine."""
    import torch

    try:
        dev = torch.device(name) if name != "auto" else torch.device("cpu")
    except RuntimeError:
        raise ConfigError(
            f"config key '{key}': {name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"config key '{key}': {name!r} asked for, but CUDA is not available on this machine (use cpu)"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"config key '{key}': {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)"
        )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"config key '{key}': 'mps' is not available on this machine (use cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"config key '{key}': device type {dev.type!r} is not supported (auto, cpu, cuda, mps)"
        )
