"""The schema of a reconstruction experiment (``medrecon reconstruct CONFIG.yaml``).

YAML -> :class:`ExperimentConfig` through :func:`medrecon.config.load_config` (strict: unknown keys and
wrong types are errors naming the dotted key). The ``operator:`` section is a tagged choice on
``modality``: ``ct`` takes the fields of :class:`CTOperatorSpec`, ``mri`` those of
:class:`MRIOperatorSpec`, and a field of the other modality is an unknown key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from ..config import ConfigError, load_config

__all__ = ["ImageSpec", "CTOperatorSpec", "MRIOperatorSpec", "OperatorSpec", "MethodSpec", "ExperimentConfig",
           "OutputExistsError", "ExperimentError", "load_experiment_config", "validate_methods", "AUTO_OPTIONS"]


@dataclass(frozen=True)
class ImageSpec:
    """One image source (see :mod:`medrecon.data.images` for the kinds)."""

    kind: str
    path: str | None = None
    name: str | None = None
    n: int = 1
    seed: int = 0
    slices: list[int] | int | None = None  # an int: that many evenly spaced slices (real_ct / real_mri)
    window: tuple[float, float] | None = None
    split: str | None = None  # real_ct / real_mri: train | validation (default)

    def __post_init__(self) -> None:
        from ..data.images import IMAGE_KINDS

        if self.kind not in IMAGE_KINDS:
            raise ConfigError(f"unknown image kind {self.kind!r}; valid kinds: {', '.join(IMAGE_KINDS)}")
        if self.n < 1:
            raise ConfigError(f"config key 'images.n' must be >= 1, got {self.n}")
        if self.split is not None and self.split not in ("train", "validation"):
            raise ConfigError(f"config key 'images.split' must be 'train' or 'validation', got {self.split!r}")
        if self.window is not None and not (math.isfinite(self.window[0]) and math.isfinite(self.window[1])
                                            and self.window[1] > self.window[0]):
            raise ConfigError(f"config key 'images.window' must be [lo, hi] with finite lo < hi, got "
                              f"{list(self.window)}")


def _check_noise(noise_level: float) -> None:
    if not (math.isfinite(noise_level) and noise_level >= 0):
        raise ConfigError(f"config key 'operator.noise_level' must be a finite number >= 0 (a fraction of "
                          f"mean |Ax|, e.g. 0.02), got {noise_level}")


@dataclass(frozen=True)
class CTOperatorSpec:
    """CT: ``geometry`` parallel/fan, ``n_angles`` over [0, pi) (parallel) or [0, 2 pi) (fan, as the CT
    operator defines), ``n_detectors`` (default: the operator's), fan radii in pixels, ``backend``
    (``auto``, ``astra``, ``odl``, ``matrix``). ``noise_level``: see :mod:`medrecon.experiment`."""

    modality: Literal["ct"]
    noise_level: float = 0.0
    geometry: Literal["parallel", "fan"] = "parallel"
    n_angles: int = 30
    n_detectors: int | None = None
    source_radius: float | None = None
    detector_radius: float | None = None
    backend: Literal["auto", "astra", "odl", "matrix"] = "auto"

    def __post_init__(self) -> None:
        _check_noise(self.noise_level)
        if self.n_angles < 1:
            raise ConfigError(f"config key 'operator.n_angles' must be >= 1, got {self.n_angles}")
        if self.n_detectors is not None and self.n_detectors < 1:
            raise ConfigError(f"config key 'operator.n_detectors' must be >= 1 (or null for the default), "
                              f"got {self.n_detectors}")
        if self.geometry == "fan":
            for key in ("source_radius", "detector_radius"):
                value = getattr(self, key)
                if value is None:
                    raise ConfigError(f"config key 'operator.{key}' is required for geometry 'fan' (pixels)")
                if not (math.isfinite(value) and value > 0):
                    raise ConfigError(f"config key 'operator.{key}' must be a finite number > 0 (pixels), "
                                      f"got {value}")


@dataclass(frozen=True)
class MRIOperatorSpec:
    """MRI: ``mask`` kind (``medrecon.operators.masks.MASK_KINDS``), ``acceleration``,
    ``center_fraction``, ``coils`` (1: single-coil; more: simulated smooth coil maps), ``sensitivities``
    ``known`` (the simulated maps) or ``estimated`` (from the ACS region of the measured k-space).
    ``mask_seed``: defaults to the experiment seed."""

    modality: Literal["mri"]
    noise_level: float = 0.0
    mask: str = "equispaced"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    coils: int = 1
    sensitivities: Literal["known", "estimated"] = "known"
    mask_seed: int | None = None

    def __post_init__(self) -> None:
        from ..operators.masks import MASK_KINDS

        _check_noise(self.noise_level)
        if self.mask not in MASK_KINDS:
            raise ConfigError(f"config key 'operator.mask': unknown mask kind {self.mask!r}; valid kinds: "
                              f"{', '.join(MASK_KINDS)}")
        if not (math.isfinite(self.acceleration) and self.acceleration >= 1):
            raise ConfigError(f"config key 'operator.acceleration' must be a finite number >= 1, got "
                              f"{self.acceleration}")
        if not 0 < self.center_fraction <= 1:
            raise ConfigError(f"config key 'operator.center_fraction' must be in (0, 1], got {self.center_fraction}")
        if self.coils < 1:
            raise ConfigError(f"config key 'operator.coils' must be >= 1, got {self.coils}")


def OperatorSpec(modality: str, **fields: Any) -> CTOperatorSpec | MRIOperatorSpec:  # noqa: N802 - old class name
    """Deprecated alias: ``OperatorSpec(modality="ct", ...)`` builds a :class:`CTOperatorSpec` (``"mri"``:
    :class:`MRIOperatorSpec`)."""
    classes = {"ct": CTOperatorSpec, "mri": MRIOperatorSpec}
    if modality not in classes:
        raise ConfigError(f"config key 'operator.modality': expected one of 'ct', 'mri', got {modality!r}")
    return classes[modality](modality=modality, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MethodSpec:
    """A method by registered name, its keyword options, and an optional label (to run one method twice)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @property
    def title(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class ExperimentConfig:
    """A reconstruction experiment (``medrecon reconstruct``)."""

    images: list[ImageSpec]
    operator: Union[CTOperatorSpec, MRIOperatorSpec]  # tagged by ``modality``
    methods: list[MethodSpec]
    name: str = "experiment"
    seed: int = 0
    image_size: int = 64
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    figure: bool = True
    figure_max_images: int = 4
    threads: int = 1  # torch intra-op CPU threads during the run (1 is fastest for small images)

    def __post_init__(self) -> None:
        if not self.images:
            raise ConfigError("config key 'images' must list at least one image source")
        if not self.methods:
            raise ConfigError("config key 'methods' must list at least one method")
        titles = [m.title for m in self.methods]
        dup = sorted({t for t in titles if titles.count(t) > 1})
        if dup:
            raise ConfigError(f"methods {', '.join(dup)} appear twice; give each a distinct 'label'")
        if self.image_size < 8:
            raise ConfigError(f"config key 'image_size' must be >= 8, got {self.image_size}")
        if self.threads < 1:
            raise ConfigError(f"config key 'threads' must be >= 1, got {self.threads}")
        if self.figure_max_images < 1:
            raise ConfigError(f"config key 'figure_max_images' must be >= 1, got {self.figure_max_images}")

    @property
    def modality(self) -> str:
        return self.operator.modality


class OutputExistsError(FileExistsError):
    """The output directory exists and --overwrite was not given."""


class ExperimentError(RuntimeError):
    """A method failed while running (the message names it)."""


#: options the experiment fills in itself
AUTO_OPTIONS = ("callback", "x_true", "noise_std", "generator")


def load_experiment_config(source: str | Path | dict, overrides: list[str] = ()) -> ExperimentConfig:
    """Strict load plus :func:`validate_methods` (unknown methods / options are ConfigErrors)."""
    cfg = load_config(source, ExperimentConfig, overrides)
    validate_methods(cfg)
    return cfg


def validate_methods(cfg: ExperimentConfig) -> None:
    """Every method exists and every option is one it accepts (errors list the valid ones)."""
    from ..methods import available_methods, get_method, method_options

    for i, m in enumerate(cfg.methods):
        try:
            get_method(m.name)
        except ValueError as exc:
            msg = str(exc)
            if "valid methods" not in msg:
                msg += f"; available methods: {', '.join(available_methods())}"
            raise ConfigError(f"methods.{i}: {msg}") from None
        valid = method_options(m.name)
        unknown = sorted(set(m.options) - set(valid))
        if unknown:
            raise ConfigError(
                f"methods.{i} ({m.name}): unknown option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(v for v in valid if v != 'callback')}"
            )
        reserved = sorted(set(m.options) & {"callback", "x_true"})
        if reserved:
            raise ConfigError(f"methods.{i} ({m.name}): option(s) {', '.join(reserved)} are set by the experiment")
        for key, value in m.options.items():
            problem = _option_problem(get_method(m.name), key, value)
            if problem:
                raise ConfigError(f"config key 'methods.{i}.options.{key}' ({m.name}): {problem}, got {value!r}")


#: options that count something (>= 1) or may be zero (>= 0), and step-like (> 0) or weight-like (>= 0) numbers
_COUNTS = {"n_iter", "restarts", "channels", "depth", "input_depth", "window", "patience", "max_iter", "n_restarts"}
_COUNTS0 = {"warmup", "skip_channels"}
_POSITIVE = {"lr", "step", "tol", "plateau_tol", "mu", "tau", "step_ratio", "rtol", "atol"}
_NONNEGATIVE = {"lam", "gamma", "tv_weight", "z_bound", "perturbation", "noise_std", "rise"}
_LAM_RULES = ("discrepancy", "sweep")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _option_problem(fn, key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for option ``key`` of method ``fn`` (its type from the signature's
    default, its range from the option's name), or None. Checked before the first method runs."""
    import inspect

    param = inspect.signature(fn).parameters.get(key)
    default = param.default if param is not None else inspect.Parameter.empty
    if key == "lam" and isinstance(value, str):
        return None if value in _LAM_RULES else f"expected a number >= 0 or one of {', '.join(_LAM_RULES)}"
    if key == "weights" and isinstance(value, str):
        from ..priors.base import resolve_weights

        path = resolve_weights(value, 0, {}, "")
        return None if path.is_file() else f"weights file {value} does not exist"
    if key in _COUNTS or key in _COUNTS0 or (isinstance(default, int) and not isinstance(default, bool)):
        low = 0 if key in _COUNTS0 else 1
        if key in _COUNTS or key in _COUNTS0:
            if not (isinstance(value, int) and not isinstance(value, bool)) or value < low:
                return f"expected an integer >= {low}"
        elif not (isinstance(value, int) and not isinstance(value, bool)):
            return "expected an integer"
        return None
    if key in _POSITIVE or key in _NONNEGATIVE or isinstance(default, float):
        if value is None and default is None:
            return None
        if not _is_number(value) or not math.isfinite(value):
            return "expected a finite number"
        if key in _POSITIVE and value <= 0:
            return "expected a number > 0"
        if key in _NONNEGATIVE and value < 0:
            return "expected a number >= 0"
        return None
    if isinstance(default, bool) and not isinstance(value, bool):
        return "expected true or false"
    if isinstance(default, str) and not isinstance(value, str):
        return "expected a string"
    return None
