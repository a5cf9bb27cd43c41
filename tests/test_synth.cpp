// Synthetic weights must equal ../shared/reference/synth.py bit for bit: the diffusers
// references were computed on exactly those numbers.
#include <catch2/catch.hpp>

#include "ldm/core/synth.hpp"

using namespace ldm;

TEST_CASE("synth: FNV-1a seeds and unit values match synth.py __main__") {
  struct Fixed {
    const char* key;
    uint32_t seed;
    float v[4];
  };
  // Printed by `python3 ../shared/reference/synth.py`.
  const Fixed fixed[] = {
      {"conv_in.weight", 0xb1e79747u, {-0.14895164966583252f, -0.8013328313827515f, -0.9516334533691406f, 0.544966459274292f}},
      {"conv_in.bias", 0x918f4bc2u, {-0.9511289596557617f, 0.7465144395828247f, 0.6148529052734375f, -0.5487387180328369f}},
      {"norm1.weight", 0xa25013acu, {0.0694117546081543f, -0.6809123754501343f, 0.7885879278182983f, 0.20397496223449707f}},
      {"input.sample", 0x45f4c7ddu, {0.07976138591766357f, -0.9583250284194946f, -0.5434747934341431f, 0.2169264554977417f}},
  };
  for (const auto& f : fixed) {
    CHECK(synth::fnv1a32(f.key) == f.seed);
    Tensor t = synth::tensor(f.key, {4});
    for (int i = 0; i < 4; ++i) CHECK(t[i] == f.v[i]);
  }
  Tensor w = synth::param("conv_in.weight", {320, 4, 3, 3});
  CHECK(w[0] == -0.04299863800406456f);
  CHECK(w[1] == -0.23132485151290894f);
  CHECK(w[2] == -0.2747129201889038f);
}

TEST_CASE("synth: parameter rule (bias, norm gain, fan-in scale) matches Python values") {
  // Values computed with synth.param in Python for full-size SD1.5 / CLIP keys.
  Tensor conv = synth::param("down_blocks.0.resnets.0.conv1.weight", {320, 320, 3, 3});
  CHECK(conv[0] == -0.01796288602054119f);
  CHECK(conv[1] == -0.026493774726986885f);
  CHECK(conv[12345] == -0.004044183995574713f);
  CHECK(conv[921599] == -0.028805864974856377f);
  Tensor bias = synth::param("text_model.encoder.layers.3.mlp.fc1.bias", {3072});
  CHECK(bias[0] == -0.047940220683813095f);
  CHECK(bias[7] == -0.008644050918519497f);
  CHECK(bias[3071] == -0.049548204988241196f);
  Tensor gain = synth::param("mid_block.resnets.0.norm1.weight", {1280});
  CHECK(gain[0] == 0.9722273945808411f);
  CHECK(gain[5] == 1.0559370517730713f);
  CHECK(gain[1279] == 0.960972011089325f);
  Tensor x = synth::tensor("input.sched.x", {1, 4, 8, 8});
  CHECK(x[0] == 0.04986369609832764f);
  CHECK(x[255] == 0.09317624568939209f);
}
