// Samplers against diffusers (../shared/reference/ref_schedulers.safetensors): timesteps,
// sigmas and init_noise_sigma for 1, 4, 10, 25, 50 steps, the 10-step trajectories of the
// stand-in model eps = 0.8 * xin + 0.1 * cos(0.01 t), and the DDPM training schedule.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "ldm/core/synth.hpp"
#include "ldm/schedulers/scheduler.hpp"
#include "reference.hpp"

using namespace ldm;

namespace {

constexpr double kScheduleTol = 1e-5;  // ../shared/README.md: schedules and trajectories
const char* kFile = "ref_schedulers.safetensors";

Tensor as_tensor(const std::vector<double>& v) {
  Tensor t = Tensor::empty({int64_t(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t[int64_t(i)] = float(v[i]);
  return t;
}

// The SD1.5 config of the reference with a case's overrides on top.
SchedulerConfig case_config(const test::Reference& ref, const std::string& name) {
  const SchedulerConfig sd15 = SchedulerConfig::from_json(ref.meta("ddpm_schedule").at("config"));
  return SchedulerConfig::from_json(ref.meta(name).at("config_overrides"), sd15);
}

std::vector<std::string> sampler_cases(const test::Reference& ref) {
  std::vector<std::string> names;
  for (const auto& [name, meta] : ref.cases.items())
    if (meta.contains("class")) names.push_back(name);
  return names;
}

// Replays a given noise tensor (for comparing stochastic steps on equal noise).
struct FixedNoise : Generator {
  using Generator::randn;
  Tensor noise;
  void randn(float* out, int64_t n) override {
    REQUIRE(n == noise.numel());
    std::copy(noise.begin(), noise.end(), out);
  }
};

// A small deterministic normal generator (Box-Muller on an LCG) for smoke runs.
struct TestNormal : Generator {
  using Generator::randn;
  uint64_t state = 12345;
  double uniform() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (double(state >> 11) + 0.5) / 9007199254740992.0;
  }
  void randn(float* out, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) out[i] = float(std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform()));
  }
};

}  // namespace

TEST_CASE("schedulers: DDPM training schedule and add_noise") {
  LDM_REQUIRE_REFERENCE(path, kFile);
  test::Reference ref(path);
  const auto& meta = ref.meta("ddpm_schedule");
  auto s = make_scheduler("ddpm", SchedulerConfig::from_json(meta.at("config")));
  const NoiseSchedule& ns = s->schedule();
  Tensor betas = Tensor::empty({ns.size()}), acp = Tensor::empty({ns.size()});
  for (int i = 0; i < ns.size(); ++i) betas[i] = ns.betas(i), acp[i] = ns.alphas_cumprod(i);
  test::require_close(betas, ref.get("ddpm_schedule", "betas"), kScheduleTol, "ddpm_schedule.betas");
  test::require_close(acp, ref.get("ddpm_schedule", "alphas_cumprod"), kScheduleTol, "ddpm_schedule.alphas_cumprod");

  const Tensor original = ref.get("ddpm_schedule", "original"), noise = ref.get("ddpm_schedule", "noise");
  const Tensor noisy_ref = ref.get("ddpm_schedule", "noisy");  // [4, 4, 8, 8], one timestep per batch entry
  const auto ts = meta.at("add_noise_timesteps").get<std::vector<int>>();
  for (size_t b = 0; b < ts.size(); ++b) {
    Tensor got = s->add_noise(original, noise, ts[b]);
    test::require_close(got, noisy_ref.slice0(int64_t(b), int64_t(b) + 1), kScheduleTol,
                        "ddpm_schedule.noisy t=" + std::to_string(ts[b]));
  }
}

TEST_CASE("schedulers: timesteps, sigmas and init_noise_sigma for 1, 4, 10, 25, 50 steps") {
  LDM_REQUIRE_REFERENCE(path, kFile);
  test::Reference ref(path);
  for (const std::string& name : sampler_cases(ref)) {
    const auto& meta = ref.meta(name);
    auto s = make_scheduler(meta.at("class").get<std::string>(), case_config(ref, name));
    for (int n : {1, 4, 10, 25, 50}) {
      INFO(name << " with " << n << " steps");
      s->set_timesteps(n);
      const std::string key = "_" + std::to_string(n);
      test::require_close(as_tensor(s->timesteps()), ref.get(name, "timesteps" + key), kScheduleTol,
                          name + ".timesteps" + key);
      if (ref.file.contains(name + ".sigmas" + key))
        test::require_close(as_tensor(s->sigmas()), ref.get(name, "sigmas" + key), kScheduleTol, name + ".sigmas" + key);
      const double want = meta.at("steps").at(std::to_string(n)).at("init_noise_sigma").get<double>();
      CHECK(std::fabs(s->init_noise_sigma() - want) <= kScheduleTol * want);
    }
  }
}

TEST_CASE("schedulers: 10-step trajectories of the stand-in model") {
  LDM_REQUIRE_REFERENCE(path, kFile);
  test::Reference ref(path);
  for (const std::string& name : sampler_cases(ref)) {
    if (!ref.file.contains(name + ".trajectory_10")) continue;  // Euler a: noise drawn, schedule only
    INFO(name);
    auto s = make_scheduler(ref.meta(name).at("class").get<std::string>(), case_config(ref, name));
    s->set_timesteps(10);
    const Tensor traj_ref = ref.get(name, "trajectory_10");   // [steps + 1, 1, 4, 8, 8]
    const Tensor input_ref = ref.get(name, "model_input_10");  // [steps, 1, 4, 8, 8]
    const int64_t steps = int64_t(s->timesteps().size());
    REQUIRE(traj_ref.dim(0) == steps + 1);

    Tensor x = synth::tensor("input.sched.x", {1, 4, 8, 8});
    for (float& v : x) v = float(double(v) * s->init_noise_sigma());
    Tensor traj = Tensor::empty(traj_ref.shape()), inputs = Tensor::empty(input_ref.shape());
    std::copy(x.begin(), x.end(), traj.slice0(0, 1).begin());
    double worst = 0;
    for (int64_t k = 0; k < steps; ++k) {
      const double t = s->timesteps()[size_t(k)];
      Tensor xin = s->scale_model_input(x, t);
      Tensor eps = Tensor::empty(xin.shape());
      for (int64_t i = 0; i < eps.numel(); ++i) eps[i] = float(0.8 * xin[i] + 0.1 * std::cos(0.01 * t));
      x = s->step(eps, t, x);
      std::copy(xin.begin(), xin.end(), inputs.slice0(k, k + 1).begin());
      std::copy(x.begin(), x.end(), traj.slice0(k + 1, k + 2).begin());
      worst = std::max(worst, test::rel_l2(x, traj_ref.slice0(k + 1, k + 2)));
    }
    test::require_close(inputs, input_ref, kScheduleTol, name + ".model_input_10");
    test::require_close(traj, traj_ref, kScheduleTol, name + ".trajectory_10");
    std::printf("  %-40s worst single step rel L2 %.3e\n", (name + ".trajectory_10").c_str(), worst);
    CHECK(worst <= kScheduleTol);
  }
}

TEST_CASE("schedulers: DDIM with eta 1 is DDPM's posterior on the same schedule and noise") {
  SchedulerConfig c;
  DDIMScheduler ddim(c, /*eta=*/1.0);
  DDPMScheduler ddpm(c);
  ddim.set_timesteps(10);
  ddpm.set_timesteps(10);
  Tensor x = synth::tensor("input.sched.x", {1, 4, 8, 8});
  Tensor eps = synth::tensor("input.sched.noise", {1, 4, 8, 8});
  FixedNoise z;
  z.noise = synth::tensor("input.sched.original", {1, 4, 8, 8});
  for (double t : ddim.timesteps()) {
    if (t == 1) continue;  // at the last step DDIM's final abar is abar_0, DDPM's is 1
    Tensor a = ddim.step(eps, t, x, z.noise);
    Tensor b = ddpm.step(eps, t, x, &z);
    INFO("t = " << t);
    CHECK(test::rel_l2(a, b) <= 1e-5);
  }
  // eta 0 ignores noise; eta > 0 needs it
  DDIMScheduler det(c);
  det.set_timesteps(10);
  CHECK(test::rel_l2(det.step(eps, 901, x), det.step(eps, 901, x, z.noise)) == 0);
  REQUIRE_THROWS_WITH(ddim.step(eps, 901, x), Catch::Contains("Generator"));
  REQUIRE_THROWS_WITH(ddpm.step(eps, 901, x), Catch::Contains("Generator"));
}

TEST_CASE("schedulers: Euler a draws noise through the Generator") {
  auto s = make_scheduler("euler-a", SchedulerConfig{});
  s->set_timesteps(10);
  Tensor x = synth::tensor("input.sched.x", {1, 4, 8, 8});
  REQUIRE_THROWS_WITH(s->step(x, s->timesteps()[0], x), Catch::Contains("Generator"));
  // With zero noise the step is an Euler step to sigma_down.
  FixedNoise zero;
  zero.noise = Tensor({1, 4, 8, 8});
  s->set_timesteps(10);
  const double s0 = s->sigmas()[0], s1 = s->sigmas()[1];
  const double up = std::sqrt(s1 * s1 * (s0 * s0 - s1 * s1) / (s0 * s0)), down = std::sqrt(s1 * s1 - up * up);
  Tensor eps = synth::tensor("input.sched.noise", {1, 4, 8, 8});
  Tensor got = s->step(eps, s->timesteps()[0], x, &zero);
  Tensor want = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) want[i] = float(x[i] + eps[i] * (down - s0));
  CHECK(test::rel_l2(got, want) <= 1e-6);
  // a full run stays finite
  TestNormal gen;
  s->set_timesteps(10);
  Tensor y = gen.randn({1, 4, 8, 8});
  for (float& v : y) v *= s->init_noise_sigma();
  for (double t : s->timesteps()) {
    Tensor xin = s->scale_model_input(y, t);
    y = s->step(xin, t, y, &gen);
  }
  for (float v : y) REQUIRE(std::isfinite(v));
}

TEST_CASE("schedulers: Euler a stays finite when sigma_max dwarfs the next sigma (found by fuzz_config)") {
  // squaredcos_cap_v2 + trailing: sigma_0 ~ 2e4, so in float32 sigma_up rounds to sigma_1 and
  // sigma_1^2 - sigma_up^2 came out negative: sqrt gave NaN latents.
  SchedulerConfig c;
  c.beta_schedule = "squaredcos_cap_v2";
  c.timestep_spacing = "trailing";
  c.prediction_type = "v_prediction";
  auto s = make_scheduler("euler-a", c);
  s->set_timesteps(3);
  TestNormal gen;
  Tensor y = gen.randn({1, 4, 2, 2});
  for (float& v : y) v *= s->init_noise_sigma();
  for (double t : s->timesteps()) y = s->step(s->scale_model_input(y, t), t, y, &gen);
  for (float v : y) REQUIRE(std::isfinite(v));
}

TEST_CASE("schedulers: leading spacing that would start past the last training timestep is refused (found by fuzz_config)") {
  // 4 training timesteps, 3 solver steps: (0..3) // 1, reversed, first dropped, + steps_offset 1
  // gives 4, 3, 2; t = 4 has no alphas_cumprod (the samplers made NaN latents of it).
  SchedulerConfig c;
  c.num_train_timesteps = 4;
  c.trained_betas = {0.1, 0.2, 0.3, 0.4};
  for (const char* name : {"dpm++2m", "unipc"}) {
    auto s = make_scheduler(name, c);
    CHECK_THROWS_WITH(s->set_timesteps(3), Catch::Contains("start at timestep 4, past the last training timestep 3"));
  }
  c.steps_offset = 0;
  auto s = make_scheduler("dpm++2m", c);
  s->set_timesteps(3);
  CHECK(s->timesteps().front() == 3);
}

TEST_CASE("schedulers: betas whose product vanishes are refused (found by fuzz_config)") {
  // beta_end 0.8 (scaled_linear): each beta is in (0, 1), alphas_cumprod reaches 0, sigma_max is
  // infinite and every sampler computed NaN latents.
  SchedulerConfig c;
  c.beta_end = 0.8;
  CHECK_THROWS_WITH(make_scheduler("euler", c), Catch::Contains("make alphas_cumprod 0 at the last timestep"));
  CHECK_THROWS_WITH(make_scheduler("ddim", c), Catch::Contains("use smaller betas"));
}

TEST_CASE("schedulers: a multistep solver schedule that meets a timestep twice is refused (found by fuzz_config in CI)") {
  // 3 training timesteps, 3 solver steps, "linspace": round(linspace(0, 2, 4)) reversed = 2, 1, 1;
  // the second step at t = 1 has h = 0 and UniPC's r_k = 0 / 0 made NaN latents.
  SchedulerConfig c;
  c.num_train_timesteps = 3;
  c.beta_schedule = "linear";
  c.beta_end = 0.5;
  c.timestep_spacing = "linspace";
  c.steps_offset = 0;
  for (const char* name : {"dpm++2m", "unipc"}) {
    auto s = make_scheduler(name, c);
    CHECK_THROWS_WITH(s->set_timesteps(3), Catch::Contains("reach timestep 1 twice"));
    s->set_timesteps(2);  // 2, 1: distinct
    CHECK(s->timesteps() == std::vector<double>{2, 1});
  }
  // SD1.5's 1000 timesteps: every step count up to 500 stays distinct with "linspace".
  SchedulerConfig sd;
  sd.timestep_spacing = "linspace";
  for (int n : {1, 20, 50, 250, 500}) CHECK_NOTHROW(make_scheduler("unipc", sd)->set_timesteps(n));
}

TEST_CASE("schedulers: img2img get_timesteps starts the schedule at the strength") {
  SchedulerConfig c;
  auto ddim = make_scheduler("ddim", c);
  ddim->set_timesteps(10);
  std::vector<double> ts = get_timesteps(*ddim, 10, 0.6);  // init_timestep 6, t_start 4
  CHECK(ts == std::vector<double>{501, 401, 301, 201, 101, 1});
  CHECK(get_timesteps(*ddim, 10, 1.0).size() == 10);

  // Heun lists timesteps twice: t_start * order; add_noise and the first step use the begin index.
  auto heun = make_scheduler("heun", c);
  heun->set_timesteps(10);
  ts = get_timesteps(*heun, 10, 0.5);  // t_start 5 -> index 10 of 19
  REQUIRE(ts.size() == 9);
  CHECK(ts.front() == heun->timesteps()[10]);
  Tensor x = synth::tensor("input.sched.x", {1, 4, 8, 8}), n = synth::tensor("input.sched.noise", {1, 4, 8, 8});
  Tensor noisy = heun->add_noise(x, n, ts.front());
  const double sigma = heun->sigmas()[10];
  for (int64_t i = 0; i < x.numel(); ++i) REQUIRE(noisy[i] == Approx(x[i] + sigma * n[i]).epsilon(1e-6));
  Tensor xin = heun->scale_model_input(noisy, ts.front());
  CHECK(xin[0] == Approx(noisy[0] / std::sqrt(sigma * sigma + 1)).epsilon(1e-6));

  REQUIRE_THROWS_WITH(get_timesteps(*ddim, 10, 1.5), Catch::Contains("strength"));
  REQUIRE_THROWS_WITH(get_timesteps(*ddim, 20, 0.5), Catch::Contains("set_timesteps"));
}

TEST_CASE("schedulers: config from a diffusers scheduler_config.json") {
  // runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
  const auto j = nlohmann::json::parse(R"({
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null,
    "clip_sample": false})");
  SchedulerConfig c = SchedulerConfig::from_json(j, SchedulerConfig{});
  CHECK(c.num_train_timesteps == 1000);
  CHECK(c.beta_schedule == "scaled_linear");
  CHECK(c.steps_offset == 1);
  CHECK(c.trained_betas.empty());
  auto s = make_scheduler(j.at("_class_name").get<std::string>(), c);
  CHECK(s->name() == "pndm");

  SchedulerConfig v = SchedulerConfig::from_json(
      nlohmann::json::parse(R"({"prediction_type": "v_prediction", "timestep_spacing": "trailing"})"));
  CHECK(v.prediction_type == "v_prediction");
  CHECK(v.timestep_spacing == "trailing");
  CHECK(v.beta_start == 0.00085);  // untouched fields keep the SD1.5 defaults

  REQUIRE_THROWS_WITH(SchedulerConfig::from_json(nlohmann::json::parse(R"({"beta_schedule": "cubic"})")),
                      Catch::Contains("beta_schedule"));
  REQUIRE_THROWS_WITH(SchedulerConfig::from_json(nlohmann::json::parse(R"({"prediction_type": "sample"})")),
                      Catch::Contains("prediction_type"));
  REQUIRE_THROWS_WITH(SchedulerConfig::from_json(nlohmann::json::parse(R"({"steps_offset": "one"})")),
                      Catch::Contains("steps_offset"));
  REQUIRE_THROWS_WITH(SchedulerConfig::from_json(nlohmann::json::parse("[1, 2]")), Catch::Contains("object"));
}

TEST_CASE("schedulers: v-prediction runs and differs from epsilon") {
  SchedulerConfig c;
  c.prediction_type = "v_prediction";
  Tensor x = synth::tensor("input.sched.x", {1, 4, 8, 8});
  for (const std::string& name : scheduler_names()) {
    if (name == "euler-a" || name == "ddpm") continue;
    INFO(name);
    auto v = make_scheduler(name, c), e = make_scheduler(name, SchedulerConfig{});
    v->set_timesteps(10);
    e->set_timesteps(10);
    const double t = v->timesteps()[0];
    Tensor a = v->step(x, t, x), b = e->step(x, t, x);
    for (float f : a) REQUIRE(std::isfinite(f));
    CHECK(test::rel_l2(a, b) > 1e-3);
  }
}

TEST_CASE("schedulers: bad input gets a clear error") {
  REQUIRE_THROWS_WITH(make_scheduler("euler_a", SchedulerConfig{}),
                      Catch::Contains("unknown scheduler \"euler_a\"") &&
                          Catch::Contains("pndm, ddim, ddpm, lms, euler, euler-a, heun, dpm++2m, unipc"));
  Tensor x = synth::tensor("input.sched.x", {1, 4, 8, 8});
  for (const std::string& name : scheduler_names()) {
    INFO(name);
    auto s = make_scheduler(name, SchedulerConfig{});
    CHECK(s->name() == name);
    REQUIRE_THROWS_WITH(s->step(x, 1, x), Catch::Contains("set_timesteps"));
    REQUIRE_THROWS_WITH(s->set_timesteps(0), Catch::Contains("num_inference_steps"));
    REQUIRE_THROWS_WITH(s->set_timesteps(-3), Catch::Contains("num_inference_steps"));
    REQUIRE_THROWS_WITH(s->set_timesteps(1001), Catch::Contains("num_inference_steps"));
    s->set_timesteps(10);
    REQUIRE_THROWS_WITH(s->step(Tensor({1, 4, 8, 9}), s->timesteps()[0], x), Catch::Contains("does not match"));
  }
  auto euler = make_scheduler("euler", SchedulerConfig{});
  euler->set_timesteps(10);
  REQUIRE_THROWS_WITH(euler->step(x, 900, x), Catch::Contains("not one of the scheduler's timesteps"));
  auto ddim = make_scheduler("ddim", SchedulerConfig{});
  ddim->set_timesteps(10);
  REQUIRE_THROWS_WITH(ddim->step(x, 900.5, x), Catch::Contains("not an integer"));
  REQUIRE_THROWS_WITH(ddim->add_noise(x, x, 1000), Catch::Contains("not an integer in [0, 1000)"));
  REQUIRE_THROWS_WITH(ddim->add_noise(x, Tensor({1, 4, 8, 9}), 10), Catch::Contains("noise"));
  SchedulerConfig prk;
  prk.skip_prk_steps = false;
  REQUIRE_THROWS_WITH(make_scheduler("pndm", prk), Catch::Contains("skip_prk_steps"));
}
