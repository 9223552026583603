"""Interfaces shared by the learned priors, and checked loading of their weights.

Protocols (structural: a class satisfies them by having the methods, no inheritance needed):

* ``GenerativePrior``: ``decode(z) -> x`` with ``latent_shape`` and ``sample_latent`` (VAE decoder,
  GAN generator). The latent solvers of ``medrecon.solvers.latent`` need only these.
* ``DensityPrior``: ``neg_log_prob(x) -> (B,)`` (normalizing flows; a VAE through its ELBO).
* ``TrainablePrior``: a ``nn.Module`` whose constructor takes only keyword hyperparameters and
  which exposes them as ``self.hparams`` (a dict of YAML-able values). That is what makes a
  checkpoint self-describing: it records ``"module:Class"`` and ``hparams``, and ``load_prior``
  rebuilds the model and checks every tensor's shape before loading.

Checkpoint format (written by ``medrecon.training``; a dict, loadable with
``torch.load(weights_only=True)``)::

    {"format": "medrecon-checkpoint-v1", "model_class": "medrecon.priors.vae:ConvVAE",
     "model_hparams": {...}, "model_state": state_dict, ...training state (optional)...}

Extension point for a new learned prior: give the model class ``hparams``, a keyword constructor and
an ``image_shape`` ``(C, H, W)``; ``fit`` then saves it, and ``load_weights(weights, MyPrior, ...)`` (the
one loader every learned-prior method uses) accepts a file or a model and checks the image size.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "load_weights",
    "resolve_weights",
    "bundled_sizes",
    "modality_of",
    "load_for_operator",
    "image_size_of",
    "load_frozen",
    "GenerativePrior",
    "DensityPrior",
    "TrainablePrior",
    "CheckpointMismatchError",
    "CHECKPOINT_FORMAT",
    "class_path",
    "resolve_class",
    "model_record",
    "read_checkpoint",
    "check_state_matches",
    "load_prior",
]

#: Version tag stored in every checkpoint and weights file.
CHECKPOINT_FORMAT = "medrecon-checkpoint-v1"


@runtime_checkable
class GenerativePrior(Protocol):
    """x = G(z): a generator with a latent space."""

    latent_shape: tuple[int, ...]

    def decode(self, z: Tensor) -> Tensor:  # (B, *latent_shape) -> (B, C, H, W)
        ...

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class DensityPrior(Protocol):
    """-log p(x) for images ``(B, *img) -> (B,)``."""

    def neg_log_prob(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class TrainablePrior(Protocol):
    """A model that ``medrecon.training`` can checkpoint: ``cls(**hparams)`` rebuilds it."""

    hparams: dict

    def state_dict(self, *args, **kwargs) -> Mapping[str, Any]: ...


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into (class, hyperparameters or shapes)."""


def class_path(obj_or_cls: Any) -> str:
    """``"module:QualName"`` of a class or instance."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_class(path: str) -> type:
    """The class named by ``"module:QualName"``; only classes inside ``medrecon`` are resolved.

    Checkpoints name their class as data, and data must not pick arbitrary code to import.
    """
    module_name, _, qualname = path.partition(":")
    if not qualname or not (module_name == "medrecon" or module_name.startswith("medrecon.")):
        raise CheckpointMismatchError(
            f"checkpoint names model class {path!r}; only 'medrecon.<module>:<Class>' classes can be loaded"
        )
    obj: Any = import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise CheckpointMismatchError(f"{path!r} is not a class")
    return obj


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(model, "module", model)


def model_record(model: nn.Module) -> dict:
    """The self-describing part of a checkpoint: class path, hyperparameters, weights (on CPU)."""
    model = _unwrap(model)
    hparams = getattr(model, "hparams", None)
    if not isinstance(hparams, dict):
        raise TypeError(
            f"{type(model).__name__} has no dict attribute 'hparams'; trainable priors must record their "
            "constructor's keyword arguments in self.hparams so that checkpoints can rebuild them"
        )
    return {
        "format": CHECKPOINT_FORMAT,
        "model_class": class_path(model),
        "model_hparams": dict(hparams),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with a clear error for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint/weights file at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holds pickled objects
        raise CheckpointMismatchError(f"cannot read {path} as a medrecon checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointMismatchError(
            f"{path} is not a medrecon checkpoint (expected format {CHECKPOINT_FORMAT!r}, found {found!r})"
        )
    return ckpt


def check_state_matches(model: nn.Module, ckpt: Mapping[str, Any], *, source: str = "checkpoint") -> None:
    """Raise ``CheckpointMismatchError`` naming class and tensor shapes when ``ckpt`` does not fit
    ``model``."""
    model = _unwrap(model)
    expected_cls, found_cls = class_path(model), ckpt.get("model_class")
    problems = []
    if found_cls != expected_cls:
        problems.append(f"model class: expected {expected_cls}, found {found_cls}")
    own_hp, ck_hp = getattr(model, "hparams", None), ckpt.get("model_hparams")
    if own_hp is not None and ck_hp is not None and dict(own_hp) != dict(ck_hp):
        diff = sorted(k for k in set(own_hp) | set(ck_hp) if own_hp.get(k) != ck_hp.get(k))
        problems.append(
            "hyperparameters differ: "
            + ", ".join(f"{k}: expected {own_hp.get(k)!r}, found {ck_hp.get(k)!r}" for k in diff)
        )
    own = model.state_dict()
    theirs = ckpt.get("model_state", {})
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(theirs[k].shape)}"
        for k in own
        if k in theirs and tuple(own[k].shape) != tuple(theirs[k].shape)
    ]

    def _few(names: list[str]) -> str:
        return ", ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")

    if missing:
        problems.append(f"tensors missing from the {source}: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors in the {source}: {_few(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_few(shapes)}")
    if problems:
        raise CheckpointMismatchError(f"{source} does not fit the model:\n  " + "\n  ".join(problems))


_REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_weights(
    weights: str | os.PathLike | None,
    image_size: int,
    defaults: Mapping[int, str | os.PathLike | Mapping[str, str | os.PathLike]],
    kind: str,
    *,
    modality: str | None = None,
) -> Path:
    """The weights file to load: ``weights``, or the bundled default for ``image_size`` (and ``modality``).

    ``defaults[image_size]`` is a path, or ``{modality: path}`` where one size has weights per modality
    (``"ct"`` for real operators, ``"mri"`` for complex ones: :func:`modality_of`).
    Repository-relative paths (``data/weights/...``) work from any working directory.
    """
    if weights is None:
        if image_size not in defaults:
            raise ValueError(
                f"no bundled {kind} weights for {image_size}x{image_size} images (bundled: "
                f"{bundled_sizes(defaults)}); pass weights=<path to a .pt from medrecon train>"
            )
        weights = defaults[image_size]
        if isinstance(weights, Mapping):
            if modality not in weights:
                raise ValueError(
                    f"no bundled {kind} weights for {modality or 'unknown'} images of {image_size}x{image_size} "
                    f"(bundled: {bundled_sizes(defaults)}); pass weights=<path to a .pt from medrecon train>"
                )
            weights = weights[modality]
    p = Path(weights)
    if not p.is_absolute() and not p.exists() and (_REPO_ROOT / p).exists():
        p = _REPO_ROOT / p
    return p


def bundled_sizes(defaults: Mapping) -> str:
    """``"28x28, 64x64, 128x128 (ct, mri)"``: the sizes (and modalities) of a ``DEFAULT_WEIGHTS`` table."""
    return ", ".join(
        f"{s}x{s}" + (f" ({', '.join(v)})" if isinstance(v, Mapping) else "") for s, v in defaults.items()
    )


def modality_of(op) -> str:
    """``"mri"`` for operators on complex images, ``"ct"`` otherwise: picks a bundled prior's weights."""
    return "mri" if getattr(op, "in_complex", False) else "ct"


def image_size_of(op, y: Tensor, kind: str) -> tuple[int, int]:
    """``(H, W)`` of the operator's images, after checking that a generative prior can serve it:
    2-D images and measurements ``y`` of shape ``(B, 1, *out_shape)``."""
    if len(op.in_shape) != 2:
        raise ValueError(f"{kind} priors need 2-D images; the operator's image shape is {op.in_shape}")
    if y.dim() < 2 or y.shape[1] != 1:
        raise ValueError(f"{kind} priors need y of shape (B, 1, *out_shape), got {tuple(y.shape)}")
    return op.in_shape


def load_frozen(path: str | os.PathLike, expected: type, *, device: torch.device | str = "cpu") -> nn.Module:
    """``load_prior`` for use as a fixed prior: eval mode, parameters without gradients."""
    model = load_prior(path, expected=expected, map_location=device)
    model.requires_grad_(False)
    return model


def _load_weights(
    weights: str | os.PathLike | nn.Module | None,
    expected: type,
    *,
    image_shape: tuple[int, int, int],
    defaults: Mapping[int, str | os.PathLike | Mapping[str, str | os.PathLike]],
    kind: str,
    device: torch.device | str = "cpu",
    modality: str | None = None,
) -> tuple[nn.Module, Path | None]:
    """(model, file or None): the prior model for images ``(C, H, W) = image_shape`` and the file it came from.

    ``weights``: a file from ``medrecon train`` (loaded frozen, class and tensor shapes checked), an
    instance of ``expected`` (a frozen copy in eval mode is used; the caller's model is left alone),
    or None (``defaults[H]`` for square images; ``defaults[H][modality]`` where a size has one per modality).
    The model's ``image_shape`` must equal ``image_shape``; else an error names both and the bundled sizes.
    """
    if isinstance(weights, nn.Module):
        if not isinstance(weights, expected):
            raise TypeError(
                f"weights must be a {expected.__name__} or a path to one, got a {type(weights).__name__}"
            )
        # a frozen copy: the method neither accumulates gradients in the caller's model nor moves it
        model = copy.deepcopy(weights).requires_grad_(False).eval().to(device)
        source, path = f"the given {type(weights).__name__}", None
    elif weights is None or isinstance(weights, (str, os.PathLike)):
        path = resolve_weights(weights, image_shape[1], defaults, kind, modality=modality)
        model, source = load_frozen(path, expected, device=device), str(path)
    else:
        raise TypeError(
            f"weights must be a path, a {expected.__name__} or None, got {type(weights).__name__}"
        )
    found = tuple(int(v) for v in model.image_shape)
    if found != tuple(image_shape):
        bundled = bundled_sizes(defaults)
        raise ValueError(
            f"the {kind} in {source} is for {'x'.join(map(str, found))} images but the operator's images are "
            f"{'x'.join(map(str, image_shape))}; use weights trained at that size (bundled: {bundled})"
        )
    return model, path


def load_weights(
    weights: str | os.PathLike | nn.Module | None,
    expected: type,
    *,
    image_shape: tuple[int, int, int],
    defaults: Mapping[int, str | os.PathLike | Mapping[str, str | os.PathLike]],
    kind: str,
    device: torch.device | str = "cpu",
    modality: str | None = None,
) -> nn.Module:
    """The prior model for images ``(C, H, W) = image_shape`` (see :func:`_load_weights`)."""
    return _load_weights(
        weights,
        expected,
        image_shape=image_shape,
        defaults=defaults,
        kind=kind,
        device=device,
        modality=modality,
    )[0]


def load_for_operator(
    weights: str | os.PathLike | nn.Module | None,
    expected: type,
    op,
    y: Tensor,
    *,
    defaults: Mapping[int, str | os.PathLike | Mapping[str, str | os.PathLike]],
    kind: str,
) -> tuple[nn.Module, str | None]:
    """(model, file) of a generative prior for ``op``'s single-channel images: ``load_weights`` with the
    image shape (checked by :func:`image_size_of`), device and modality (:func:`modality_of`) taken from
    the operator. ``file``: the weights file loaded (None for a model object), which per-file settings
    such as ``lam="noise"``'s calibration factor are keyed by."""
    h, w = image_size_of(op, y, kind)
    model, path = _load_weights(
        weights,
        expected,
        image_shape=(1, h, w),
        defaults=defaults,
        kind=kind,
        device=op.device,
        modality=modality_of(op),
    )
    return model, None if path is None else str(path)


def load_prior(
    path: str | os.PathLike,
    *,
    expected: type | tuple[type, ...] | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild and load the model stored in a checkpoint/weights file (eval mode).

    Args:
        path: a file written by ``medrecon.training`` (checkpoint or exported weights).
        expected: the class(es) the caller needs (e.g. ``ConvVAE``); another class is an error
            that names both.

    >>> load_prior("does-not-exist.pt")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no checkpoint/weights file at does-not-exist.pt
    """
    ckpt = read_checkpoint(path, map_location="cpu")
    found = ckpt.get("model_class", "?")
    if expected is not None:
        exp = expected if isinstance(expected, tuple) else (expected,)
        names = [class_path(c) for c in exp]
        if found not in names:
            raise CheckpointMismatchError(
                f"{path}: expected weights of {' or '.join(names)}, found a checkpoint of {found}"
            )
    cls = resolve_class(found)
    try:
        model = cls(**ckpt.get("model_hparams", {}))
    except TypeError as exc:
        raise CheckpointMismatchError(
            f"{path}: cannot rebuild {found} from its hyperparameters: {exc}"
        ) from exc
    check_state_matches(model, ckpt, source=str(path))
    model.load_state_dict(ckpt["model_state"])
    return model.to(map_location).eval()
