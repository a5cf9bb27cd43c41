// What every lesson shares: the model it runs on, and what it says when that model's weights
// are synthetic.
//
// Every lesson runs on models/ldm-shapes by default (ldm.cpp's own small text-to-image model,
// trained on the captioned-shapes dataset: 64x64 pictures, 8x8x4 latents), found beside the
// executable as `ldm generate` finds it (ldm/default_model.hpp). `--model` takes SD1.5 (a
// diffusers folder or a single file) or synthetic:sd15: the real SD1.5 architecture filled with
// made-up numbers, where sizes, shapes and costs are real but every pattern is noise. Pictures
// made with synthetic weights carry a red band that says so, and the lesson's text says so too.
#pragma once
#include <algorithm>
#include <ostream>
#include <string>

#include "ldm/data/shapes.hpp"
#include "ldm/default_model.hpp"
#include "ldm/viz/canvas.hpp"

namespace ldm::lessons {

// --model as given, or the default model's folder for "".
inline std::string model_spec(const std::string& model) { return model.empty() ? default_model_path() : model; }

inline bool is_synthetic(const std::string& spec) { return spec.rfind("synthetic:", 0) == 0; }

inline constexpr const char* kSyntheticStamp = "synthetic weights: the pattern has no meaning";

// The line a lesson prints before anything it measured on synthetic weights.
inline void say_synthetic(std::ostream& out) {
  out << "NOTE: synthetic weights (" << kSyntheticStamp << "): the shapes, sizes, costs and arithmetic below are\n"
      << "real, but no picture or number that depends on trained weights means anything. Run without --model\n"
      << "(models/ldm-shapes) or with --model path/to/stable-diffusion-v1-5 for a trained model.\n";
}

// The picture as the lesson saves it: under a red band with kSyntheticStamp when `synthetic`.
inline viz::Canvas stamped(const viz::Canvas& c, bool synthetic) {
  if (!synthetic) return c;
  const int band = viz::Canvas::text_height() + 6;
  viz::Canvas r(std::max(c.width(), viz::Canvas::text_width(kSyntheticStamp) + 8), c.height() + band);
  r.fill_rect(0, 0, r.width(), band, viz::Color{200, 30, 30});
  r.text(4, 3, kSyntheticStamp, viz::kWhite);
  r.blit(c, 0, band);
  return r;
}

// One picture of the captioned-shapes dataset, drawn as the dataset draws it (without jitter, the
// side in the middle of its size's range). -> [1, 3, 64, 64] in [0, 1]; its full caption in
// *caption and its short label ("large red circle") in *label when given.
struct ShapePick {
  int background, colour, shape;  // indices into shapes::kBackgrounds, kColours, kShapeWords
  bool large;
  int position;  // index into shapes::kPositionWords
};
inline Tensor shape_picture(const ShapePick& p, std::string* caption = nullptr, std::string* label = nullptr) {
  using namespace shapes;
  Example e;
  e.spec.background = p.background, e.spec.colour = p.colour, e.spec.shape = p.shape, e.spec.large = p.large;
  e.spec.side_px = p.large ? (kLargeSide.lo + kLargeSide.hi) / 2 : (kSmallSide.lo + kSmallSide.hi) / 2;
  e.spec.position = p.position;
  const float half = 0.5f * float(e.spec.side_px);
  e.spec.cx = std::clamp(kGridCentres[p.position % 3], half, float(kImageSize) - half);
  e.spec.cy = std::clamp(kGridCentres[p.position / 3], half, float(kImageSize) - half);
  e.rgb.resize(kImageBytes);
  render(e.spec, e.rgb.data());
  if (caption) *caption = full_caption(e.spec);
  if (label) *label = std::string(kSizeWords[p.large]) + " " + kColours[p.colour].word + " " + kShapeWords[p.shape];
  Tensor x = to_vae_input({e});  // [-1, 1]
  x.vec().array() = (x.vec().array() + 1.0f) * 0.5f;
  return x;
}

}  // namespace ldm::lessons
