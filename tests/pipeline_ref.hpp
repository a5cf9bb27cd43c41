// Test helpers for the full-pipeline references (ref_pipeline_full, ref_pipeline_seeded),
// shared by the CPU test (test_pipeline.cpp) and the GPU one (test_cuda_pipeline.cpp).
//
// A case gives token ids, a scheduler, steps, guidance, size, the initial latents, and what
// diffusers produced: the latents after every step [S, 1, 4, h, w] and the image [1, H, W, 3].
// Tolerances (../shared/README.md):
//   fp32:       final latents relative L2 <= 1e-3, image max |diff| <= 4e-3
//   fp16/bf16:  relative L2 <= 2e-2 for the final latents and for the image
#pragma once
#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "ldm/pipeline.hpp"
#include "reference.hpp"

namespace ldm::test {

constexpr double kPipelineLatentTol = 1e-3, kPipelineImageMaxDiff = 4e-3;
constexpr double kReducedPrecisionTol = 2e-2;

// The four txt2img cases of ref_pipeline_full (10 steps, CFG 7.5, 256x256, given latents).
inline const std::vector<std::string>& pipeline_full_cases() {
  static const std::vector<std::string> names{"pipe_ddim", "pipe_pndm", "pipe_euler", "pipe_dpmpp_2m"};
  return names;
}

// The generation parameters of a ref_pipeline_full case.
inline GenerationParams pipeline_case_params(const Reference& ref, const std::string& name) {
  const auto& meta = ref.meta(name);
  GenerationParams p;
  p.prompt_ids = ref.file.load_i64(name + ".input_ids");
  p.negative_prompt_ids = ref.file.load_i64(name + ".negative_input_ids");
  p.scheduler = meta.at("scheduler").get<std::string>();  // diffusers class names are accepted
  p.steps = meta.at("steps").get<int>();
  p.guidance_scale = meta.at("guidance_scale").get<float>();
  p.width = meta.at("width").get<int>();
  p.height = meta.at("height").get<int>();
  p.init_latents = ref.get(name, "latents");
  return p;
}

// Prints the relative L2 of every step's latents (for the record; only the final ones are checked).
inline void print_step_errors(const std::string& name, const std::vector<Tensor>& step_latents, const Reference& ref) {
  Tensor steps = ref.get(name, "step_latents");
  REQUIRE(int64_t(step_latents.size()) == steps.dim(0));
  for (size_t i = 0; i < step_latents.size(); ++i) {
    Tensor s = steps.slice0(int64_t(i), int64_t(i) + 1).reshape(step_latents[i].shape());
    std::printf("    %s step %zu latents rel L2 %.3e\n", name.c_str(), i + 1, rel_l2(step_latents[i], s));
  }
}

// Final latents and image against the case; reduced_precision: the fp16/bf16 tolerance.
inline void check_pipeline_result(const std::string& name, const Tensor& latents, const Tensor& image,
                                  const Reference& ref, bool reduced_precision = false) {
  Tensor steps = ref.get(name, "step_latents");  // [S, 1, 4, h, w]
  const int64_t S = steps.dim(0);
  Tensor final_ref = steps.slice0(S - 1, S).reshape(latents.shape());
  Tensor img_ref = ref.get(name, "image");
  if (reduced_precision) {
    require_close(latents, final_ref, kReducedPrecisionTol, name + " final latents");
    require_close(image, img_ref, kReducedPrecisionTol, name + " image");
    return;
  }
  require_close(latents, final_ref, kPipelineLatentTol, name + " final latents");
  REQUIRE(image.shape() == img_ref.shape());
  const double d = max_abs_diff(image, img_ref);
  std::printf("  %-40s image max |diff| %.3e  (tol %.0e)\n", (name + " image").c_str(), d, kPipelineImageMaxDiff);
  CHECK(d <= kPipelineImageMaxDiff);
}

}  // namespace ldm::test
