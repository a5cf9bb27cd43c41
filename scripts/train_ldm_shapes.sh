#!/usr/bin/env bash
# Trains models/ldm-shapes from nothing with ldm.cpp's own training code, and prints the time
# it took:
#   1. the VAE (ldm train vae), its scaling_factor set from the trained encoder's latent std;
#   2. the U-Net and the CLIP text encoder jointly (ldm train unet), the VAE frozen;
#   3. both fine-tuned on the low noise levels (ldm train unet --init-from), where outlines are drawn;
#   4. the VAE's decoder fine-tuned, its encoder frozen (ldm train vae --decoder-only);
#   5. the run's configs, tokenizer, generation defaults and fp16 weights copied into the model folder.
#
#   scripts/train_ldm_shapes.sh [RUN_DIR] [MODEL_DIR]     (defaults: runs/ldm-shapes, models/ldm-shapes)
#   REUSE_VAE=1 scripts/train_ldm_shapes.sh                 (stage 2 only, on the committed VAE)
#
# Everything is seeded: the same machine gives the same weights. Progress, loss curves
# (RUN/train/*_loss.png) and sample grids (RUN/train/*_samples_*.png) appear as it runs;
# an interrupted run continues with RESUME=1 scripts/train_ldm_shapes.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/ldm-shapes}
model=${2:-models/ldm-shapes}
ldm=${LDM:-build/bin/ldm}
[[ -x $ldm ]] || { echo "no $ldm: build first (scripts/build.sh)" >&2; exit 1; }
# RESUME=1: each stage continues from its own checkpoint, where it has one.
resume() { [[ -n ${RESUME:-} && -f $run/train/$1_checkpoint.safetensors ]] && echo --resume || true; }

start=$(date +%s)
if [[ -z ${RESUME:-} ]]; then
  rm -rf "$run"
  mkdir -p "$(dirname "$run")"
  cp -r configs/ldm-shapes "$run"
fi

# REUSE_VAE=1: start from the committed VAE (models/ldm-shapes/vae, trained by this script's first
# and last stages) and train only the U-Net and text encoder.
if [[ -n ${REUSE_VAE:-} && -z ${RESUME:-} ]]; then
  cp "$model/vae/config.json" "$model/vae/diffusion_pytorch_model.safetensors" "$run/vae/"
fi
if [[ ! -f $run/vae/diffusion_pytorch_model.safetensors ]]; then
  # --isotropy-weight spreads the latents over three directions instead of one (docs/training.md):
  # the colours stop being points on one brightness line, and the U-Net tells them apart.
  # shellcheck disable=SC2046
  "$ldm" train vae --run "$run" --seed 1 --steps "${VAE_STEPS:-900}" --batch 32 --lr 1e-3 --warmup 100 \
    --isotropy-weight 1e-3 \
    --sample-every 250 --checkpoint-every 250 $(resume vae)
fi
vae_done=$(date +%s)

# Plain v-prediction MSE (no Min-SNR weighting, which gives the noisiest steps almost no weight)
# and 12x the weight on the noisiest quarter of the timesteps (80% of the examples): that is where the
# layout is decided from the caption alone, and where the position words are learnt (docs/training.md).
# shellcheck disable=SC2046
"$ldm" train unet --run "$run" --seed 2 --steps "${UNET_STEPS:-2600}" --batch 64 --lr 1e-3 --warmup 200 \
  --snr-gamma 0 --timestep-bias-strategy later --timestep-bias-portion 0.25 --timestep-bias-multiplier 12 \
  --sample-every 500 --checkpoint-every 500 $(resume unet)
unet_done=$(date +%s)

# The U-Net and text encoder fine-tuned with 77% of the examples at t < 400 (range bias 5x), where
# the outline of a small shape is decided: stage 2 gave those noise levels 6% of its examples, and
# drew small circles and squares as the same rounded square (docs/training.md).
# shellcheck disable=SC2046
"$ldm" train unet --run "$run" --init-from "$run" --seed 5 --steps "${FINETUNE_STEPS:-1800}" --batch 64 --lr 3e-4 \
  --warmup 50 --ema-decay 0.99 --snr-gamma 0 \
  --timestep-bias-strategy range --timestep-bias-begin 0 --timestep-bias-end 400 --timestep-bias-multiplier 5 \
  --sample-every 400 --checkpoint-every 400 $(resume unet_finetune)
finetune_done=$(date +%s)

# The VAE's decoder fine-tuned with its encoder frozen (as SD's ft-MSE decoder was): the latents the
# U-Net learnt do not change, and small shapes get their corners back (docs/training.md). (The
# committed VAE of REUSE_VAE=1 has had this stage already.)
if [[ -z ${REUSE_VAE:-} ]]; then
  # shellcheck disable=SC2046
  "$ldm" train vae --run "$run" --decoder-only --seed 3 --steps "${DECODER_STEPS:-1100}" --batch 32 --lr 3e-4 \
    --warmup 50 --sample-every 275 --checkpoint-every 275 $(resume vae_decoder)
fi
end=$(date +%s)

mkdir -p "$model"
for part in unet vae text_encoder tokenizer scheduler; do
  rm -rf "${model:?}/$part"
  cp -r "$run/$part" "$model/$part"
done
cp "$run/model_index.json" configs/ldm-shapes/generation_defaults.json "$model/"

minutes() { echo "$(( $1 / 60 )) min $(( $1 % 60 )) s"; }
echo "train_ldm_shapes: VAE $(minutes $((vae_done - start))), U-Net + text encoder $(minutes $((unet_done - vae_done)))," \
  "low-noise fine-tune $(minutes $((finetune_done - unet_done)))," \
  "VAE decoder $(minutes $((end - finetune_done))), total $(minutes $((end - start)))" \
  "on $(lscpu | sed -n 's/^Model name: *//p')"
du -sh "$model"
