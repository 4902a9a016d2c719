"""c2s_bench.unseen's summary over noise draws: each method paired with BM4D on the same draw (issue 32's targets are
judged on the mean paired difference)."""

from __future__ import annotations

import math

import pytest

from c2s_bench.unseen import paired_summary


def _row(level: float, method: str, draw: int, psnr: float, ssim: float) -> dict[str, object]:
    return {"level": level, "method": method, "draw": draw, "psnr_full": psnr, "ssim_full": ssim}


def test_paired_summary_means_and_standard_errors() -> None:
    rows = []
    for d, (bm, c2s) in enumerate([((29.0, 0.950), (29.5, 0.949)), ((29.2, 0.952), (29.6, 0.952)),
                                   ((29.1, 0.951), (29.7, 0.948))]):
        rows += [_row(0.05, "BM4D (true σ)", d, *bm), _row(0.05, "c2s default", d, *c2s)]
    rows.append(_row(0.10, "c2s default", 0, 25.0, 0.9))  # no BM4D row at this level: no pairing
    out = {(r["level"], r["method"]): r for r in paired_summary(rows)}
    c = out[(0.05, "c2s default")]
    assert c["draws"] == 3
    assert c["psnr_mean"] == pytest.approx(29.6)
    assert c["ssim_mean"] == pytest.approx((0.949 + 0.952 + 0.948) / 3)
    assert c["psnr_diff_mean"] == pytest.approx(0.5)
    assert c["psnr_diff_se"] == pytest.approx(0.1 / math.sqrt(3))  # sample std of (0.5, 0.4, 0.6) is 0.1
    assert c["ssim_diff_mean"] == pytest.approx((-0.001 + 0.0 - 0.003) / 3)
    b = out[(0.05, "BM4D (true σ)")]
    assert b["psnr_diff_mean"] == 0.0 and b["ssim_diff_se"] == 0.0
    assert math.isnan(out[(0.10, "c2s default")]["psnr_diff_mean"])
