#!/usr/bin/env bash
# Stage, on this machine, what scripts/gpu_check.sh needs on a lent GPU machine, which has PyTorch but no network:
# the wheels of c2s's dependencies that its image lacks (CPython 3.12, manylinux x86-64; the versions installed here)
# and the two volumes the GPU rows use. Everything goes to .gpu/ (git-ignored; ~15 MB), which the device tool's run
# carries:  scripts/gpu_prepare.sh ../shared/data
set -euo pipefail
src=${1:?usage: scripts/gpu_prepare.sh SHARED_DATA_DIR}
mkdir -p .gpu/whl .gpu/data/nifti
cp "$src/nifti/pycortex_s1_t1_1mm.nii.gz" "$src/nifti/mni152_2009a_t1_1mm.nii.gz" .gpu/data/nifti/
plat=()
for p in manylinux_2_{17,24,27,28,31,34,35}_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plat+=(--platform "$p")
done
for pkg in nibabel pydicom pynetdicom pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls; do
  ver=$(python3 -c "import importlib.metadata as m; print(m.version('$pkg'))" 2>/dev/null || true)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d .gpu/whl "$pkg${ver:+==$ver}"
done
ls -la .gpu/whl
