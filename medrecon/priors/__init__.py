"""Priors: TV, and the generative priors (VAE, normalizing flow, Deep Image Prior, GAN).

Each prior module also holds its registered reconstruction methods (``medrecon.reconstruct``
names ``vae-range``, ``vae-soft``, ``flow``, ``dip``, ``dip-tv``, ``csgm``, ``gan-d``).
"""
from .base import CheckpointMismatchError, DensityPrior, GenerativePrior, load_prior
from .dip import DIPResult, DIPTrace, Hourglass, WindowedVarianceStopping, fit_dip
from .flow import MultiScaleFlow, load_flow
from .gan import DCGANPrior, load_gan
from .tv import total_variation
from .vae import ConvVAE, load_vae

__all__ = [
    "GenerativePrior", "DensityPrior", "CheckpointMismatchError", "load_prior",
    "total_variation",
    "ConvVAE", "load_vae",
    "MultiScaleFlow", "load_flow",
    "DCGANPrior", "load_gan",
    "Hourglass", "fit_dip", "DIPTrace", "DIPResult", "WindowedVarianceStopping",
]
