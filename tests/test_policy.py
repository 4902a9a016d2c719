"""The one noise policy (c2s_cli.noise.policy): do no harm, one answer for arrays and files, plain words."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import c2s
from c2s_bench.phantoms import inplane_centre_high, smooth_phantom
from c2s_cli.errors import InputError, UsageError
from c2s_cli.noise.estimate import estimate_noise
from c2s_cli.noise.policy import MAP_OVER_BACKGROUND, NoiseSpec, choose, fit
from c2s_cli.noise.synth import rician


def example4d() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nibabel's two real fMRI time points (a real repeat pair, background masked to zero) and the affine."""
    img = nib.load(os.path.join(os.path.dirname(nib.__file__), "tests", "data", "example4d.nii.gz"))
    a = np.asarray(img.dataobj, np.float32)
    return a[..., 0], a[..., 1], img.affine


def textured(seed: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """A phantom whose object carries fixed fine texture 3× as strong as the noise (std 90 over noise 30 everywhere):
    what single-volume estimators cannot tell from noise (low-resolution EPI). Returns (noisy, noise-free)."""
    clean = smooth_phantom(seed=seed)
    rng = np.random.default_rng(seed)
    texture = np.where(clean > 0, rng.normal(0, 90.0, clean.shape), 0).astype(np.float32)
    anatomy = np.maximum(clean + texture, 0).astype(np.float32)
    return rician(anatomy, 30.0, rng), anatomy


def test_texture_posing_as_noise_keeps_the_background_sigma() -> None:
    """The object reads ~3× the background even where it is lowest: the map is not trusted, the background's σ is
    kept (it removes no anatomy), said in one line that names the way to force the map."""
    noisy, _ = textured()
    whole = estimate_noise(noisy)
    assert whole.sigma_background == pytest.approx(30.0, rel=0.1)
    choice = choose(noisy, whole)
    assert choice.sigma is None and choice.sigma_map is None and choice.source == "background (map not trusted)"
    assert choice.estimate is not None and choice.estimate.low > MAP_OVER_BACKGROUND * whole.sigma_background
    assert "removes no anatomy" in (choice.says or "") and "--sigma-map auto" in (choice.says or "")
    nf = fit(noisy, NoiseSpec())
    assert nf.domains[0].sigma == pytest.approx(whole.sigma_background) and nf.uses == "whole-scan σ"
    assert nf.domains[0].method == "background (map not trusted)" and nf.warnings[0] == choice.says


def test_real_g_factor_like_noise_still_gets_its_map() -> None:
    """Centre-high noise (30 at the edge, 75 at the centre) meets the background at its quiet end: the map is
    trusted and used per voxel (the rule does not cost the spatially varying case its gain)."""
    clean = smooth_phantom()
    noisy = rician(clean, inplane_centre_high(clean.shape), np.random.default_rng(12))
    nf = fit(noisy, NoiseSpec())
    assert nf.uses == "map" and nf.domains[0].method == "map (estimated)"
    assert nf.estimates[0]["used"] == "map" and "parallel imaging" in nf.reason


def test_masked_scan_whose_estimators_disagree_is_refused_before_compute() -> None:
    """A real fMRI volume, background masked to zero: the wavelet and patch estimates inside the object disagree
    (texture and correlated noise pose as noise), so no σ in the scan can be trusted: one line naming sigma."""
    a, _, _ = example4d()
    with pytest.raises(InputError) as exc:
        fit(a, NoiseSpec(), name="ex4d.nii.gz")
    assert exc.value.param == "sigma" and "ex4d.nii.gz" in str(exc.value) and "\n" not in str(exc.value)
    assert "background is masked" in str(exc.value)
    assert fit(a, NoiseSpec(sigma=5.0)).domains[0].method == "user"  # a given σ is always used
    assert fit(a, NoiseSpec(mode="none")).domains[0].method == "object"  # --sigma-map none: as asked


def test_default_never_scores_below_the_untouched_input_on_the_real_pair(tmp_path: Path) -> None:
    """Do no harm on a real repeat pair (the shipped model): denoise t0 and score against t1, inside the object.
    The default either refuses (the input stays as it is) or scores ≥ the untouched input − 0.05 dB; the
    whole-scan σ the policy refuses to guess from would have cost more than 1 dB."""
    from c2s_cli.api import Denoiser

    a, b, _ = example4d()
    mask = (a > 0) & (b > 0)
    mask &= b > 0.1 * float(np.percentile(b[mask], 99.5))
    peak = float(np.percentile(b[mask], 99.5))

    def score(x: np.ndarray) -> float:
        return float(10 * np.log10(peak**2 / np.mean((x[mask] - b[mask]) ** 2)))

    den = Denoiser("default", "cpu")
    try:
        out = den.denoise(a)
    except InputError:
        out = a
    assert score(out) >= score(a) - 0.05
    assert score(den.denoise(a, noise="none")) < score(a) - 1.0  # what the policy avoids


def test_array_and_file_apis_agree(tmp_path: Path, tiny_model: Path) -> None:
    """The same data through ``Denoiser.denoise`` (arrays) and ``denoise_file`` (a float32 NIfTI): the same noise
    choice (here settled by a σ-map estimate: centre-high noise) and the same voxels."""
    from c2s_cli.api import Denoiser, DenoiseReport
    from c2s_cli.config import DenoiseOptions

    clean = smooth_phantom((96, 96, 24))
    noisy = rician(clean, inplane_centre_high(clean.shape) * 0.6, np.random.default_rng(3))
    src = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(noisy, np.eye(4)), str(src))
    den = Denoiser(tiny_model, "cpu")
    rep = DenoiseReport()
    arr = den.denoise(noisy, report=rep)
    rec = den.denoise_file(src, tmp_path / "o.nii.gz", DenoiseOptions())
    from_file = np.asarray(nib.load(str(tmp_path / "o.nii.gz")).dataobj)
    assert rep.fit is not None and rec["noise"][0]["method"] == rep.domains[0].method
    assert rec["noise"][0]["sigma"] == pytest.approx(rep.domains[0].sigma, rel=1e-6)
    assert rep.domains[0].method in ("map (estimated)", "object (σ-map blocks)")  # the policy's map estimate decided
    np.testing.assert_allclose(from_file, arr, rtol=0, atol=1e-4 * float(arr.max()))


def test_spec_contradictions_are_usage_errors_naming_the_parameter() -> None:
    v = np.ones((8, 8, 8), np.float32)
    for spec, param in ((NoiseSpec(sigma=-1.0), "sigma"), (NoiseSpec(sigma=1.0, sigma_map=v), "sigma"),
                        (NoiseSpec(mode="auto", sigma=1.0), "sigma_map"), (NoiseSpec(mode="guess"), "sigma_map")):
        with pytest.raises(UsageError) as exc:
            fit(v, spec)
        assert exc.value.param == param


def test_info_says_which_sigma_and_why(tmp_path: Path) -> None:
    """`c2s info` gives, in words, what `c2s denoise` will use: the agreeing background on white noise; the refusal
    on the masked real fMRI volume."""
    p = tmp_path / "white.nii.gz"
    nib.save(nib.Nifti1Image(rician(smooth_phantom(), 50.0, np.random.default_rng(11)), np.eye(4)), str(p))
    noise = json.loads(c2s("info", str(p), "--json").stdout)["noise"]
    assert noise["c2s_denoise_uses"] == "whole-scan σ" and "agrees with the noise inside" in noise["reason"]
    r = c2s("info", str(p))
    assert "from background" in r.stdout and "c2s denoise uses σ" in r.stdout and "))" not in r.stdout
    a, _, aff = example4d()
    q = tmp_path / "ex4d.nii.gz"
    nib.save(nib.Nifti1Image(a, aff), str(q))
    r = c2s("info", str(q))
    assert r.returncode == 0 and "c2s denoise refuses" in r.stdout
    r = c2s("denoise", str(q), "-o", str(tmp_path / "o.nii.gz"))
    assert r.returncode == 4 and "background is masked" in r.stderr and not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize(("mppca", "outcome"), [(50.0, "agree"), (42.0, "lower"), (35.0, "refuse")])
def test_without_a_background_the_estimators_decide_by_how_far_apart_they_are(
        mppca: float, outcome: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Masked background, wavelet 50: MP-PCA within 1.1× → the whole-scan σ; lower by up to 0.75× → one σ, the
    lower, said in one line; lower still → refused (the rule's three branches, with the estimates fixed)."""
    import c2s_cli.noise.policy as policy
    from c2s_cli.noise.estimate import NoiseEstimate
    from c2s_cli.noise.sigma_map import SigmaMapEstimate

    whole = NoiseEstimate(sigma=50.0, method="object", sigma_object=50.0, background_status="unavailable: masked")
    est = SigmaMapEstimate(np.full((8, 8, 8), mppca, np.float32), False, 1.0, 20, np.full(20, mppca), low=mppca)
    monkeypatch.setattr(policy, "estimate_sigma_map", lambda *a, **k: est)
    v = np.ones((8, 8, 8), np.float32)
    if outcome == "refuse":
        with pytest.raises(InputError):
            choose(v, whole)
        return
    c = choose(v, whole)
    if outcome == "agree":
        assert c.sigma is None and c.sigma_map is None and c.says is None
    else:
        assert c.sigma == pytest.approx(42.0) and "the lower" in (c.says or "") and c.source.startswith("object")
