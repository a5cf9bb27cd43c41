// Lesson 8: latent arithmetic (course day 76, exercise 3).
//
// Word embeddings famously do "king - man + woman = queen". Does latent diffusion? The lesson
// asks "red circle - red square + blue square = blue circle?" in three spaces and lets the
// shapes analyser answer, over many cases:
//
//   pixels        x(red circle) - x(red square) + x(blue square), clamped to [0, 1]
//   VAE latents   decode(z(red circle) - z(red square) + z(blue square))
//   text          generate from c(red circle) - c(red square) + c(blue square), where c is the
//                 CLIP text encoder's output for the prompt (all 77 tokens), from several seeds
//
// beside the prompt "blue circle" itself (what a right answer looks like, and how often the
// model draws it anyway). The pictures of the first two are the dataset's own drawings at
// every position and both sizes; the text's are sampled.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "../lesson_common.hpp"
#include "ldm/core/checkpoint.hpp"
#include "ldm/core/image.hpp"
#include "ldm/core/rng.hpp"
#include "ldm/core/shared_dir.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "ldm/load.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/viz/colormap.hpp"

namespace ldm::lessons::latent_arithmetic {

struct Options {
  std::string model;  // "" = models/ldm-shapes; or a diffusers folder, a .safetensors file, synthetic:sd15
  std::string tokenizer;  // "" = the model's tokenizer/, else ../shared/clip-tokenizer
  // a - b + c, each "COLOUR SHAPE"; the answer the analogy asks for is the colour of c and the shape of a.
  std::string a = "red circle", b = "red square", c = "blue square";
  std::string background = "black";
  std::string where = "large", position = "center";  // the text's prompts: "a large red circle at the center on a ..."
  int seeds = 12;             // text arithmetic: pictures per prompt
  int steps = 0;              // 0 = the model's generation_defaults.json, else 20
  float guidance = 0;         // 0 = the model's recommendation, else 7.5
  uint64_t seed = 1;
  std::string out_dir = ".";  // where the pictures go ("" = none)
};

struct Space {
  std::string name, tag;  // "VAE latents", "latents"
  int cases = 0, right = 0;           // pictures read as the answer's colour and shape
  std::vector<std::string> reads;     // what the analyser read, per case
  std::vector<Tensor> pictures;       // [1, 3, 64, 64] in [0, 1], per case
};

struct Result {
  std::string answer;                // e.g. "blue circle"
  Space pixels, latents, text, text_control, text_a;  // text_control: the answer's own prompt; text_a: a's prompt
  double context_cosine = 0;    // between the arithmetic's text embedding and the answer's prompt's
  double text_vs_prompt = 0;    // mean |difference| of their pictures, same seeds, pixels in [0, 1]
  std::vector<std::string> pictures;
};

// "red circle" -> (colour, shape) indices of the shapes grammar.
inline std::pair<int, int> colour_shape(const std::string& words) {
  shapes::PartialSpec p;
  LDM_CHECK(shapes::parse_caption("a " + words, p) && p.colour != shapes::kUnsaid && p.size == shapes::kUnsaid &&
                p.position == shapes::kUnsaid && p.background == shapes::kUnsaid,
            "lesson 8: \"", words, "\" is not COLOUR SHAPE of the shapes dataset (e.g. \"red circle\")");
  return {p.colour, p.shape};
}

inline int background_index(const std::string& word) {
  for (int i = 0; i < shapes::kNumBackgrounds; ++i)
    if (word == shapes::kBackgrounds[i].word) return i;
  LDM_FAIL("lesson 8: unknown background \"", word, "\" (white, black or gray)");
}

inline bool reads_as(const Tensor& img, std::pair<int, int> want, std::string* read) {
  const shapes::Analysis an = shapes::analyse(shapes::picture_bytes(img).data());
  *read = an.found ? std::string(shapes::kColours[an.read.colour].word) + " " + shapes::kShapeWords[an.read.shape]
                   : "no shape";
  return an.found && an.read.colour == want.first && an.read.shape == want.second;
}

// a - b + c on tensors of one shape.
inline Tensor analogy(const Tensor& a, const Tensor& b, const Tensor& c) {
  Tensor r = Tensor::empty(a.shape());
  r.vec() = a.vec() - b.vec() + c.vec();
  return r;
}

inline Tensor to_signed(const Tensor& x) {  // [0, 1] -> [-1, 1]
  Tensor r = x.clone();
  r.vec().array() = r.vec().array() * 2.0f - 1.0f;
  return r;
}

inline std::string percent(int k, int n) {
  char b[64];
  std::snprintf(b, sizeof b, "%d of %d (%.0f%%)", k, n, n ? 100.0 * k / n : 0.0);
  return b;
}

// o.steps and o.guidance must be resolved.
inline Result run(const StableDiffusion& sd, bool synthetic, const Options& o, std::ostream& out) {
  const auto A = colour_shape(o.a), B = colour_shape(o.b), C = colour_shape(o.c);
  const std::pair<int, int> want{C.first, A.second};
  const int bg = background_index(o.background);
  for (const auto& cs : {A, B, C, want})
    LDM_CHECK(!(shapes::kColours[cs.first].rgb == shapes::kBackgrounds[bg].rgb), "lesson 8: a ",
              shapes::kColours[cs.first].word, " shape does not show on a ", o.background, " background");
  Result r;
  r.answer = std::string(shapes::kColours[want.first].word) + " " + shapes::kShapeWords[want.second];
  if (synthetic) say_synthetic(out);
  out << "\"" << o.a << "\" - \"" << o.b << "\" + \"" << o.c << "\" = \"" << r.answer << "\"?  (on a " << o.background
      << " background)\n\n";
  char line[256];

  // 1-2. Pixels and VAE latents: the dataset's own drawings at every position and both sizes.
  r.pixels.name = r.pixels.tag = "pixels", r.latents.name = "VAE latents", r.latents.tag = "latents";
  const double sf = sd.vae_config.scaling_factor;
  for (int large = 0; large < 2; ++large)
    for (int pos = 0; pos < shapes::kNumPositions; ++pos) {
      auto draw = [&](std::pair<int, int> cs) { return shape_picture({bg, cs.first, cs.second, large == 1, pos}); };
      const Tensor xa = draw(A), xb = draw(B), xc = draw(C);
      Tensor px = analogy(xa, xb, xc);
      for (float& v : px) v = std::clamp(v, 0.0f, 1.0f);
      auto encode = [&](const Tensor& x) {
        Tensor z = sd.runner->vae_encode(to_signed(x)).mean;
        z.vec() *= float(sf);
        return z;
      };
      const Tensor zx = analogy(encode(xa), encode(xb), encode(xc));
      const Tensor lx = nhwc_to_nchw(decode_latents(sd, zx));
      for (auto [space, img] : {std::pair<Space*, Tensor>{&r.pixels, px}, {&r.latents, lx}}) {
        std::string read;
        space->right += reads_as(img, want, &read);
        ++space->cases;
        space->reads.push_back(read);
        space->pictures.push_back(img);
      }
    }

  // 3. Text: the CLIP outputs' arithmetic, and the answer's own prompt, from the same seeds.
  auto context_of = [&](const std::string& words) {
    GenerationParams p;
    p.prompt = "a " + o.where + " " + words + " at the " + o.position + " on a " + o.background + " background";
    p.guidance_scale = o.guidance;
    return encode_prompt(sd, p);  // [2, 77, D] = [negative; prompt]
  };
  const Tensor ca = context_of(o.a), cb = context_of(o.b), cc = context_of(o.c), cw = context_of(r.answer);
  Tensor c_analogy = ca.clone();  // the negative half stays the empty prompt's
  const int64_t half = ca.numel() / 2;
  for (int64_t i = half; i < ca.numel(); ++i) c_analogy[i] = ca[i] - cb[i] + cc[i];
  r.text.name = "text embeddings", r.text.tag = "text";
  r.text_control.name = "the prompt \"" + r.answer + "\"", r.text_control.tag = "prompt";
  r.text_a.name = "the prompt \"" + o.a + "\"", r.text_a.tag = "prompt a";
  {
    double dot = 0, n1 = 0, n2 = 0;
    for (int64_t i = half; i < ca.numel(); ++i)
      dot += double(c_analogy[i]) * cw[i], n1 += double(c_analogy[i]) * c_analogy[i], n2 += double(cw[i]) * cw[i];
    r.context_cosine = dot / std::sqrt(n1 * n2);
  }
  for (auto [space, context] : {std::pair<Space*, const Tensor*>{&r.text, &c_analogy}, {&r.text_control, &cw}, {&r.text_a, &ca}}) {
    GenerationParams p;
    p.scheduler = "ddim", p.steps = o.steps, p.guidance_scale = o.guidance;
    p.width = p.height = shapes::kImageSize;
    p.batch = o.seeds;
    auto scheduler = make_scheduler(p.scheduler, sd.scheduler_config);
    auto gen = make_generator("ldm", o.seed);
    PreparedLatents start = prepare_latents(sd, p, *scheduler, *gen);
    Tensor ctx = Tensor::empty({2 * int64_t(o.seeds), context->dim(1), context->dim(2)});  // each half repeated per seed
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t s = 0; s < o.seeds; ++s)
        std::copy(context->data() + h * half, context->data() + (h + 1) * half, ctx.data() + (h * o.seeds + s) * half);
    const Tensor images = nhwc_to_nchw(decode_latents(sd, denoise(sd, p, *scheduler, ctx, std::move(start), *gen)));
    for (int s = 0; s < o.seeds; ++s) {
      const Tensor img = images.slice0(s, s + 1).clone();
      std::string read;
      space->right += reads_as(img, want, &read);
      ++space->cases;
      space->reads.push_back(read);
      space->pictures.push_back(img);
    }
  }

  for (int i = 0; i < o.seeds; ++i) {
    const Tensor& a = r.text.pictures[size_t(i)];
    const Tensor& b = r.text_control.pictures[size_t(i)];
    for (int64_t k = 0; k < a.numel(); ++k) r.text_vs_prompt += std::abs(a[k] - b[k]) / double(a.numel() * o.seeds);
  }
  out << "How often the analyser reads \"" << r.answer << "\":\n";
  for (const Space* s : {&r.pixels, &r.latents, &r.text, &r.text_control, &r.text_a}) {
    std::snprintf(line, sizeof line, "  %-32s %s", s->name.c_str(), percent(s->right, s->cases).c_str());
    out << line;
    // The most common reading, to say what it gives instead.
    std::string common;
    int most = 0;
    for (const std::string& x : s->reads) {
      const int k = int(std::count(s->reads.begin(), s->reads.end(), x));
      if (k > most) most = k, common = x;
    }
    out << "   most often read as \"" << common << "\" (" << most << ")\n";
  }
  out << "(pixels and VAE latents: the dataset's drawings at all 9 positions x 2 sizes; text: full captions \"a "
      << o.where << " ... at the " << o.position << " on a " << o.background << " background\", " << o.seeds << " seeds, "
      << o.steps << " DDIM steps, w = " << viz::format_number(o.guidance) << ")\n";
  std::snprintf(line, sizeof line,
                "The arithmetic's text embedding has cosine %.3f with the prompt \"%s\"'s own, and from the same seeds\n"
                "their pictures differ by %.3f on average (pixels in [0, 1]): it lands next to the answer.\n",
                r.context_cosine, r.answer.c_str(), r.text_vs_prompt);
  out << line;

  if (!o.out_dir.empty()) {
    std::filesystem::create_directories(o.out_dir);
    std::vector<viz::Canvas> tiles;
    std::vector<std::string> caps;
    const int shown = 6;
    for (const Space* s : {&r.pixels, &r.latents, &r.text, &r.text_control})
      for (int i = 0; i < shown && i < s->cases; ++i) {
        const int k = s == &r.pixels || s == &r.latents ? i * 3 : i;  // spread over the positions
        tiles.push_back(viz::picture(s->pictures[size_t(k)], 2));
        caps.push_back((i == 0 ? s->tag + ": " : std::string()) + s->reads[size_t(k)]);
      }
    r.pictures.push_back(o.out_dir + "/lesson08_arithmetic.png");
    viz::Canvas g = viz::grid(tiles, caps, shown);
    viz::Canvas sheet(g.width(), g.height() + 20);
    sheet.text(8, 6, "\"" + o.a + "\" - \"" + o.b + "\" + \"" + o.c + "\": rows pixels, VAE latents, text, and the prompt \"" +
                         r.answer + "\"", viz::kBlack);
    sheet.blit(g, 0, 20);
    stamped(sheet, synthetic).save(r.pictures.back());
    for (const auto& p : r.pictures) out << "Wrote " << p << "\n";
  }
  return r;
}

inline Result run(const Options& opts, std::ostream& out) {
  colour_shape(opts.a), colour_shape(opts.b), colour_shape(opts.c), background_index(opts.background);  // first
  const std::string spec = model_spec(opts.model);
  const ModelFiles files = open_model(spec);
  out << "Model: " << files.description << "\n";
  LoadOptions lo;
  lo.tokenizer_dir = !opts.tokenizer.empty()        ? opts.tokenizer
                     : !files.tokenizer_dir.empty() ? files.tokenizer_dir
                                                    : shared_path("clip-tokenizer");
  LDM_CHECK(vae_config(files).downscale_factor() * unet_config(files).sample_size == shapes::kImageSize,
            "lesson 8 asks the shapes analyser, which reads 64x64 pictures: it needs a model of 64x64 pictures such "
            "as models/ldm-shapes");  // before the model loads
  const StableDiffusion sd = load_stable_diffusion(files, lo);
  Options o = opts;
  const nlohmann::json& g = files.generation_defaults;
  if (o.steps == 0) o.steps = g.is_object() ? g.value("num_inference_steps", 20) : 20;
  if (o.guidance == 0) o.guidance = g.is_object() ? g.value("guidance_scale", 7.5f) : 7.5f;
  return run(sd, is_synthetic(spec), o, out);
}

}  // namespace ldm::lessons::latent_arithmetic
