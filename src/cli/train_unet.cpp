// `ldm train unet`: trains the U-Net and the CLIP text encoder of a run folder jointly, from
// scratch, on the shapes dataset, with the run's trained VAE frozen (the LDM paper's second
// stage; the course's LatentDiffusion.train_step):
//   z0  = scaling_factor * (mean + std * n)           a cached posterior of a dataset picture
//   t   ~ U{0, ..., T - 1},  eps ~ N(0, I)
//   z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps       (DDPMScheduler.add_noise)
//   loss = mean_b w_b mean (unet(z_t, t, clip(caption)) - eps)^2   (v_prediction: target sqrt(abar) eps - sqrt(1 - abar) z0)
// w_b is Min-SNR-gamma weighting (Hang et al. 2023, as diffusers' train_text_to_image --snr_gamma):
// min(SNR_t, gamma) / SNR_t for epsilon, / (SNR_t + 1) for v, SNR_t = abar_t / (1 - abar_t); it
// keeps the nearly noise-free steps from dominating. --snr-gamma 0: w = 1 (plain MSE).
// Captions leave parts out at random and are empty for a fraction of the examples, so that
// classifier-free guidance works. The posteriors of --latent-cache pictures are computed once
// at the start (the VAE is frozen); each step draws fresh noise, timesteps and captions.
// --init-from MODEL fine-tunes instead: the U-Net and text encoder start from a trained model
// folder's weights (its checkpoint, loss curve and sample grids are named unet_finetune_*).
// Every --sample-every steps the EMA weights draw a grid of held-out full captions, and the
// shapes analyser reads them back: a running prompt-adherence figure.
// At the end the EMA weights are written to RUN/unet and RUN/text_encoder (--dtype).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/data/shapes.hpp"
#include "ldm/data/shapes_analyser.hpp"
#include "ldm/models/clip_tokenizer.hpp"
#include "ldm/nn/losses.hpp"
#include "ldm/pipeline.hpp"
#include "ldm/train/adamw.hpp"
#include "ldm/train/checkpoint.hpp"
#include "ldm/train/clip_grad.hpp"
#include "ldm/train/data_order.hpp"
#include "ldm/train/ema.hpp"
#include "ldm/train/init_weights.hpp"
#include "ldm/train/lr_schedule.hpp"
#include "ldm/train/timestep_bias.hpp"
#include "train_common.hpp"
#include "train_log.hpp"

namespace ldm::cli {
namespace {

struct TrainUNetOptions {
  std::string run;
  OptimOptions optim;
  int64_t latent_cache = 20000;  // pictures whose posteriors are cached
  double ema_decay = 0.999;
  double snr_gamma = 5.0;  // 0: plain MSE
  TimestepBias timestep_bias;
  int64_t timestep_bias_steps = 0;  // the bias holds for steps < this, then t is uniform (0: every step)
  shapes::CaptionOptions captions;
  int sample_count = 16, sample_steps = 20;
  float sample_guidance = 2.0f;  // what configs/ldm-shapes/generation_defaults.json recommends
  std::string dtype = "fp16";  // of the final weights
  std::string init_from;       // a model folder whose unet/ and text_encoder/ weights start the training
};

// A stream of uniform integers for the training timesteps, apart from the data's streams.
constexpr uint64_t kTimestepStream = 0x7135, kCaptionStream = 0xCA9, kSampleSeedOffset = 2000003;

// The frozen VAE's posteriors of `n` dataset pictures: mean and std [n, C, h, w] and the specs.
struct LatentCache {
  Tensor mean, std;
  std::vector<shapes::ShapeSpec> specs;
};

LatentCache encode_dataset(const AutoencoderKL& vae, uint64_t seed, int64_t n) {
  LatentCache c;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < n; first += 64) {
    std::vector<shapes::Example> ex;
    for (int64_t i = first; i < std::min(n, first + 64); ++i) ex.push_back(shapes::example(seed, i));
    const DiagonalGaussian post = vae.encode(shapes::to_vae_input(ex));
    if (!c.mean.defined()) {
      Shape s = post.mean.shape();
      s[0] = n;
      c.mean = Tensor::empty(s), c.std = Tensor::empty(s);
    }
    const Tensor sd = post.std();
    std::copy(post.mean.begin(), post.mean.end(), c.mean.slice0(first, first + int64_t(ex.size())).begin());
    std::copy(sd.begin(), sd.end(), c.std.slice0(first, first + int64_t(ex.size())).begin());
    for (const auto& e : ex) c.specs.push_back(e.spec);
    if ((first / 64) % 50 == 49)
      std::fprintf(stderr, "unet: encoding the dataset's latents %lld/%lld\n", (long long)(first + 64), (long long)n);
  }
  std::fprintf(stderr, "unet: %lld latents %s cached in %.1f s\n", (long long)n, shape_str(c.mean.shape()).c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return c;
}

// A copy of a model with the EMA weights of its `params`, for sampling (a fresh load from the
// averages in their checkpoint shapes: no kept Winograd transforms).
template <typename Model, typename Config>
Model ema_copy(const EMAModel& ema, const std::vector<Parameter>& params, const std::string& prefix,
               const Config& cfg) {
  std::map<std::string, Tensor> tensors;
  for (const Parameter& p : params) tensors[p.name] = p.as_stored(ema.shadow_params.at(p.name));
  WeightStore w(std::make_shared<MapSource>(std::move(tensors)));
  Model m;
  m.load(w, prefix, cfg);
  w.finish();
  return m;
}

// Draws held-out full captions with the EMA weights (Euler, CFG), saves the grid, and returns
// the analyser's accuracies as one line.
std::string sample_grid(const StableDiffusion& sd, const TrainUNetOptions& o, const std::string& path) {
  std::vector<std::vector<uint8_t>> images;
  std::vector<std::string> labels, prompts;
  shapes::AccuracyReport report;
  for (int i = 0; i < o.sample_count; ++i) {
    shapes::Rng r = shapes::Rng::for_example(o.optim.seed + kSampleSeedOffset, i, 0);
    const shapes::ShapeSpec spec = shapes::random_spec(r);
    GenerationParams p;
    p.prompt = shapes::full_caption(spec);
    p.scheduler = "euler";
    p.steps = o.sample_steps;
    p.guidance_scale = o.sample_guidance;
    p.width = p.height = shapes::kImageSize;
    LdmGenerator gen{uint64_t(i)};
    const GenerationResult res = generate(sd, p, gen);
    std::vector<uint8_t> rgb(size_t(res.image.numel()));
    for (int64_t k = 0; k < res.image.numel(); ++k) rgb[size_t(k)] = uint8_t(std::lround(res.image[k] * 255.0f));
    const shapes::Analysis got = shapes::analyse(rgb.data());
    const bool right = report.add(shapes::stated(spec), got);
    labels.push_back(std::to_string(i) + (right ? " ok" : " x"));  // every attribute read back, or not
    prompts.push_back(p.prompt);
    images.push_back(std::move(rgb));
  }
  shapes::contact_sheet(images, labels, prompts).save(path);
  std::string line;
  for (int a = 0; a < shapes::kNumAttributes; ++a) {
    const shapes::Confusion& c = report.attributes[size_t(a)];
    line += std::string(a ? " " : "") + shapes::attribute_name(a) + " " + std::to_string(c.correct) + "/" +
            std::to_string(c.total);
  }
  return line;
}

void run_train_unet(const TrainUNetOptions& o) {
  keep_freed_memory();  // every step frees and allocates the same tensors: no fresh pages each time
  const OptimOptions& op = o.optim;
  // The part being trained: names its checkpoint, loss curve and sample grids (a fine-tune keeps
  // the from-scratch run's apart).
  const std::string part = op.part(o.init_from.empty() ? "unet" : "unet_finetune");
  const std::string train_dir = o.run + "/train", ckpt = train_dir + "/" + part + "_checkpoint.safetensors";
  make_folder(train_dir);
  const UNetConfig ucfg = UNetConfig::from_json(run_config(o.run, "unet"), o.run + "/unet/config.json");
  const CLIPTextConfig tcfg = CLIPTextConfig::from_json(run_config(o.run, "text_encoder"), o.run + "/text_encoder/config.json");
  const VAEConfig vcfg = VAEConfig::from_json(run_config(o.run, "vae"), o.run + "/vae/config.json");
  const std::string vae_weights = o.run + "/vae/diffusion_pytorch_model.safetensors";
  LDM_CHECK(path_exists(vae_weights), "'", vae_weights, "' does not exist: train the VAE first (ldm train vae --run ",
            o.run, ")");
  LDM_CHECK(ucfg.cross_attention_dim == tcfg.hidden_size, "the U-Net's cross_attention_dim ", ucfg.cross_attention_dim,
            " must equal the text encoder's hidden_size ", tcfg.hidden_size);
  const SchedulerConfig scfg =
      SchedulerConfig::from_json(read_json_file(o.run + "/scheduler/scheduler_config.json", "scheduler config"));

  const CLIPTokenizer tokenizer(o.run + "/tokenizer");
  AutoencoderKL vae;  // frozen
  {
    WeightStore w(std::make_shared<SafeTensorsSource>(vae_weights));
    vae.load(w, "", vcfg);
    w.finish();
  }
  const int64_t T = scfg.num_train_timesteps, L = tcfg.max_position_embeddings;
  const TimestepSampler draw_timestep(o.timestep_bias.weights(int(T)));  // checks the options before the long part
  if (!o.init_from.empty())  // also before the long part
    for (const char* file : {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"})
      LDM_CHECK(path_exists(o.init_from + "/" + file), "--init-from: '", o.init_from, "/", file,
                "' does not exist: give a model folder with unet/ and text_encoder/ weights");
  const LatentCache cache = encode_dataset(vae, op.seed, o.latent_cache);

  UNet2DConditionModel unet;
  CLIPTextModel text_encoder;
  if (o.init_from.empty()) {
    WeightStore w(std::make_shared<InitSource>(op.seed));
    unet.load(w, "", ucfg);
    text_encoder.load(w, "text_model", tcfg);
    w.finish();
  } else {  // fine-tuning: a trained model's weights (fp16 or fp32) as the start
    WeightStore wu(std::make_shared<SafeTensorsSource>(o.init_from + "/unet/diffusion_pytorch_model.safetensors"));
    unet.load(wu, "", ucfg);
    wu.finish();
    WeightStore wt(std::make_shared<SafeTensorsSource>(o.init_from + "/text_encoder/model.safetensors"));
    text_encoder.load(wt, "text_model", tcfg);
    wt.finish();
  }
  std::vector<Parameter> unet_params = parameters_of(unet), text_params = parameters_of(text_encoder, "text_model");
  std::vector<Parameter> params = unet_params;
  params.insert(params.end(), text_params.begin(), text_params.end());
  auto count = [](const std::vector<Parameter>& ps) {
    int64_t n = 0;
    for (const Parameter& p : ps) n += p.value->numel();
    return n;
  };

  AdamW opt;
  opt.weight_decay = op.weight_decay;
  EMAModel ema;
  ema.decay = o.ema_decay;
  LdmGenerator rng(op.seed + 1);  // latent and diffusion noise
  int64_t step = 0;
  if (op.resume) {
    LDM_CHECK(path_exists(ckpt), "--resume: no checkpoint '", ckpt, "' to resume from");
    step = load_training_checkpoint(ckpt, params, opt, &ema, &rng);
    std::fprintf(stderr, "unet: resumed from %s at step %lld\n", ckpt.c_str(), (long long)step);
  }
  const CosineScheduleWithWarmup schedule{op.warmup, op.steps, 0.5, op.min_lr_ratio};
  const NoiseSchedule noise_schedule(scfg);
  const DataOrder order(o.latent_cache, op.seed);
  const float sf = float(vcfg.scaling_factor);
  const bool v_prediction = scfg.prediction_type == "v_prediction";
  std::fprintf(stderr,
               "unet: U-Net %.2f M + text encoder %.2f M parameters, %lld steps of batch %lld, lr %.2g, %s, run %s\n",
               double(count(unet_params)) / 1e6, double(count(text_params)) / 1e6, (long long)op.steps,
               (long long)op.batch, op.lr, scfg.prediction_type.c_str(), o.run.c_str());
  TrainLog log(train_dir, part, op.steps, step);

  for (; step < op.steps; ++step) {
    const std::vector<int64_t> idx = order.batch(step, op.batch);
    const int64_t B = int64_t(idx.size());
    const Shape zshape{B, cache.mean.dim(1), cache.mean.dim(2), cache.mean.dim(3)};
    const int64_t n = zshape[1] * zshape[2] * zshape[3];
    const Tensor zn = rng.randn(zshape), eps = rng.randn(zshape);
    const bool biased = o.timestep_bias.strategy != "none" && (o.timestep_bias_steps == 0 || step < o.timestep_bias_steps);
    Tensor noisy = Tensor::empty(zshape), target = Tensor::empty(zshape);
    std::vector<float> timesteps, weights;  // [B]
    std::vector<int64_t> ids;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t k = step * op.batch + b;
      shapes::Rng tr = shapes::Rng::for_example(op.seed ^ kTimestepStream, k, 0);
      const int t = biased ? draw_timestep(tr.uniform()) : tr.below(int(T));
      timesteps.push_back(float(t));
      const double abar = noise_schedule.alphas_cumprod(size_t(t)), snr = abar / (1.0 - abar);
      weights.push_back(o.snr_gamma > 0 ? float(std::min(snr, o.snr_gamma) / (v_prediction ? snr + 1.0 : snr)) : 1.0f);
      const float a = std::sqrt(noise_schedule.alphas_cumprod(size_t(t)));
      const float s = std::sqrt(1.0f - noise_schedule.alphas_cumprod(size_t(t)));
      const float* m = cache.mean.data() + idx[size_t(b)] * n;
      const float* sd_ = cache.std.data() + idx[size_t(b)] * n;
      for (int64_t j = 0; j < n; ++j) {
        const float z0 = sf * (m[j] + sd_[j] * zn[b * n + j]);
        noisy[b * n + j] = a * z0 + s * eps[b * n + j];
        target[b * n + j] = v_prediction ? a * eps[b * n + j] - s * z0 : eps[b * n + j];
      }
      shapes::Rng cr = shapes::Rng::for_example(op.seed ^ kCaptionStream, k, 0);
      const std::vector<int> tok = tokenizer.encode_padded(shapes::caption(cache.specs[size_t(idx[size_t(b)])],
                                                                                o.captions, cr), int(L));
      ids.insert(ids.end(), tok.begin(), tok.end());
    }

    zero_grad(params);
    CLIPTextModel::Saved ts;
    const Tensor context = text_encoder.forward(ids, B, ts);  // [B, L, D]
    UNet2DConditionModel::Saved us;
    const Tensor pred = unet.forward(noisy, timesteps, context, us);
    // loss = mean_b w_b mean_j (pred - target)^2;  d pred = 2 w_b (pred - target) / (B n)
    double loss_sum = 0;
    Tensor dpred = Tensor::empty(zshape);
    for (int64_t b = 0; b < B; ++b) {
      double se = 0;
      for (int64_t j = b * n; j < (b + 1) * n; ++j) {
        const float d = pred[j] - target[j];
        se += double(d) * d;
        dpred[j] = 2.0f * weights[size_t(b)] * d / float(B * n);
      }
      loss_sum += weights[size_t(b)] * se / double(n);
    }
    const float loss = float(loss_sum / double(B));
    const UNet2DConditionModel::Grad g = unet.backward(us, dpred);
    text_encoder.backward(ts, g.context);

    const double grad_norm = clip_grad_norm(params, op.max_grad_norm);
    opt.lr = schedule.lr(op.lr, step);
    opt.step(params);
    ema.step(params);
    log.step(step, loss, opt.lr, grad_norm);
    LDM_CHECK(std::isfinite(loss), "unet: the loss became ", loss, " at step ", step,
              "; lower --lr or --max-grad-norm and --resume from the last checkpoint");

    const bool last = step + 1 == op.steps;
    std::string extra;
    if ((step + 1) % op.sample_every == 0 || last) {
      const StableDiffusion sd = cpu_pipeline(ema_copy<CLIPTextModel>(ema, text_params, "text_model", tcfg),
                                              ema_copy<UNet2DConditionModel>(ema, unet_params, "", ucfg), vae, tokenizer,
                                              scfg);  // the EMA weights, for sampling
      char name[64];
      std::snprintf(name, sizeof name, "_samples_%06lld.png", (long long)(step + 1));
      extra = "samples: " + sample_grid(sd, o, train_dir + "/" + part + name);
    }
    if ((step + 1) % op.log_every == 0 || last || !extra.empty()) log.print(step, extra);
    if ((step + 1) % op.checkpoint_every == 0 || last)
      save_training_checkpoint(ckpt, params, step + 1, opt, &ema, &rng);
  }

  // The EMA weights are the model.
  ema.copy_to(params);
  const DType dtype = weights_dtype(o.dtype);
  save_weights(o.run + "/unet/diffusion_pytorch_model.safetensors", unet_params, dtype);
  save_weights(o.run + "/text_encoder/model.safetensors", text_params, dtype);
  std::fprintf(stderr, "unet: wrote %s/unet and %s/text_encoder (%s, EMA weights)\n", o.run.c_str(), o.run.c_str(),
               o.dtype.c_str());
}

}  // namespace

void add_train_unet(CLI::App& train) {
  static TrainUNetOptions o;
  o.optim.steps = 6000;
  o.optim.batch = 64;
  o.optim.lr = 1e-3;
  o.optim.warmup = 200;
  o.optim.sample_every = 500;
  o.optim.checkpoint_every = 500;
  auto* c = train.add_subcommand("unet", "Train the U-Net and text encoder of a run folder (its VAE trained, frozen)");
  c->add_option("--run", o.run, "run folder with the model's configs and a trained vae/")->required();
  add_optim_options(c, o.optim);
  c->add_option("--latent-cache", o.latent_cache, "dataset pictures whose VAE posteriors are cached")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(10000000)));
  c->add_option("--snr-gamma", o.snr_gamma, "Min-SNR-gamma loss weighting (0: plain MSE)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1000.0));
  c->add_option("--timestep-bias-strategy", o.timestep_bias.strategy,
                "practise some noise levels more (diffusers' --timestep_bias_strategy): later = the noisiest")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "later", "earlier", "range"}));
  c->add_option("--timestep-bias-multiplier", o.timestep_bias.multiplier, "weight of the biased timesteps")
      ->capture_default_str();
  c->add_option("--timestep-bias-portion", o.timestep_bias.portion, "later/earlier: the biased fraction of timesteps")
      ->capture_default_str();
  c->add_option("--timestep-bias-begin", o.timestep_bias.begin, "range: first biased timestep")->capture_default_str();
  c->add_option("--timestep-bias-end", o.timestep_bias.end, "range: one past the last biased timestep")
      ->capture_default_str();
  c->add_option("--timestep-bias-steps", o.timestep_bias_steps,
                "the bias holds for the first N steps, then every timestep is equally likely (0: all steps)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  c->add_option("--ema-decay", o.ema_decay, "decay of the weights' exponential moving average")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--empty-caption", o.captions.empty, "fraction of empty captions (for classifier-free guidance)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  c->add_option("--sample-count", o.sample_count, "pictures in each sample grid")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  c->add_option("--sample-steps", o.sample_steps, "sampling steps of the sample grids")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  c->add_option("--sample-guidance", o.sample_guidance, "guidance scale of the sample grids")->capture_default_str();
  c->add_option("--init-from", o.init_from,
                "fine-tune: start from this model folder's unet/ and text_encoder/ weights instead of random ones")
      ->check(CLI::ExistingDirectory);
  c->add_option("--dtype", o.dtype, "dtype of the final weights")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp16", "fp32"}));
  c->callback([] { run_train_unet(o); });
}

}  // namespace ldm::cli
