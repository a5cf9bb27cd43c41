#!/usr/bin/env bash
# Prompt adherence of a shapes model (models/ldm-shapes by default), as the ldm-shapes issue
# measures it: N random full captions ("a small blue triangle at the bottom right on a gray
# background"), each drawn by `ldm generate` with its defaults for the model and a seed of its
# own, then read back by the shapes analyser (ldm dataset analyse): per-attribute accuracy and
# confusion tables. Also the VAE's reconstruction PSNR on 500 held-out pictures.
#
#   scripts/eval_ldm_shapes.sh [MODEL] [OUT] [N]     (defaults: models/ldm-shapes, runs/eval, 200)
#   EXTRA="--steps 30 --guidance 4" scripts/eval_ldm_shapes.sh     # other generation settings
#
# The captions come from `ldm dataset shapes --seed 777` (pictures not used in training: its
# seed differs from the training run's), so the figures are reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/ldm-shapes}
out=${2:-runs/eval}
count=${3:-200}
ldm=${LDM:-build/bin/ldm}
[[ -x $ldm ]] || { echo "no $ldm: build first (scripts/build.sh)" >&2; exit 1; }

rm -rf "$out"
"$ldm" dataset shapes --count "$count" --seed 777 --output "$out/prompts" >/dev/null
start=$(date +%s)
LDM=$ldm scripts/draw_captions.sh "$out/prompts/full_captions.txt" "$out/generated" "$model"
end=$(date +%s)
echo "eval: $count pictures in $((end - start)) s (generation settings: ldm generate defaults ${EXTRA:-})"

"$ldm" dataset analyse --input "$out/generated" --confusion-png "$out/confusion.png" --sheet-png "$out/sheet.png" \
  | tee "$out/report.txt"
if [[ -f $model/vae/config.json ]]; then
  # The VAE's PSNR: train vae --eval-only reads RUN/vae, which a model folder is.
  "$ldm" train vae --run "$model" --eval-only --eval-images 500 2>&1 | grep -E "PSNR|principal directions" | tee -a "$out/report.txt"
fi
