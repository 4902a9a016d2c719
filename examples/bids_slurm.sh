#!/usr/bin/env bash
#SBATCH --job-name=c2s-bids
#SBATCH --array=0-9
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
# One participant per array task, as labs run fMRIPrep; then, once all tasks are done, the group report:
#   sbatch --array=0-$(( $(ls -d /data/bids/sub-* | wc -l) - 1 )) examples/bids_slurm.sh /data/bids /data/bids/derivatives/c2s
#   c2s bids /data/bids /data/bids/derivatives/c2s group        # c2s_group.tsv, c2s_group.json, c2s_report.html
# Re-submitting resumes: --skip-existing skips the files already denoised. Exit 3 = some files failed (see logs/).
set -euo pipefail
bids_dir=$1
out_dir=$2
mapfile -t subjects < <(find "$bids_dir" -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sort)
label=${subjects[${SLURM_ARRAY_TASK_ID:-0}]}
c2s bids "$bids_dir" "$out_dir" participant --participant-label "$label" --skip-existing \
  --threads "${SLURM_CPUS_PER_TASK:-1}"
