// Which algorithm a 3x3 convolution runs: an explicit option of each Conv2d, set at load time
// (LoadOptions::conv, `ldm generate|eval --conv`), never a process-wide switch.
//
//   automatic  Winograd F(2x2, 3x3) where it fits, direct elsewhere; F(4x4, 3x3) only where
//              the layer's owner allows its 4x-sized transform (the U-Net's resnets and
//              upsamplers; the VAE decoder's layers of at least 128 channels), on images of
//              at least 16x16: kept from 64x64 up, made in each call below (detail::ConvShape::keep_u)
//   direct     never Winograd (the im2col GEMM): the reference to compare against
//   f23        F(2x2, 3x3) wherever it fits, never F(4x4)
//   f43        F(4x4, 3x3) wherever it fits, else F(2x2, 3x3) where that fits, else direct
//
// Where each one fits is decided in one place: detail::conv_shape (nn/conv2d.hpp).
#pragma once
#include <string>

#include "ldm/core/error.hpp"

namespace ldm {

enum class ConvAlgo { automatic, direct, f23, f43 };

inline const char* conv_algo_name(ConvAlgo a) {
  switch (a) {
    case ConvAlgo::automatic: return "auto";
    case ConvAlgo::direct: return "direct";
    case ConvAlgo::f23: return "f23";
    case ConvAlgo::f43: return "f43";
  }
  return "?";
}

// "auto" | "direct" | "f23" | "f43" (the names of the --conv flag).
inline ConvAlgo parse_conv_algo(const std::string& name) {
  for (ConvAlgo a : {ConvAlgo::automatic, ConvAlgo::direct, ConvAlgo::f23, ConvAlgo::f43})
    if (name == conv_algo_name(a)) return a;
  LDM_FAIL("unknown convolution algorithm '", name, "': expected auto, direct, f23 or f43");
}

}  // namespace ldm
