#!/usr/bin/env bash
# Trains models/ldm-shapes from nothing with ldm.cpp's own training code, and prints the time
# it took:
#   1. the VAE (ldm train vae), its scaling_factor set from the trained encoder's latent std;
#   2. the U-Net and the CLIP text encoder jointly (ldm train unet), the VAE frozen;
#   3. the run's configs, tokenizer and fp16 weights copied into the model folder.
#
#   scripts/train_ldm_shapes.sh [RUN_DIR] [MODEL_DIR]     (defaults: runs/ldm-shapes, models/ldm-shapes)
#   REUSE_VAE=1 scripts/train_ldm_shapes.sh                 (the U-Net stage only, on the committed VAE)
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
resume=()
[[ -n ${RESUME:-} ]] && resume=(--resume)

start=$(date +%s)
if [[ -z ${RESUME:-} ]]; then
  rm -rf "$run"
  mkdir -p "$(dirname "$run")"
  cp -r configs/ldm-shapes "$run"
fi

# REUSE_VAE=1: start from the committed VAE (models/ldm-shapes/vae, trained by this script's first
# stage, PSNR 32.5 dB) and train only the U-Net and text encoder.
if [[ -n ${REUSE_VAE:-} && -z ${RESUME:-} ]]; then
  cp "$model/vae/config.json" "$model/vae/diffusion_pytorch_model.safetensors" "$run/vae/"
fi
if [[ ! -f $run/vae/diffusion_pytorch_model.safetensors ]]; then
  "$ldm" train vae --run "$run" --seed 1 --steps "${VAE_STEPS:-1500}" --batch 32 --lr 1e-3 --warmup 100 \
    --sample-every 250 --checkpoint-every 250 "${resume[@]}"
fi
vae_done=$(date +%s)

# Plain v-prediction MSE (no Min-SNR weighting, which gives the noisiest steps almost no weight)
# and 12x the weight on the noisiest quarter of the timesteps (80% of the examples): that is where the layout is
# decided from the caption alone, and where the position words are learnt (docs/training.md).
"$ldm" train unet --run "$run" --seed 2 --steps "${UNET_STEPS:-4500}" --batch 64 --lr 1e-3 --warmup 200 \
  --snr-gamma 0 --timestep-bias-strategy later --timestep-bias-portion 0.25 --timestep-bias-multiplier 12 \
  --sample-every 500 --checkpoint-every 500 "${resume[@]}"
end=$(date +%s)

mkdir -p "$model"
for part in unet vae text_encoder tokenizer scheduler; do
  rm -rf "${model:?}/$part"
  cp -r "$run/$part" "$model/$part"
done
cp "$run/model_index.json" "$model/"

echo "train_ldm_shapes: VAE $(( (vae_done - start) / 60 )) min $(( (vae_done - start) % 60 )) s," \
  "U-Net + text encoder $(( (end - vae_done) / 60 )) min $(( (end - vae_done) % 60 )) s," \
  "total $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s on $(lscpu | sed -n 's/^Model name: *//p')"
du -sh "$model"
