// Weight pages: float32 weights are views of mapped safetensors files, and the process lets the
// pages of weights it is not using go (SafeTensors::release_pages, release_file_pages): the
// values read back the same, the resident size drops, other memory is never touched, and the
// CPU runner lets go of the networks not in use (ldm/model_runner.hpp).
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>

#include "ldm/core/safetensors.hpp"
#include "ldm/core/weights.hpp"
#include "ldm/load.hpp"
#include "ldm/model_runner.hpp"
#include "ldm/nn/conv2d.hpp"
#include "tmp_path.hpp"

using namespace ldm;

namespace {

// The process's resident pages of mapped files, in MB (RssFile, plus RssShmem for a /tmp on tmpfs).
double mapped_rss_mb() {
  std::ifstream f("/proc/self/status");
  std::string key;
  double kb = 0, v;
  std::string unit;
  while (f >> key) {
    if (key == "RssFile:" || key == "RssShmem:") {
      f >> v >> unit;
      kb += v;
    }
  }
  return kb / 1024.0;
}

// A file with tensor "w" of n floats (value i % 1000 at i) and a small "b".
std::string write_weights(const test::TmpPath& path, int64_t n) {
  Tensor w = Tensor::empty({n});
  for (int64_t i = 0; i < n; ++i) w[i] = float(i % 1000);
  SafeTensorsWriter out;
  out.add("w", w);
  out.add("b", Tensor::full({3}, 2.0f));
  out.save(path);
  return path;
}

float max_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  float m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

double sum_of(const Tensor& t) {
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += t[i];
  return s;
}

}  // namespace

TEST_CASE("weight pages: a released tensor reads back the same, and its pages leave the resident size") {
  test::TmpPath path("pages.safetensors");
  const int64_t n = int64_t(16) << 20;  // 64 MB
  const SafeTensors file(write_weights(path, n));
  const Tensor w = file.view("w");
  const double expected = sum_of(w);  // touches every page
  const double touched = mapped_rss_mb();

  file.release_pages("w");
  const double released = mapped_rss_mb();
  std::printf("  mapped resident: %.0f MB touched, %.0f MB after release_pages(\"w\")\n", touched, released);
  CHECK(touched - released > 60.0);
  CHECK(sum_of(w) == expected);  // mapped back from the file
  CHECK(mapped_rss_mb() - released > 60.0);

  file.release_pages();  // the whole file
  CHECK(touched - mapped_rss_mb() > 60.0);
  CHECK(file.view("b")[2] == 2.0f);
  CHECK(sum_of(w) == expected);
}

TEST_CASE("weight pages: release_file_pages lets go of file views only, never of other memory") {
  test::TmpPath path("pages_views.safetensors");
  const int64_t n = int64_t(16) << 20;
  const SafeTensors file(write_weights(path, n));
  const Tensor w = file.view("w");
  const double expected = sum_of(w);

  // Heap memory with the same values: untouched (MADV_DONTNEED would zero it).
  const Tensor copy = w.clone();
  release_file_pages(copy.data(), size_t(n) * sizeof(float));
  CHECK(sum_of(copy) == expected);

  // A range running past the end of the mapping is not the file's: nothing happens.
  const double before = mapped_rss_mb();
  release_file_pages(w.data(), size_t(1) << 40);
  CHECK(before - mapped_rss_mb() < 8.0);

  release_file_pages(w.data(), size_t(n) * sizeof(float));
  CHECK(before - mapped_rss_mb() > 60.0);
  CHECK(sum_of(w) == expected);
}

TEST_CASE("weight pages: fp16 weights converted from a float32 file keep none of its pages") {
  test::TmpPath path("pages_fp16.safetensors");
  const int64_t n = int64_t(16) << 20;
  WeightStore store(std::make_shared<SafeTensorsSource>(write_weights(path, n)));
  const double before = mapped_rss_mb();
  const HalfTensor h = store.get_half("w", {n});
  std::printf("  mapped resident: %+.0f MB after converting 64 MB to fp16\n", mapped_rss_mb() - before);
  CHECK(mapped_rss_mb() - before < 8.0);
  CHECK(h.to_float()[999] == 999.0f);
}

TEST_CASE("weight pages: a Conv2d that keeps its Winograd transform lets its file weight go, same output") {
  const int64_t C = 64, O = 64;
  Tensor weight = Tensor::empty({O, C, 3, 3});
  for (int64_t i = 0; i < weight.numel(); ++i) weight[i] = float((i * 37) % 101 - 50) / 500.0f;
  test::TmpPath path("pages_conv.safetensors");
  SafeTensorsWriter out;
  out.add("conv.weight", weight);
  out.add("conv.bias", Tensor::full({O}, 0.5f));
  out.save(path);

  WeightStore w(std::make_shared<SafeTensorsSource>(path.path));
  Conv2d conv;
  conv.load(w, "conv", C, O, 3, 1, 1);
  w.finish();
  Tensor x = Tensor::empty({1, C, 32, 32});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = float(i % 13) / 13.0f;

  const Tensor expected = conv2d(x, weight, Tensor::full({O}, 0.5f), 1, Padding::same(1), ConvAlgo::f23);
  const Tensor first = conv.forward(x);  // makes the transform (F(2x2) at 32x32) and lets the weight's pages go
  REQUIRE(conv.winograd_u != nullptr);
  CHECK(max_diff(conv.forward(x), first) == 0.0f);
  CHECK(max_diff(first, expected) == 0.0f);
  CHECK(max_diff(conv.weight, weight) == 0.0f);  // the view reads the file's values back
}

TEST_CASE("weight pages: the CPU runner lets go of the networks it is not running, and of the U-Net's kept transforms") {
  // Counts release_pages calls; holds no file.
  struct CountingSource : SyntheticSource {
    mutable int releases = 0;
    void release_pages() const override { ++releases; }
  };
  const ModelFiles files = open_model("models/ldm-shapes");
  auto text = std::make_shared<CountingSource>(), unet = std::make_shared<CountingSource>(),
       vae = std::make_shared<CountingSource>();
  CpuModelRunner runner(load_text_encoder(files), load_unet(files), load_vae(files), WeightFiles{text, unet, vae});
  auto counts = [&] { return std::vector<int>{text->releases, unet->releases, vae->releases}; };

  const Tensor context = runner.encode_text(std::vector<int64_t>(77, 0), 1, 1);
  CHECK(counts() == std::vector<int>{0, 1, 1});
  const Tensor latent = Tensor::full({1, 4, 64, 64}, 0.1f);  // 64x64: the first level keeps an F(4x4) transform
  const Conv2d& conv = runner.unet_model().down_blocks[0].resnets[0].conv1;
  runner.unet(latent, 500.0f, context);
  CHECK(conv.winograd_u != nullptr);
  runner.unet(latent, 400.0f, context);  // the same network: nothing more
  CHECK(counts() == std::vector<int>{1, 1, 2});
  runner.vae_decode(latent);
  CHECK(conv.winograd_u == nullptr);  // the U-Net's kept transforms went with its pages
  runner.vae_encode(Tensor::full({1, 3, 64, 64}, 0.0f));
  CHECK(counts() == std::vector<int>{2, 2, 2});
  runner.unet(latent, 300.0f, context);
  CHECK(counts() == std::vector<int>{3, 2, 3});
}

TEST_CASE("weight pages: with free_idle_networks the CPU runner frees the networks it is not running and loads them "
          "again when called, same outputs") {
  LoadOptions o;
  o.fp16_weights = true;  // the networks' own memory: nothing the kernel could take back
  StableDiffusion kept = load_stable_diffusion("models/ldm-shapes", o);
  o.free_idle_networks = true;
  StableDiffusion freeing = load_stable_diffusion("models/ldm-shapes", o);
  auto* runner = dynamic_cast<CpuModelRunner*>(freeing.runner.get());
  REQUIRE(runner != nullptr);
  auto held = [&] {  // which networks are in memory: text encoder, U-Net, VAE
    return std::vector<bool>{!runner->text_encoder_model().encoder.layers.empty(), !runner->unet_model().down_blocks.empty(),
                             runner->vae_model().decoder.up_blocks.size() > 0};
  };
  CHECK(held() == std::vector<bool>{true, true, true});  // all loaded by load_stable_diffusion

  const std::vector<int64_t> ids(77, 0);
  const Tensor context = freeing.runner->encode_text(ids, 1, 1);
  CHECK(max_diff(context, kept.runner->encode_text(ids, 1, 1)) == 0.0f);
  const Tensor latent = Tensor::full({1, 4, 32, 32}, 0.1f);
  const Tensor eps = freeing.runner->unet(latent, 500.0f, context);
  CHECK(held() == std::vector<bool>{false, true, true});
  CHECK(max_diff(eps, kept.runner->unet(latent, 500.0f, context)) == 0.0f);
  const Tensor image = freeing.runner->vae_decode(latent);
  CHECK(held() == std::vector<bool>{false, false, true});
  CHECK(max_diff(image, kept.runner->vae_decode(latent)) == 0.0f);

  // Called again: loaded again from the files, as the first time.
  CHECK(max_diff(freeing.runner->unet(latent, 500.0f, context), eps) == 0.0f);
  CHECK(held() == std::vector<bool>{false, true, false});
  CHECK(max_diff(freeing.runner->encode_text(ids, 1, 1), context) == 0.0f);
  CHECK(held() == std::vector<bool>{true, false, false});
  CHECK(max_diff(freeing.runner->vae_decode(latent), image) == 0.0f);
  CHECK(held() == std::vector<bool>{false, false, true});
}
