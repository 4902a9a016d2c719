"""GPU paths (CUDA / MPS): skipped cleanly on machines without one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2s_cli.config import ModelConfig
from c2s_cli.infer import denoise_array, pick_device
from c2s_cli.model import Precond

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


@pytest.mark.skipif(not (HAS_CUDA or HAS_MPS), reason="no GPU")
def test_gpu_matches_cpu(phantom: np.ndarray) -> None:
    torch.manual_seed(0)
    m = Precond(ModelConfig(channels=(8, 16), emb_dim=16)).eval()
    data = phantom * 1000 + 20
    cpu = denoise_array(m, data, 20.0, device=torch.device("cpu"))
    gpu = denoise_array(m, data, 20.0, device=pick_device("auto"))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-2)


def test_auto_device_and_refusals() -> None:
    dev = pick_device("auto")
    expected = "cuda" if HAS_CUDA else ("mps" if HAS_MPS else "cpu")  # auto prefers CUDA, then MPS, then the CPU
    assert dev.type == expected
    assert pick_device("cpu").type == "cpu"
    if not HAS_CUDA:
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda:0")
