#!/usr/bin/env bash
# The GPU rows of issue 20, in one short run on a lent GPU machine (the device tool; about 5 minutes), from the
# repository root, after scripts/gpu_prepare.sh here:   run(command="bash scripts/gpu_check.sh", carry=[".gpu"])
# Results go to $OUT (what the device tool brings back; /tmp/c2s_gpu elsewhere), at most 8 files:
#   machine.txt (nvidia-smi, torch, bf16), pytest.log (the GPU tests and the model tests on CUDA),
#   unseen_gpu.json/.log (the unseen subject's default and high-quality rows, with times),
#   e2e_gpu.json (c2s denoise end to end on 256×256×176, default and high quality, 3 rounds each).
# A rehearsal on a CPU machine with c2s installed: SKIP_WHEELS=1 DEVICE=cpu LEVELS=0.10 ROUNDS=1 bash scripts/gpu_check.sh
set -uo pipefail
out=${OUT:-/tmp/c2s_gpu}
dev=${DEVICE:-cuda}
mkdir -p "$out"
if [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl || { echo "wheel install failed" >&2; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 DEVICE=$dev ROUNDS=${ROUNDS:-4}
{ nvidia-smi; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and
(torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported()))"; nproc; } > "$out/machine.txt" 2>&1
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_model.py > "$out/pytest.log" 2>&1
tail -3 "$out/pytest.log"
python3 -m c2s_bench.unseen --data .gpu/data --device "$dev" --levels "${LEVELS:-0.05,0.10,0.15}" --methods c2s,c2s-true,c2s-tta,c2s-planes,c2s-planes-tta \
  --json "$out/unseen_gpu.json" > "$out/unseen_gpu.log" 2>&1
grep -E "%  " "$out/unseen_gpu.log"
python3 - "$out" <<'PY'
import json, os, sys
from pathlib import Path
from c2s_bench.harness import run_header
from c2s_bench.speed import end_to_end, make_volume
out = Path(sys.argv[1])
inp = Path("/tmp/c2s_gpu_in.nii.gz")
make_volume(Path(".gpu/data"), inp, 176)
dev = os.environ["DEVICE"]
res = {**run_header(os.cpu_count() or 1), "device": dev, "shape": [256, 256, 176], "rounds": {}}
for name, extra in [("default", []), ("--planes axial,coronal,sagittal --tta 8",
                                      ["--planes", "axial,coronal,sagittal", "--tta", "8"])]:
    for r in range(int(os.environ["ROUNDS"])):  # the first round warms the GPU and the page cache
        rec = end_to_end(inp, Path("/tmp/c2s_gpu_out.nii.gz"), "default", os.cpu_count() or 1, extra, device=dev)
        res["rounds"].setdefault(name, []).append(rec)
        print(name, r, round(rec["wall_s"], 2), "s", flush=True)
(out / "e2e_gpu.json").write_text(json.dumps(res, indent=1))
PY
