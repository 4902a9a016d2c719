"""How much does a non-local-means estimate hold that the network's output lacks? (issue 32, a diagnostic)

On the clean 2 mm reference of the unseen subject (``unseen.py --subject unseen-2mm``), the NL-means estimate of each
slice (:func:`c2s_cli.model.nonlocal_means.nonlocal_means`, searched in the slice and its two neighbours, true σ)
is blended linearly with the model's output, ``(1 − α)·out + α·NL``, for α on a grid, against the clean reference.
The best α is chosen **on the test subject** (an oracle): this is a bound on what the NL estimate adds to the
network's output, not a method — it motivated the non-local input channel (``ModelConfig.nonlocal_radius``), whose
trained result is in ``benchmarks/README.md``.

  python -m c2s_bench.nonlocal_probe --threads 2 [--model M] [--radii 2,3] [--subject mni-heldout]

``--subject mni-heldout``: the MNI template's held-out axial slab (a clean validation reference, not an unseen
subject), to tell whether the gain is the network's or the test subject's.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from c2s_bench.harness import add_row, head_mask, load_mni_heldout, metrics, parser, rician, run_header
from c2s_bench.unseen import load_2mm
from c2s_cli.api import Denoiser
from c2s_cli.config import PLANES
from c2s_cli.model.nonlocal_means import nonlocal_means

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def nl_volume(noisy: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """NL means of every axial slice of ``noisy`` (X, Y, Z) from itself and its two neighbours (edges repeated)."""
    z = noisy.shape[2]
    idx = np.clip(np.arange(z)[:, None] + np.arange(-1, 2)[None], 0, z - 1)
    x = torch.from_numpy(np.ascontiguousarray(noisy.transpose(2, 0, 1)))[torch.from_numpy(idx)]  # (Z, 3, X, Y)
    out = nonlocal_means(x, 1, torch.full((z,), float(sigma)), radius)
    return out[:, 0].permute(1, 2, 0).numpy()


def main() -> None:
    ap = parser(__doc__, "nonlocal_probe")
    ap.add_argument("--levels", default="0.05,0.10")
    ap.add_argument("--radii", default="2,3")
    ap.add_argument("--subject", choices=("unseen-2mm", "mni-heldout"), default="unseen-2mm")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = load_2mm(args.data)[0] if args.subject == "unseen-2mm" else load_mni_heldout(args.data)
    mask = head_mask(ref)
    den = Denoiser(args.model, "cpu", threads=args.threads)
    res: dict[str, object] = {**run_header(args.threads), "model": den.name, "subject": args.subject,
                              "alphas": list(ALPHAS), "rows": []}
    for i, level in enumerate(float(v) for v in args.levels.split(",")):
        noisy = rician(ref, level, seed=200 + i)  # the noise draws of unseen.py
        outs = {"one pass": den.denoise(noisy), "--planes": den.denoise(noisy, planes=PLANES)}
        for radius in (int(r) for r in args.radii.split(",")):
            t0 = time.perf_counter()
            nl = nl_volume(noisy, level, radius)
            dt = time.perf_counter() - t0
            row: dict[str, object] = {"level": level, "radius": radius, "nl_psnr": round(metrics(nl, ref, mask)[0], 2),
                                      "nl_seconds": round(dt, 1)}
            for name, out in outs.items():
                scores = [round(metrics((1 - a) * out + a * nl, ref, mask)[0], 3) for a in ALPHAS]
                row[name] = {"psnr_by_alpha": scores, "best_alpha": ALPHAS[int(np.argmax(scores))],
                             "gain_db": round(max(scores) - scores[0], 3)}
            add_row(res, row, args.json)


if __name__ == "__main__":
    main()
