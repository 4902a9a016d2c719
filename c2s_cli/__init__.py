"""c2s: self-supervised MRI denoising with Corruption2Self (Tu, Shi & Lam, ICLR 2025).

Importing the package is cheap (no torch); the Python API is loaded on first use::

    from c2s_cli import Denoiser
    den = Denoiser(model="default", device="auto")
    out = den.denoise(volume_or_array)                      # arrays in, arrays out
    record = den.denoise_file(src_path, dst_path, DenoiseOptions())  # the pipeline behind `c2s denoise`
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from c2s_cli._version import __version__

if TYPE_CHECKING:
    from c2s_cli.api import Denoiser
    from c2s_cli.config import DenoiseOptions

__all__ = ["DenoiseOptions", "Denoiser", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Denoiser":
        from c2s_cli.api import Denoiser

        return Denoiser
    if name == "DenoiseOptions":
        from c2s_cli.config import DenoiseOptions

        return DenoiseOptions
    raise AttributeError(name)
