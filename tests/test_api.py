"""The library pipeline (``Denoiser.denoise_file``): checks before compute, the record, one noise domain."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import snapshot
from c2s_cli import DenoiseOptions, Denoiser
from c2s_cli.errors import InputError, OutputError, UsageError


@pytest.fixture
def den(tiny_model: Path) -> Denoiser:
    return Denoiser(str(tiny_model), "cpu")


def _no_compute(den: Denoiser, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the network ran")

    monkeypatch.setattr(den, "denoise", boom)
    monkeypatch.setattr(den, "adapted", boom)


def test_denoise_file_record(den: Denoiser, noisy_nifti: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.nii.gz"
    rec = den.denoise_file(noisy_nifti, out, DenoiseOptions(residual=tmp_path / "r.nii.gz"))
    assert rec["status"] == "ok" and rec["output"] == str(out) and rec["sha256"] == den.sha256
    assert rec["noise"][0]["method"] in ("background", "object") and rec["noise"][0]["vst"] is True
    assert {"read", "noise", "inference", "write", "total"} <= set(rec["seconds"])
    a = np.asarray(nib.load(str(out)).dataobj)
    r = np.asarray(nib.load(str(tmp_path / "r.nii.gz")).dataobj)
    src = np.asarray(nib.load(str(noisy_nifti)).dataobj, dtype=np.float32)
    np.testing.assert_allclose(src - a, r, atol=1e-3)  # the residual is input − output
    assert nib.load(str(out)).header["descrip"].item().startswith(b"c2s")


def test_failing_checks_cost_under_a_second_and_run_no_network(
    den: Denoiser, noisy_nifti: Path, dicom_series: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_compute(den, monkeypatch)
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"x")
    before = snapshot(tmp_path)
    cases = [
        (OutputError, noisy_nifti, existing, DenoiseOptions()),  # exists, no force
        (OutputError, noisy_nifti, existing, DenoiseOptions(force=True)),  # exists, not c2s's
        (UsageError, noisy_nifti, tmp_path / "o_series", DenoiseOptions()),  # NIfTI in, folder out
        (UsageError, noisy_nifti, tmp_path / "o.nii.gz", DenoiseOptions(tta=3)),
        (UsageError, noisy_nifti, tmp_path / "o.nii.gz", DenoiseOptions(sigma=-1.0)),
        (OutputError, noisy_nifti, tmp_path / "o.nii.gz", DenoiseOptions(residual=tmp_path / "o.nii.gz")),
        (UsageError, noisy_nifti, tmp_path / "o.nii.gz", DenoiseOptions(guides=(noisy_nifti,))),  # single-contrast
        (OutputError, dicom_series, dicom_series / "inside", DenoiseOptions()),
        (OutputError, noisy_nifti, tmp_path / "missing_dir" / "o.nii.gz", DenoiseOptions()),
    ]
    for exc, src, dst, opts in cases:
        t0 = time.perf_counter()
        with pytest.raises(exc) as info:
            den.denoise_file(src, dst, opts)
        assert time.perf_counter() - t0 < 1.0, (dst, opts)
        assert info.value.param is not None and "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


def test_dicom_dry_run_fails_before_compute(den: Denoiser, dicom_series: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A source whose derived copy cannot be encoded is refused by the dry run (one instance derived and encoded in
    memory), before the network runs: here pydicom cannot encode one element of it."""
    import c2s_cli.io.dicom_write as dicom

    real = dicom._derive

    def damaged(ds, *a, **k):  # type: ignore[no-untyped-def]
        clipped = real(ds, *a, **k)
        ds.add_new(0x00091001, "US", "not a number")  # an element whose value cannot be encoded as its VR
        return clipped

    monkeypatch.setattr(dicom, "_derive", damaged)
    _no_compute(den, monkeypatch)
    with pytest.raises(InputError, match="cannot write a derived copy"):
        den.denoise_file(dicom_series, tmp_path / "out", DenoiseOptions())
    assert not (tmp_path / "out").exists()


def test_derived_uids_are_deterministic(den: Denoiser, dicom_series: Path, tmp_path: Path) -> None:
    uids = []
    for name, opts in (("a", DenoiseOptions()), ("b", DenoiseOptions()), ("c", DenoiseOptions(strength=2.0))):
        den.denoise_file(dicom_series, tmp_path / name, opts)
        dss = [pydicom.dcmread(p) for p in sorted((tmp_path / name).glob("*.dcm"))]
        uids.append(({str(d.SeriesInstanceUID) for d in dss}, sorted(str(d.SOPInstanceUID) for d in dss)))
        assert all(str(d.file_meta.ImplementationClassUID) == "1.2.826.0.1.3680043.10.1437.1" for d in dss)
        assert all(str(d.SOPInstanceUID).startswith("2.25.") for d in dss)
    assert uids[0] == uids[1]  # same source, model and options: the same UIDs
    assert uids[2][0] != uids[0][0] and not set(uids[2][1]) & set(uids[0][1])  # other pixels: other UIDs
    assert len(uids[0][0]) == 1 and len(set(uids[0][1])) == len(uids[0][1])


def test_noise_domain_is_fitted_once_per_frame(den: Denoiser, noisy_nifti: Path, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """Planes and TTA share one fit: three planes × 2 TTA passes, one estimate (the noise policy computes it, the
    domain reuses it)."""
    import c2s_cli.noise.domain as domain
    import c2s_cli.noise.estimate as estimate
    import c2s_cli.noise.policy as policy

    calls = []
    real = estimate.estimate_noise
    for module in (domain, estimate, policy):
        monkeypatch.setattr(module, "estimate_noise", lambda *a, **k: calls.append(1) or real(*a, **k))
    rec = den.denoise_file(noisy_nifti, tmp_path / "o.nii.gz",
                           DenoiseOptions(planes=("axial", "coronal", "sagittal"), tta=2))
    assert len(calls) == 1 and len(rec["noise"]) == 1


def test_native_bf16_follows_an_isa_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN capped below its bf16 instruction sets (ONEDNN_MAX_CPU_ISA=AVX2, as c2s_bench.speed --isa avx2 runs the
    AVX2 code path) means fp32, whatever the CPU; a cap that keeps bf16 changes nothing."""
    import torch

    from c2s_cli.infer import native_bf16

    cpu = torch.device("cpu")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    native = native_bf16(cpu)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert native_bf16(cpu) is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert native_bf16(cpu) is native
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX512_CORE")
    assert native_bf16(cpu) is False


def test_precision(tiny_model: Path, phantom: np.ndarray) -> None:
    """auto picks bf16 exactly where the CPU runs it natively; bf16 stays close to fp32 and independent of the batch
    size within bf16's resolution; a bad value is a UsageError naming the parameter."""
    import torch

    from c2s_cli.infer import native_bf16
    from conftest import psnr
    from c2s_bench.phantoms import rician

    auto = Denoiser(str(tiny_model), "cpu")
    assert auto.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    assert auto.describe()["precision"] == auto.precision
    noisy = rician(phantom, 0.05, seed=11)[:, :, :6]
    fp32 = Denoiser(str(tiny_model), "cpu", precision="fp32").denoise(noisy)
    bf16 = Denoiser(str(tiny_model), "cpu", precision="bf16", batch_size=1)
    one = bf16.denoise(noisy)
    bf16.batch_size = 6
    many = bf16.denoise(noisy)
    clean = phantom[:, :, :6]
    assert abs(psnr(one, clean) - psnr(fp32, clean)) < 0.05
    assert np.max(np.abs(one - fp32)) < 0.02 * float(np.ptp(fp32))  # bf16 keeps 8 bits of mantissa
    assert np.max(np.abs(one - many)) < 0.01 * float(np.ptp(fp32))
    with pytest.raises(UsageError) as exc:
        Denoiser(str(tiny_model), "cpu", precision="fp16")
    assert exc.value.param == "precision"
