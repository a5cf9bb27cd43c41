// The GPU blocks, one header per family (the twins of include/ldm/blocks/):
//   cuda/conv_blocks.hpp       TimestepEmbedding, ResnetBlock2D, Downsample2D, Upsample2D
//   cuda/attention_blocks.hpp  Attention, VAEAttention, FeedForward (GEGLU), BasicTransformerBlock,
//                              Transformer2DModel
//   cuda/unet_blocks.hpp       UNetDownBlock, UNetMidBlock2DCrossAttn, UNetUpBlock
//   cuda/vae_blocks.hpp        DownEncoderBlock2D, UpDecoderBlock2D, UNetMidBlock2D
// Each GPU block has the CPU block's members (as GPU layers, cuda/modules.hpp) and is built
// from it: upload(const ldm::Block&, DType), or load(WeightStore&, prefix, <the CPU load's
// arguments>, DType), which loads the CPU block and uploads it.
#pragma once
#include "ldm/cuda/attention_blocks.hpp"
#include "ldm/cuda/conv_blocks.hpp"
#include "ldm/cuda/unet_blocks.hpp"
#include "ldm/cuda/vae_blocks.hpp"
