"""medrecon.training: ``fit``, the one training loop of every learned prior, and ``medrecon train``.

>>> from medrecon.training import FitConfig
>>> FitConfig(epochs=2).batch_size
64
"""

from .fit import CHECKPOINT_NAME, FitConfig, FitResult, StepContext, epoch_order, fit, resolve_device

__all__ = [
    "fit",
    "FitConfig",
    "FitResult",
    "StepContext",
    "epoch_order",
    "resolve_device",
    "CHECKPOINT_NAME",
    "train_from_config",
    "export_weights",
]


def __getattr__(name: str):
    if name in ("train_from_config", "export_weights"):  # lazy: run.py imports the config/data stack
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'medrecon.training' has no attribute {name!r}")
