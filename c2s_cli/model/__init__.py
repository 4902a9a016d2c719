"""The denoiser network: backbone (``unet``) and preconditioning (``precond``)."""

from c2s_cli.model.precond import Precond
from c2s_cli.model.unet import UNet

__all__ = ["Precond", "UNet"]
