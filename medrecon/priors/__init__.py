"""Priors: TV, and the generative priors (VAE, normalizing flow, Deep Image Prior, GAN): the models,
their training steps and loading. The reconstruction methods built on them are in :mod:`medrecon.methods`.
"""

from .base import CheckpointMismatchError, DensityPrior, GenerativePrior, load_prior, load_weights
from .dip import DIPResult, DIPTrace, Hourglass, WindowedVarianceStopping, fit_dip
from .flow import MultiScaleFlow, load_flow
from .gan import DCGANPrior, load_gan
from .tv import total_variation
from .vae import ConvVAE, load_vae

__all__ = [
    "GenerativePrior",
    "DensityPrior",
    "CheckpointMismatchError",
    "load_prior",
    "load_weights",
    "total_variation",
    "ConvVAE",
    "load_vae",
    "MultiScaleFlow",
    "load_flow",
    "DCGANPrior",
    "load_gan",
    "Hourglass",
    "fit_dip",
    "DIPTrace",
    "DIPResult",
    "WindowedVarianceStopping",
]
