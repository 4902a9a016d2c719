#!/usr/bin/env bash
# Train on your own noisy scans with N processes (DDP; gloo on CPU, NCCL on GPUs). Rank 0 writes the model.
#   examples/train_torchrun.sh NOISY_DIR MODEL.safetensors [N]
set -euo pipefail
torchrun --nproc-per-node "${3:-2}" -m c2s_cli train "$1" -o "$2" --steps "${STEPS:-2000}" --planes axial,coronal,sagittal
