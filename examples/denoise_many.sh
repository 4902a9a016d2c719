#!/usr/bin/env bash
# Denoise every NIfTI under a folder with one model load, skipping finished ones, with a JSON Lines report.
#   examples/denoise_many.sh INPUT_DIR OUTPUT_DIR
set -euo pipefail
find "$1" -name '*.nii.gz' -not -name '*_c2s.nii.gz' | sort | \
  c2s denoise - -o "$2" --skip-existing --keep-going --report "$2/c2s_report.jsonl"
