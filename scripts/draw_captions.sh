#!/usr/bin/env bash
# Draws every caption of a FILE<TAB>CAPTION list with `ldm generate` (its defaults for the model,
# seed = the line's number from 0), into OUT_DIR/FILE, and copies the list to
# OUT_DIR/full_captions.txt, so `ldm dataset analyse --input OUT_DIR` can score the pictures.
#
#   scripts/draw_captions.sh CAPTIONS OUT_DIR [MODEL]     (MODEL default: models/ldm-shapes)
#   EXTRA="--guidance 4" scripts/draw_captions.sh ...    # other generation settings
set -euo pipefail
cd "$(dirname "$0")/.."
captions=$1
out=$2
model=${3:-models/ldm-shapes}
ldm=${LDM:-build/bin/ldm}
[[ -x $ldm ]] || { echo "no $ldm: build first (scripts/build.sh)" >&2; exit 1; }

mkdir -p "$out"
: >"$out/full_captions.txt"
count=$(grep -c . "$captions")
i=0
while IFS=$'\t' read -r file caption; do
  [[ -n $file ]] || continue
  # shellcheck disable=SC2086
  "$ldm" generate --model "$model" --prompt "$caption" --seed "$i" --output "$out/$file" ${EXTRA:-} 2>/dev/null
  printf '%s\t%s\n' "$file" "$caption" >>"$out/full_captions.txt"
  i=$((i + 1))
  if (( i % 20 == 0 )); then echo "drew $i/$count" >&2; fi
done <"$captions"
