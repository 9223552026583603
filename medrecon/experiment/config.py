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
from typing import Any, Literal

from ..config import ConfigError, load_config
from .measured import MeasuredSpec

__all__ = [
    "AUTO_OPTIONS",
    "CTOperatorSpec",
    "ExperimentConfig",
    "ExperimentError",
    "ImageSpec",
    "MRIOperatorSpec",
    "MethodSpec",
    "OperatorSpec",
    "OutputExistsError",
    "load_experiment_config",
    "validate_methods",
]


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
            raise ConfigError(
                f"config key 'images.split' must be 'train' or 'validation', got {self.split!r}"
            )
        if self.window is not None and not (
            math.isfinite(self.window[0])
            and math.isfinite(self.window[1])
            and self.window[1] > self.window[0]
        ):
            raise ConfigError(
                f"config key 'images.window' must be [lo, hi] with finite lo < hi, got {list(self.window)}"
            )


def _check_noise(noise_level: float) -> None:
    if not (math.isfinite(noise_level) and noise_level >= 0):
        raise ConfigError(
            f"config key 'operator.noise_level' must be a finite number >= 0 (a fraction of "
            f"mean |Ax|, e.g. 0.02), got {noise_level}"
        )


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
    # noise: gaussian (noise_level, above) or poisson_log, LoDoPaB-CT's model (medrecon.data.lodopab):
    # images are mu / mu_max (mu_max = 81.35858 /m), the image side is field_of_view_m metres, and each
    # detector bin receives `photons` incident photons.
    noise: Literal["gaussian", "poisson_log"] = "gaussian"
    photons: float = 4096.0
    field_of_view_m: float = 0.26

    def __post_init__(self) -> None:
        _check_noise(self.noise_level)
        if self.noise == "poisson_log" and self.noise_level != 0:
            raise ConfigError(
                "config key 'operator.noise_level' is for noise: gaussian; noise: poisson_log is set "
                "by operator.photons"
            )
        for key in ("photons", "field_of_view_m"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                raise ConfigError(
                    f"config key 'operator.{key}' must be a finite number > 0, got {getattr(self, key)}"
                )
        if self.n_angles < 1:
            raise ConfigError(f"config key 'operator.n_angles' must be >= 1, got {self.n_angles}")
        if self.n_detectors is not None and self.n_detectors < 1:
            raise ConfigError(
                f"config key 'operator.n_detectors' must be >= 1 (or null for the default), "
                f"got {self.n_detectors}"
            )
        if self.geometry == "fan":
            for key in ("source_radius", "detector_radius"):
                value = getattr(self, key)
                if value is None:
                    raise ConfigError(f"config key 'operator.{key}' is required for geometry 'fan' (pixels)")
                if not (math.isfinite(value) and value > 0):
                    raise ConfigError(
                        f"config key 'operator.{key}' must be a finite number > 0 (pixels), got {value}"
                    )


@dataclass(frozen=True)
class MRIOperatorSpec:
    """MRI: ``mask`` kind (``medrecon.operators.masks.MASK_KINDS``), ``acceleration``,
    ``center_fraction``, ``coils`` (1: single-coil; more: simulated smooth coil maps), ``sensitivities``
    ``known`` (the simulated maps) or ``estimated`` (from the ACS region of the measured k-space).
    ``sensitivity_method``: how maps are estimated (simulated ``estimated`` and measured multi-coil data):
    ``espirit`` (:func:`~medrecon.operators.espirit.espirit_maps`) or ``lowres`` (the cheap low-resolution
    maps). ``mask_seed``: defaults to the experiment seed."""

    modality: Literal["mri"]
    noise_level: float = 0.0
    mask: str = "equispaced"
    acceleration: float = 4.0
    center_fraction: float = 0.08
    coils: int = 1
    sensitivities: Literal["known", "estimated"] = "known"
    sensitivity_method: Literal["espirit", "lowres"] = "espirit"
    mask_seed: int | None = None

    def __post_init__(self) -> None:
        from ..operators.masks import MASK_KINDS

        _check_noise(self.noise_level)
        if self.mask not in MASK_KINDS:
            raise ConfigError(
                f"config key 'operator.mask': unknown mask kind {self.mask!r}; valid kinds: "
                f"{', '.join(MASK_KINDS)}"
            )
        if not (math.isfinite(self.acceleration) and self.acceleration >= 1):
            raise ConfigError(
                f"config key 'operator.acceleration' must be a finite number >= 1, got {self.acceleration}"
            )
        if not 0 < self.center_fraction <= 1:
            raise ConfigError(
                f"config key 'operator.center_fraction' must be in (0, 1], got {self.center_fraction}"
            )
        if self.coils < 1:
            raise ConfigError(f"config key 'operator.coils' must be >= 1, got {self.coils}")


def OperatorSpec(modality: str, **fields: Any) -> CTOperatorSpec | MRIOperatorSpec:
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
    operator: CTOperatorSpec | MRIOperatorSpec  # tagged by ``modality``
    methods: list[MethodSpec]
    name: str = "experiment"
    seed: int = 0
    image_size: int = 64
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    figure: bool = True
    figure_max_images: int = 4
    threads: int = 1  # torch intra-op CPU threads during the run (1 is fastest for small images)
    measured: MeasuredSpec | None = (
        None  # a file's own measurements (medrecon.experiment.measured), images: []
    )

    def __post_init__(self) -> None:
        if not self.images and self.measured is None:
            raise ConfigError("config key 'images' must list at least one image source")
        if self.images and self.measured is not None:
            raise ConfigError(
                "give either 'images' (measurements simulated from them) or 'measured' (a file's "
                "own measurements), not both; with 'measured' write images: []"
            )
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
    """Every method exists and every option is one it accepts, with a valid value (the registry's
    :func:`medrecon.methods.validate_options`); a ``weights`` file exists. Errors name the config key."""
    import re

    from ..methods import available_methods, get_method, validate_options
    from ..priors.base import resolve_weights

    for i, m in enumerate(cfg.methods):
        try:
            get_method(m.name)
        except ValueError as exc:
            msg = str(exc)
            if "valid methods" not in msg:
                msg += f"; available methods: {', '.join(available_methods())}"
            raise ConfigError(f"methods.{i}: {msg}") from None
        reserved = sorted(set(m.options) & {"callback", "x_true"})
        if reserved:
            raise ConfigError(
                f"methods.{i} ({m.name}): option(s) {', '.join(reserved)} are set by the experiment"
            )
        try:
            validate_options(m.name, m.options)
        except ValueError as exc:
            msg = re.sub(rf"^method {re.escape(repr(m.name))}(: | got )", "", " ".join(str(exc).split()))
            option = re.match(r"option (\w+) (.*)", msg)
            if option:
                raise ConfigError(
                    f"config key 'methods.{i}.options.{option[1]}' ({m.name}): {option[2]}"
                ) from None
            raise ConfigError(f"methods.{i} ({m.name}): {msg}") from None
        weights = m.options.get("weights")
        if isinstance(weights, str):
            _check_weights_file(resolve_weights(weights, 0, {}, ""), f"methods.{i}.options.weights", m.name)


def _check_weights_file(path: Path, key: str, method: str) -> None:
    """The file exists and is a medrecon weights file (read with ``weights_only=True``: code is never run)."""
    from ..priors.base import CheckpointMismatchError, read_checkpoint

    if not path.is_file():
        raise ConfigError(f"config key '{key}' ({method}): weights file {path} does not exist")
    try:
        read_checkpoint(path)
    except CheckpointMismatchError as exc:
        reason = (
            "not a medrecon weights file"
            if "not a medrecon checkpoint" in str(exc)
            else (
                "not a readable torch weights file (truncated, another format, or pickled objects, which are "
                "never loaded)"
            )
        )
        raise ConfigError(f"config key '{key}' ({method}): {path} is {reason}") from None
