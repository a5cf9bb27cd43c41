// The optimizer and training-loop pieces (include/ldm/train/) against torch: AdamW for 10 steps
// and clip_grad_norm_ within 1e-6 relative L2 of torch in float32, the learning-rate schedule
// against LambdaLR's rates, all from tests/data/optim_reference.safetensors (made by
// scripts/make_optim_reference.py). EMA and the data order against their definitions, and a
// toy training run resumed from a checkpoint against the same run uninterrupted, bit for bit.
#include <cmath>
#include <cstring>

#include "ldm/nn/linear.hpp"
#include "ldm/nn/losses.hpp"
#include "ldm/train/adamw.hpp"
#include "ldm/train/checkpoint.hpp"
#include "ldm/train/clip_grad.hpp"
#include "ldm/train/data_order.hpp"
#include "ldm/train/ema.hpp"
#include "ldm/train/latent_isotropy.hpp"
#include "ldm/train/lr_schedule.hpp"
#include "ldm/train/timestep_bias.hpp"
#include "reference.hpp"
#include "tmp_path.hpp"

using namespace ldm;
using ldm::test::same_bits;
using Catch::Matchers::Contains;

namespace {

constexpr double kOptimTol = 1e-6;  // float32 against torch's float32: summation order only

const test::Reference& optim_ref() {
  static const test::Reference r = [] {
    const std::string f = __FILE__;
    return test::Reference(f.substr(0, f.rfind('/')) + "/data/optim_reference.safetensors");
  }();
  return r;
}

}  // namespace

TEST_CASE("AdamW matches torch.optim.AdamW for 10 steps", "[train][adamw]") {
  for (const std::string c : {"adamw.default", "adamw.strong"}) {
    const auto& meta = optim_ref().meta(c);
    const int n = meta.at("params");
    std::vector<Tensor> weights(static_cast<size_t>(n)), grads(static_cast<size_t>(n));
    std::vector<Parameter> params;
    for (int i = 0; i < n; ++i) weights[size_t(i)] = optim_ref().get(c, "p" + std::to_string(i) + ".init").clone();
    for (int i = 0; i < n; ++i) params.push_back({"p" + std::to_string(i), &weights[size_t(i)], &grads[size_t(i)]});
    AdamW opt;
    opt.beta1 = meta.at("betas")[0];
    opt.beta2 = meta.at("betas")[1];
    opt.eps = meta.at("eps");
    opt.weight_decay = meta.at("weight_decay");
    double worst = 0;
    for (int64_t k = 0; k < 10; ++k) {
      opt.lr = meta.at("lr")[size_t(k)];
      for (int i = 0; i < n; ++i) {
        const Shape& shape = weights[size_t(i)].shape();
        const Tensor g = optim_ref().get(c, "p" + std::to_string(i) + ".grad").slice0(k, k + 1).reshape(shape);
        grads[size_t(i)] = std::isnan(g[0]) ? Tensor() : g;  // NaN: torch's grad was None this step
      }
      opt.step(params);
      for (int i = 0; i < n; ++i) {
        const Tensor& w = weights[size_t(i)];
        const Tensor expected = optim_ref().get(c, "p" + std::to_string(i) + ".after").slice0(k, k + 1).reshape(w.shape());
        const double e = test::rel_l2(w, expected);
        INFO(c << " step " << k + 1 << " parameter " << i << ": relative L2 " << e << "\n"
               << test::mismatch_report(w, expected, 1e-7, 1e-6));
        REQUIRE(e <= kOptimTol);
        worst = std::max(worst, e);
      }
    }
    if (c == "adamw.strong") CHECK(opt.state.at("p1").step == 8);  // two steps without a gradient
    std::printf("%-16s worst rel L2 over 10 steps: %.2e\n", c.c_str(), worst);
  }
}

TEST_CASE("AdamW names the parameter whose gradient has the wrong shape", "[train][adamw]") {
  Tensor w({2, 3}), g({3, 2});
  AdamW opt;
  REQUIRE_THROWS_WITH(opt.step({{"conv_in.weight", &w, &g}}), Contains("conv_in.weight") && Contains("[3, 2]"));
}

TEST_CASE("clip_grad_norm matches torch.nn.utils.clip_grad_norm_", "[train][clip]") {
  for (const std::string c : {"clip.clipped", "clip.under"}) {
    const auto& meta = optim_ref().meta(c);
    const int n = meta.at("grads");
    std::vector<Tensor> grads(static_cast<size_t>(n)), weights(static_cast<size_t>(n));
    std::vector<Parameter> params;
    for (int i = 0; i < n; ++i) grads[size_t(i)] = optim_ref().get(c, "g" + std::to_string(i)).clone();
    Tensor none;  // a parameter no gradient reached is left out of the norm
    params.push_back({"frozen", &weights[0], &none});
    for (int i = 0; i < n; ++i) params.push_back({"g" + std::to_string(i), &weights[size_t(i)], &grads[size_t(i)]});
    const double total = clip_grad_norm(params, meta.at("max_norm"));
    const double expected = optim_ref().get(c, "total_norm")[0];
    CHECK(std::fabs(total - expected) <= kOptimTol * expected);
    for (int i = 0; i < n; ++i)
      CHECK(test::rel_l2(grads[size_t(i)], optim_ref().get(c, "clipped.g" + std::to_string(i))) <= kOptimTol);
    CHECK(!none.defined());
    std::printf("%-16s total norm %.8f (torch %.8f)\n", c.c_str(), total, expected);
  }
}

TEST_CASE("the cosine schedule with warm-up gives LambdaLR's rates", "[train][lr]") {
  for (const std::string c : {"lr.diffusers", "lr.floor", "lr.warmup_only"}) {
    const auto& meta = optim_ref().meta(c);
    CosineScheduleWithWarmup sched;
    sched.num_warmup_steps = meta.at("num_warmup_steps");
    sched.num_training_steps = meta.at("num_training_steps");
    sched.min_lr_ratio = meta.at("min_lr_ratio");
    const double base_lr = meta.at("base_lr");
    const auto& rates = meta.at("rates");
    for (size_t k = 0; k < rates.size(); ++k) {
      const double expected = rates[k];
      INFO(c << " step " << k);
      CHECK(std::fabs(sched.lr(base_lr, int64_t(k)) - expected) <= 1e-15 * base_lr);
    }
  }
}

TEST_CASE("EMA follows diffusers' EMAModel decay and copies to the model", "[train][ema]") {
  SECTION("warm-up (1 + s) / (10 + s), capped at decay") {
    EMAModel ema;
    ema.decay = 0.5;
    CHECK(ema.get_decay(1) == 0.0);  // the first update copies
    CHECK(ema.get_decay(2) == 2.0 / 11.0);
    CHECK(ema.get_decay(9) == 0.5);  // (1 + 8) / (10 + 8)
    CHECK(ema.get_decay(100) == 0.5);
    ema.update_after_step = 3;
    CHECK(ema.get_decay(4) == 0.0);
    CHECK(ema.get_decay(5) == 2.0 / 11.0);
    ema.warmup = false;
    ema.min_decay = 0.7;  // the floor wins over the decay, as diffusers
    CHECK(ema.get_decay(6) == 0.7);
  }
  SECTION("the average of a moving weight, and copy_to") {
    Tensor w = Tensor::from({2}, {0.0f, 1.0f}), g;
    const std::vector<Parameter> params{{"w", &w, &g}};
    EMAModel ema;
    ema.decay = 0.9;
    double expected = 0;
    for (int64_t k = 1; k <= 20; ++k) {
      w[0] = float(k);
      ema.step(params);
      const double d = ema.get_decay(k);
      expected = d * expected + (1 - d) * double(k);
      CHECK(std::fabs(ema.shadow_params.at("w")[0] - expected) <= 1e-5 * expected);
      CHECK(ema.shadow_params.at("w")[1] == 1.0f);  // a constant weight stays put
    }
    ema.copy_to(params);
    CHECK(w[0] == ema.shadow_params.at("w")[0]);
    Tensor other({3}), og;
    REQUIRE_THROWS_WITH(ema.copy_to({{"missing", &other, &og}}), Contains("missing"));
  }
}

TEST_CASE("timestep bias: diffusers' generate_timestep_weights, and draws that follow them", "[train][timesteps]") {
  // none: uniform
  const std::vector<double> u = TimestepBias{}.weights(1000);
  CHECK(u[0] == Approx(1e-3));
  CHECK(u[999] == Approx(1e-3));
  // later, x3 on the last 25%: 750 ones and 250 threes, sum 1500
  TimestepBias later;
  later.strategy = "later";
  later.multiplier = 3.0;
  const std::vector<double> w = later.weights(1000);
  CHECK(w[749] == Approx(1.0 / 1500));
  CHECK(w[750] == Approx(3.0 / 1500));
  CHECK(w[999] == Approx(3.0 / 1500));
  // earlier, range
  TimestepBias earlier = later;
  earlier.strategy = "earlier";
  CHECK(earlier.weights(1000)[249] == Approx(3.0 / 1500));
  CHECK(earlier.weights(1000)[250] == Approx(1.0 / 1500));
  TimestepBias range = later;
  range.strategy = "range", range.begin = 100, range.end = 200;
  CHECK(range.weights(1000)[99] == Approx(1.0 / 1200));
  CHECK(range.weights(1000)[100] == Approx(3.0 / 1200));
  CHECK(range.weights(1000)[200] == Approx(1.0 / 1200));
  // the draws: the biased quarter holds 3/6 of the mass with multiplier 3
  const TimestepSampler draw(w);
  CHECK(draw(0.0) == 0);
  CHECK(draw(0.999999999) == 999);
  CHECK(draw(0.5 - 1e-9) == 749);
  CHECK(draw(0.5 + 1e-9) == 750);
  int late = 0;
  for (int i = 0; i < 10000; ++i) late += draw((i + 0.5) / 10000.0) >= 750;
  CHECK(late == 5000);
  // bad settings are refused with the option's name
  TimestepBias bad = later;
  bad.multiplier = 0;
  CHECK_THROWS_WITH(bad.weights(1000), Catch::Contains("--timestep-bias-multiplier must be positive"));
  bad = range;
  bad.end = 2000;
  CHECK_THROWS_WITH(bad.weights(1000), Catch::Contains("--timestep-bias-begin/end must give 0 <= begin < end <= 1000"));
  bad = later;
  bad.strategy = "sooner";
  CHECK_THROWS_WITH(bad.weights(1000), Catch::Contains("must be none, later, earlier or range"));
}

TEST_CASE("the data order is a seeded shuffle per epoch, a function of the step", "[train][data]") {
  const DataOrder order(10, 42);
  const std::vector<int64_t> e0 = order.epoch_order(0), e1 = order.epoch_order(1);
  for (const auto& e : {e0, e1}) {
    std::vector<int64_t> sorted = e;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 10; ++i) REQUIRE(sorted[size_t(i)] == i);
  }
  CHECK(e0 != e1);
  CHECK(DataOrder(10, 43).epoch_order(0) != e0);
  // The definition in data_order.hpp, pinned: another implementation must give these.
  CHECK(e0 == std::vector<int64_t>{1, 0, 7, 6, 5, 8, 2, 9, 4, 3});
  // Batches of 4 read epoch 0 then epoch 1: batch 2 straddles them.
  CHECK(order.batch(0, 4) == std::vector<int64_t>(e0.begin(), e0.begin() + 4));
  CHECK(order.batch(2, 4) == std::vector<int64_t>{e0[8], e0[9], e1[0], e1[1]});
  REQUIRE_THROWS_WITH(DataOrder(0, 1), Contains("empty"));
}

namespace {

// A toy training run: a Linear layer fitting noisy random data with MSE, every piece in use
// (data order, generator noise, LR schedule, clipping, AdamW, EMA).
struct ToyRun {
  Linear lin;
  AdamW optimizer;
  EMAModel ema;
  LdmGenerator rng{7};
  CosineScheduleWithWarmup schedule{2, 10};
  DataOrder order{24, 5};
  int64_t step = 0;

  explicit ToyRun(uint64_t init_seed) {
    LdmGenerator init(init_seed);
    lin.in_features = 8;
    lin.out_features = 3;
    lin.weight = init.randn({3, 8});
    lin.bias = init.randn({3});
    optimizer.lr = 0;
    optimizer.weight_decay = 0.1;
    ema.decay = 0.8;
  }
  std::vector<Parameter> params() {
    return {{"proj.weight", &lin.weight, &lin.grad_weight}, {"proj.bias", &lin.bias, &lin.grad_bias}};
  }
  void train(const Tensor& X, const Tensor& Y, int64_t steps) {  // X [24, 8], Y [24, 3]
    for (int64_t s = 0; s < steps; ++s, ++step) {
      const std::vector<int64_t> idx = order.batch(step, 4);
      Tensor x({4, 8}), y({4, 3});
      for (size_t j = 0; j < idx.size(); ++j) {
        x.matrix().row(int64_t(j)) = X.matrix().row(idx[j]);
        y.matrix().row(int64_t(j)) = Y.matrix().row(idx[j]);
      }
      x.vec() += 0.05f * rng.randn({4, 8}).vec();  // input noise: the generator's state matters
      lin.grad_weight = lin.grad_bias = Tensor();  // zero_grad(set_to_none=True)
      lin.backward(x, mse_loss_backward(lin.forward(x), y));
      clip_grad_norm(params(), 0.5);
      optimizer.lr = schedule.lr(1e-1, step);
      optimizer.step(params());
      ema.step(params());
    }
  }
};

}  // namespace

TEST_CASE("a run resumed from a training checkpoint equals the uninterrupted run, bit for bit", "[train][checkpoint]") {
  LdmGenerator data(3);
  const Tensor X = data.randn({24, 8}), Y = data.randn({24, 3});
  test::TmpPath path("train_ckpt.safetensors");

  ToyRun whole(11);
  whole.train(X, Y, 10);

  ToyRun first(11);
  first.train(X, Y, 5);
  save_training_checkpoint(path, first.params(), first.step, first.optimizer, &first.ema, &first.rng);
  ToyRun resumed(99);  // different weights and settings: everything must come from the file
  resumed.rng.manual_seed(1234);
  resumed.optimizer.weight_decay = 0;
  resumed.ema.decay = 0.1;
  resumed.step = load_training_checkpoint(path, resumed.params(), resumed.optimizer, &resumed.ema, &resumed.rng);
  CHECK(resumed.step == 5);
  resumed.train(X, Y, 5);

  for (const std::string name : {"proj.weight", "proj.bias"}) {
    INFO(name);
    const Tensor& w = name == "proj.weight" ? whole.lin.weight : whole.lin.bias;
    const Tensor& r = name == "proj.weight" ? resumed.lin.weight : resumed.lin.bias;
    CHECK(same_bits(w, r));
    CHECK(same_bits(whole.optimizer.state.at(name).exp_avg, resumed.optimizer.state.at(name).exp_avg));
    CHECK(same_bits(whole.optimizer.state.at(name).exp_avg_sq, resumed.optimizer.state.at(name).exp_avg_sq));
    CHECK(resumed.optimizer.state.at(name).step == 10);
    CHECK(same_bits(whole.ema.shadow_params.at(name), resumed.ema.shadow_params.at(name)));
  }
  CHECK(resumed.rng.offset() == whole.rng.offset());
  CHECK(!same_bits(whole.lin.weight, ToyRun(11).lin.weight));  // it did train

  // The checkpoint loads as a model: the weights sit under their own names.
  const SafeTensors f(path);
  CHECK(f.contains("proj.weight"));
  CHECK(f.contains("adamw.m.proj.weight"));
  CHECK(f.contains("ema.proj.bias"));
}

TEST_CASE("loading a training checkpoint into another model names the tensor at fault", "[train][checkpoint]") {
  test::TmpPath path("train_ckpt_bad.safetensors");
  ToyRun run(1);
  run.train(Tensor({24, 8}), Tensor({24, 3}), 1);
  save_training_checkpoint(path, run.params(), run.step, run.optimizer, nullptr, nullptr);

  ToyRun wider(1);
  wider.lin.weight = Tensor({3, 9});
  REQUIRE_THROWS_WITH(load_training_checkpoint(path, wider.params(), wider.optimizer, nullptr, nullptr),
                      Contains("'proj.weight' has shape [3, 8] but the model's is [3, 9]"));
  ToyRun with_ema(1);
  REQUIRE_THROWS_WITH(load_training_checkpoint(path, with_ema.params(), with_ema.optimizer, &with_ema.ema, nullptr),
                      Contains("no metadata \"ema.decay\""));
}

TEST_CASE("latent isotropy: 0 for isotropic latents, (C-1)^2 + (C-1) for one direction, and its gradient",
          "[train][isotropy]") {
  // Two pictures [2, 4, 1, 4] whose latent pixel p is e_p in one and -e_p in the other (each
  // position's mean 0): covariance I / 4, isotropic.
  Tensor iso({2, 4, 1, 4});
  for (int64_t p = 0; p < 4; ++p) iso[p * 4 + p] = 1.0f, iso[(4 + p) * 4 + p] = -1.0f;
  CHECK(latent_isotropy_loss(iso) == Approx(0.0).margin(1e-12));
  // A pattern the same in every picture adds no variance: the per-position centring removes it.
  Tensor patterned = iso.clone();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 16; ++i) patterned[b * 16 + i] += float(i % 5) - 2.0f;
  CHECK(latent_isotropy_loss(patterned) == Approx(0.0).margin(1e-10));
  // Every pixel a multiple of (1, 2, -1, 0.5): all the variance on one direction (also after
  // each position's mean is taken off).
  Tensor line({2, 4, 1, 3});
  const float dir[4] = {1.0f, 2.0f, -1.0f, 0.5f};
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < 4; ++c)
      for (int64_t p = 0; p < 3; ++p) line[(b * 4 + c) * 3 + p] = dir[c] * float(b * 3 + p - 2);
  CHECK(latent_isotropy_loss(line) == Approx(12.0).epsilon(1e-6));
  // A constant latent has no covariance to shape: an error, not a division by zero.
  REQUIRE_THROWS_WITH(latent_isotropy_loss(Tensor::full({3, 4, 2, 2}, 0.5f)), Contains("do not vary"));
  REQUIRE_THROWS_WITH(latent_isotropy_loss(line.slice0(0, 1)), Contains("at least 2 pictures"));

  // The gradient, element by element, against central differences of the double-precision loss.
  Tensor z({2, 4, 3, 3});
  for (int64_t i = 0; i < z.numel(); ++i) z[i] = float(std::sin(0.7 * double(i)) + 0.3 * double(i % 4));
  const float dloss = 0.5f;
  const Tensor g = latent_isotropy_loss_backward(z, dloss);
  REQUIRE(g.shape() == z.shape());
  double gmax = 0;
  for (float v : g) gmax = std::max(gmax, double(std::fabs(v)));
  REQUIRE(gmax > 0);
  const float h = 1e-3f;
  for (int64_t i = 0; i < z.numel(); ++i) {
    Tensor zp = z.clone(), zm = z.clone();
    zp[i] += h, zm[i] -= h;
    const double fd = double(dloss) * (latent_isotropy_loss(zp) - latent_isotropy_loss(zm)) / (double(zp[i]) - double(zm[i]));
    INFO("element " << i << ": finite difference " << fd << ", backward " << g[i]);
    CHECK(std::fabs(fd - double(g[i])) <= 1e-3 * gmax);
  }
}
