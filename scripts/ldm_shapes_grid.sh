#!/usr/bin/env bash
# The README's picture grid: 16 prompts drawn by `ldm generate` with its defaults for
# models/ldm-shapes (seed = the prompt's number), read back by the shapes analyser and laid out
# with their captions ("N ok": every part of the prompt read back; "N x": not).
#
#   scripts/ldm_shapes_grid.sh [MODEL] [OUT_PNG]   (defaults: models/ldm-shapes, docs/images/ldm_shapes_grid.png)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/ldm-shapes}
png=${2:-docs/images/ldm_shapes_grid.png}
ldm=${LDM:-build/bin/ldm}
[[ -x $ldm ]] || { echo "no $ldm: build first (scripts/build.sh)" >&2; exit 1; }

prompts=(
  "a large red circle at the top left on a black background"
  "a small blue square at the bottom right on a white background"
  "a large yellow triangle at the center on a gray background"
  "a small green circle at the top on a white background"
  "a large purple square at the left on a black background"
  "a small orange triangle at the bottom on a gray background"
  "a large white circle at the right on a gray background"
  "a small black square at the top right on a white background"
  "a large blue triangle at the bottom left on a white background"
  "a small red square at the center on a gray background"
  "a large green square at the top on a black background"
  "a small yellow circle at the bottom left on a black background"
  "a large orange circle at the bottom right on a white background"
  "a small purple triangle at the left on a white background"
  "a large black triangle at the top right on a gray background"
  "a small white square at the right on a black background"
)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in "${!prompts[@]}"; do printf '%s.png\t%s\n' "$i" "${prompts[$i]}"; done >"$dir/prompts.txt"
LDM=$ldm scripts/draw_captions.sh "$dir/prompts.txt" "$dir/pictures" "$model"
mkdir -p "$(dirname "$png")"
"$ldm" dataset analyse --input "$dir/pictures" --sheet-png "$png" --mismatches 16
