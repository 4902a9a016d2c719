"""denoise extras: --preview, --mask, --noise-map, --adapt, the Python API, and the committed real DICOM series."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import c2s, psnr

REAL = Path(__file__).parent / "data" / "ge_pd_series"


def test_preview_mask_and_noise_map(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    from PIL import Image

    img = nib.load(str(noisy_nifti))
    m = np.zeros(img.shape, np.uint8)
    m[20:70, 20:70] = 1
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(m, img.affine), str(mask))
    out, nm, png = tmp_path / "o.nii.gz", tmp_path / "resid.nii.gz", tmp_path / "p.png"
    r = c2s("denoise", str(noisy_nifti), "-o", str(out), "--model", str(tiny_model), "--mask", str(mask),
            "--noise-map", str(nm), "--preview", str(png))
    assert r.returncode == 0, r.stderr
    src = np.asarray(img.dataobj, np.float32)
    den = np.asarray(nib.load(str(out)).dataobj)
    np.testing.assert_array_equal(den[m == 0], src[m == 0])
    assert np.any(den[m == 1] != src[m == 1])
    np.testing.assert_allclose(np.asarray(nib.load(str(nm)).dataobj), src - den, atol=1e-3)
    w, h = Image.open(png).size
    assert (w, h) == (3 * 192, 3 * 192 + 14)  # 96-pixel panels enlarged 2× to a readable size (issue 33)
    # outputs get the permissions of a plain open() (umask), not the 0600 of a temporary file
    mask_bits = os.umask(0)
    os.umask(mask_bits)
    for f in (out, nm, png):
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask_bits
    # a mask on another grid is refused with the tool to use
    nib.save(nib.Nifti1Image(m[:50], img.affine), str(tmp_path / "bad.nii.gz"))
    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "o2.nii.gz"), "--model", str(tiny_model),
            "--mask", str(tmp_path / "bad.nii.gz"))
    assert r.returncode == 4 and "antsApplyTransforms" in r.stderr


def test_python_api_and_adaptation(tiny_model: Path) -> None:
    from c2s_bench.phantoms import head_phantom, rician

    from c2s_cli import Denoiser

    clean = head_phantom((56, 56, 16), seed=4)
    noisy = rician(clean, 0.1, seed=9)
    den = Denoiser(str(tiny_model), "cpu")
    mask = clean > 0
    # the network alone (the self-similarity blend would lift the random-init network's output too)
    before = psnr(den.denoise(noisy, sigma=0.1, self_similarity=False), clean, mask)
    adapted = den.adapted(noisy, 150, sigma=0.1, lr=3e-3)  # random-init weights: a larger step size
    after = psnr(adapted.denoise(noisy, sigma=0.1, self_similarity=False), clean, mask)
    assert after > before + 1.0, (before, after)
    # the original denoiser is untouched by adaptation
    assert psnr(den.denoise(noisy, sigma=0.1, self_similarity=False), clean, mask) == pytest.approx(before, abs=1e-4)


def test_adapt_flag(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    """--adapt fine-tunes before denoising: the output differs from the same run without it, and the record says
    in which noise domain (here --no-vst) both ran."""
    outs = {}
    for steps in (0, 3):
        o = tmp_path / f"a{steps}.nii.gz"
        r = c2s("denoise", str(noisy_nifti), "-o", str(o), "--model", str(tiny_model), "--adapt", str(steps),
                "--no-vst", "--sigma", "40", "--json")
        assert r.returncode == 0, r.stderr
        rec = json.loads(r.stdout)
        assert rec["adapt_steps"] == steps and rec["noise"][0]["vst"] is False and rec["noise"][0]["sigma"] == 40
        assert ("adapt" in rec["seconds"]) == bool(steps)
        outs[steps] = np.asarray(nib.load(str(o)).dataobj)
    assert np.abs(outs[3] - outs[0]).max() > 1e-3


def test_adaptation_runs_in_the_inference_domain(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The --adapt bug: adaptation used the model's VST / coil settings while inference applied the user's. Now the
    training volume is built in the domain inference uses, and the adapted model records it."""
    import c2s_cli.loop
    from c2s_bench.phantoms import head_phantom, rician

    from c2s_cli import Denoiser
    from c2s_cli.noise.domain import NoiseDomain

    noisy = rician(head_phantom((40, 40, 16), seed=4) * 1000, 40.0, seed=9)
    den = Denoiser(str(tiny_model), "cpu")
    assert den.config.noise.vst is True  # the model's own setting is VST on
    seen = {}
    real = c2s_cli.loop.train

    def spy(cfg, volumes, *a, **k):  # type: ignore[no-untyped-def]
        seen["cfg"], seen["sigma_d"] = cfg, volumes[0].sigma_d
        return real(cfg, volumes, *a, **k)

    monkeypatch.setattr(c2s_cli.loop, "train", spy)
    adapted = den.adapted(noisy, 2, sigma=40.0, use_vst=False, coils=1)
    plain = NoiseDomain.fit(noisy, 40.0, use_vst=False)
    vst = NoiseDomain.fit(noisy, 40.0, use_vst=True)
    assert seen["cfg"].noise.vst is False and adapted.config.noise.vst is False
    assert seen["sigma_d"] == pytest.approx(plain.sigma_d) and seen["sigma_d"] != pytest.approx(vst.sigma_d)
    assert den.config.noise.vst is True  # the original is untouched


def test_real_ge_series_round_trip(tiny_model: Path, tmp_path: Path) -> None:
    r = c2s("info", str(REAL), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["shape"] == [256, 256, 20] and d["manufacturer"].startswith("GE")  # the whole series (issue 18)
    assert d["spacing"][2] == pytest.approx(7.0, abs=0.1)
    assert d["noise"]["sigma"] > 0
    out = tmp_path / "ge_c2s"
    r = c2s("denoise", str(REAL), "-o", str(out), "--model", str(tiny_model))
    assert r.returncode == 0, r.stderr
    mask_bits = os.umask(0)
    os.umask(mask_bits)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask_bits  # the series folder, not mkdtemp's 0700
    src = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p, stop_before_pixels=True) for p in REAL.iterdir()}
    assert len(list(out.iterdir())) == 20  # every instance, brain_001's extra large element included
    for p in out.iterdir():
        ds = pydicom.dcmread(p)
        s = src[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert ds.ImagePositionPatient == s.ImagePositionPatient and ds.StudyInstanceUID == s.StudyInstanceUID
        assert ds.SOPInstanceUID not in src
    # DICOM in, NIfTI out: same world geometry
    r = c2s("denoise", str(REAL), "-o", str(tmp_path / "ge.nii.gz"), "--model", str(tiny_model))
    assert r.returncode == 0, r.stderr
    a = nib.load(str(tmp_path / "ge.nii.gz"))
    assert int(a.header["sform_code"]) == 1
    np.testing.assert_allclose(a.affine, np.array(d["affine"]), atol=1e-3)


def test_model_load_failure_is_fatal_even_with_keep_going(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    """A model that cannot load ends a --keep-going batch at once, with its own exit code, before any input is read."""
    outdir = tmp_path / "outs"
    r = c2s("denoise", str(noisy_nifti), str(noisy_nifti), "-o", str(outdir), "--model", str(tiny_model),
            "--device", "bogus", "--keep-going")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "bogus" in r.stderr and "Traceback" not in r.stderr
    assert not any(outdir.glob("*.nii*"))
    # a wrong --model is refused in one line, nothing written
    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "o.nii.gz"), "--model", "nosuchmodel")
    assert r.returncode == 4 and r.stderr.count("\n") == 1 and "nosuchmodel" in r.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_tta_flag(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "t.nii.gz"), "--model", str(tiny_model), "--tta", "4",
            "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tta"] == 4
    plain = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "p.nii.gz"), "--model", str(tiny_model))
    assert plain.returncode == 0, plain.stderr
    a, b = (np.asarray(nib.load(str(tmp_path / f)).dataobj) for f in ("t.nii.gz", "p.nii.gz"))
    assert a.shape == b.shape and np.abs(a - b).max() > 0
    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "x.nii.gz"), "--model", str(tiny_model), "--tta", "3")
    assert r.returncode == 2 and "--tta" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "x.nii.gz").exists()


def test_planes_flag_is_the_mean_over_planes(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    """--planes axial,coronal,sagittal = the mean of the slice-wise results along each array axis (view aggregation),
    in image units, with one noise-domain fit shared by the planes."""
    from c2s_cli import Denoiser
    from c2s_cli.io import read_volume

    out = tmp_path / "v.nii.gz"
    r = c2s("denoise", str(noisy_nifti), "-o", str(out), "--model", str(tiny_model), "--sigma", "7",
            "--planes", "axial,coronal,sagittal", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["planes"] == ["axial", "coronal", "sagittal"]
    # the fixture has 2.5 mm slices of 0.9 mm pixels: warned (view aggregation lost quality at such anisotropy)
    assert "2.5 mm slices of 0.906 mm pixels" in r.stderr and "axial alone is safer" in r.stderr
    got = np.asarray(nib.load(str(out)).dataobj)
    vol, _ = read_volume(noisy_nifti)
    den = Denoiser(str(tiny_model), "cpu")
    a = vol.slice_axis
    per_axis = [den.denoise(vol.data, 7.0, slice_axis=ax) for ax in (a, *[b for b in range(3) if b != a])]
    assert min(np.abs(per_axis[0] - p).max() for p in per_axis[1:]) > 1e-2  # the planes do differ
    np.testing.assert_allclose(got, den.denoise(vol.data, 7.0, slice_axis=a, planes=("axial", "coronal", "sagittal")),
                               rtol=0, atol=1e-4)  # the CLI is the library
    np.testing.assert_allclose(got, (per_axis[0] + per_axis[1] + per_axis[2]) / 3, rtol=0, atol=1e-4)
    # one plane is the plain run; a repeated or unknown plane is refused before anything is read
    np.testing.assert_array_equal(den.denoise(vol.data, 7.0, planes=("coronal",), slice_axis=a), per_axis[1])
    iso = tmp_path / "iso.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nib.load(str(noisy_nifti)).dataobj), np.eye(4)), str(iso))
    r = c2s("denoise", str(iso), "-o", str(tmp_path / "i.nii.gz"), "--model", str(tiny_model), "--sigma", "7",
            "--planes", "axial,sagittal")
    assert r.returncode == 0 and "safer" not in r.stderr, r.stderr
    for bad in ("axial,axial", "oblique", ","):
        r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "x.nii.gz"), "--model", str(tiny_model),
                "--planes", bad)
        assert r.returncode == 2 and "--planes" in r.stderr and r.stderr.count("\n") == 1, (bad, r.stderr)
        assert not (tmp_path / "x.nii.gz").exists()


def test_self_similarity_flag(noisy_nifti: Path, tiny_model: Path, tmp_path: Path) -> None:
    """On by default for a plain model (the record gives SURE's weight); --no-self-similarity is the network alone,
    the library's ``self_similarity=False``."""
    from c2s_cli import Denoiser
    from c2s_cli.io import read_volume

    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "on.nii.gz"), "--model", str(tiny_model), "--json")
    assert r.returncode == 0, r.stderr
    fits = json.loads(r.stdout)["self_similarity"]
    assert len(fits) == 1 and 0.0 <= fits[0]["weight"] <= 0.5 and fits[0]["voxels"] > 0
    r = c2s("denoise", str(noisy_nifti), "-o", str(tmp_path / "off.nii.gz"), "--model", str(tiny_model), "--json",
            "--no-self-similarity")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["self_similarity"] is None
    on, off = (np.asarray(nib.load(str(tmp_path / f)).dataobj) for f in ("on.nii.gz", "off.nii.gz"))
    assert np.abs(on - off).max() > 0
    vol, _ = read_volume(noisy_nifti)
    np.testing.assert_allclose(off, Denoiser(str(tiny_model), "cpu").denoise(vol.data, self_similarity=False),
                               rtol=0, atol=1e-3)
