#!/usr/bin/env bash
#SBATCH --job-name=c2s
#SBATCH --array=0-9
#SBATCH --cpus-per-task=4
#SBATCH --time=02:00:00
# Each array task denoises its tenth of the list; c2s reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT itself.
#   sbatch examples/slurm_array.sh inputs.txt /scratch/c2s_out
set -euo pipefail
c2s denoise "@$1" -o "$2" --skip-existing --keep-going --threads "${SLURM_CPUS_PER_TASK:-1}" \
  --report "$2/report_${SLURM_ARRAY_TASK_ID:-0}.jsonl"
