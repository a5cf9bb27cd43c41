// `ldm train vae`: trains the AutoencoderKL of a run folder from scratch on the shapes dataset
// (ldm/data/shapes.hpp), as the LDM paper's first stage without its GAN and LPIPS terms:
//   posterior = encode(x);  z = mean + std * noise;  x' = decode(z)
//   loss = mean |x' - x| + mean (x' - x)^2 + kl_weight * KL(posterior || N(0, I)) / (3 H W)
//          + isotropy_weight * |S - I|^2
// (KL per image, summed over the latent, as diffusers' kl(); divided by the pixels so that
// kl_weight weighs it against the per-pixel terms as SD's 1e-6 weighed it against their sums.
// The last term, off by default, asks the batch's latent pixels for an isotropic covariance:
// train/latent_isotropy.hpp says why.)
// --decoder-only fine-tunes the decoder (and post_quant_conv) of RUN/vae's trained weights with
// the encoder frozen, as SD's ft-MSE decoder was fine-tuned: the latents do not change, so a
// U-Net trained on them keeps working, and the pictures get sharper (loss = L1 + L2 only).
// At the end: PSNR on --eval-images held-out images, the latents' standard deviation ->
// scaling_factor = 1 / std in RUN/vae/config.json (SD1.5's 0.18215 came the same way), and the
// weights in RUN/vae/diffusion_pytorch_model.safetensors (fp16 by default: what ships).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ldm/core/memory.hpp"
#include "ldm/core/rng_ldm.hpp"
#include "ldm/data/shapes.hpp"
#include "ldm/models/vae.hpp"
#include "ldm/nn/losses.hpp"
#include "ldm/train/adamw.hpp"
#include "ldm/train/checkpoint.hpp"
#include "ldm/train/clip_grad.hpp"
#include "ldm/train/init_weights.hpp"
#include "ldm/train/latent_isotropy.hpp"
#include "ldm/train/lr_schedule.hpp"
#include "ldm/viz/canvas.hpp"
#include "train_common.hpp"
#include "train_log.hpp"

namespace ldm::cli {
namespace {

struct TrainVAEOptions {
  std::string run;
  OptimOptions optim;
  double kl_weight = 1e-6;
  double isotropy_weight = 0;  // of latent_isotropy_loss on the posterior means
  int64_t eval_images = 500;
  bool eval_only = false;  // load RUN/vae weights, report PSNR and latent std, train nothing
  bool decoder_only = false;  // fine-tune RUN/vae's decoder, its encoder (the latent space) frozen
  std::string dtype = "fp16";  // of the final weights (the U-Net then trains on what ships)
};

// Held-out images come from another seed of the same generator: never seen in training.
constexpr uint64_t kEvalSeedOffset = 1000003;

Tensor shapes_batch(uint64_t seed, int64_t first, int64_t n) {
  std::vector<shapes::Example> ex;
  for (int64_t i = 0; i < n; ++i) ex.push_back(shapes::example(seed, first + i));
  return shapes::to_vae_input(ex);  // [n, 3, 64, 64] in [-1, 1]
}

// Per-image PSNR (dB) of x' against x, both [B, 3, H, W] in [-1, 1], on the [0, 1] scale
// after clamping, as the images are saved.
std::vector<double> psnr_per_image(const Tensor& x, const Tensor& xr) {
  const int64_t B = x.dim(0), n = x.numel() / B;
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b) {
    double se = 0;
    for (int64_t i = b * n; i < (b + 1) * n; ++i) {
      const double d = std::clamp(xr[i] * 0.5 + 0.5, 0.0, 1.0) - (x[i] * 0.5 + 0.5);
      se += d * d;
    }
    out.push_back(10.0 * std::log10(1.0 / std::max(se / double(n), 1e-12)));
  }
  return out;
}

struct Evaluation {
  double psnr = 0;        // mean over images
  double latent_std = 0;  // of the posterior means, all elements
  // Standard deviations of the posterior means along their principal directions (the square
  // roots of the eigenvalues of the channels' covariance over all latent pixels), largest
  // first. An encoder that puts everything in one direction (a colour as one number on a
  // line from black to white) leaves the U-Net neighbours to confuse: see docs/training.md.
  std::vector<double> direction_std;
  // (sum of eigenvalues)^2 / sum of squares: 1 when one direction holds all the variance,
  // C when all C latent channels hold the same.
  double effective_directions = 0;
};

// direction_std and effective_directions from the sums of the latent pixels (s1 [C]) and of
// their outer products (s2 [C, C]) over m pixels.
void latent_spectrum(const Eigen::VectorXd& s1, const Eigen::MatrixXd& s2, int64_t m, Evaluation& e) {
  const Eigen::VectorXd mean = s1 / double(m);
  const Eigen::MatrixXd cov = s2 / double(m) - mean * mean.transpose();
  const Eigen::VectorXd ev = Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(cov).eigenvalues().cwiseMax(0.0);
  for (int64_t i = ev.size() - 1; i >= 0; --i) e.direction_std.push_back(std::sqrt(ev[i]));
  e.effective_directions = ev.squaredNorm() > 0 ? ev.sum() * ev.sum() / ev.squaredNorm() : 0.0;
}

std::string spectrum_str(const Evaluation& e) {
  std::string out;
  char buf[32];
  for (double d : e.direction_std) std::snprintf(buf, sizeof buf, "%s%.3g", out.empty() ? "" : " ", d), out += buf;
  std::snprintf(buf, sizeof buf, " (%.2f effective)", e.effective_directions);
  return out + buf;
}

Evaluation evaluate(const AutoencoderKL& vae, uint64_t seed, int64_t count) {
  double psnr_sum = 0, s1 = 0, s2 = 0;
  int64_t m = 0;
  const int64_t C = vae.config.latent_channels;
  Eigen::VectorXd pixel_sum = Eigen::VectorXd::Zero(C);        // [C]
  Eigen::MatrixXd pixel_outer_sum = Eigen::MatrixXd::Zero(C, C);  // [C, C]
  int64_t pixels = 0;
  for (int64_t first = 0; first < count; first += 50) {
    const Tensor x = shapes_batch(seed + kEvalSeedOffset, first, std::min<int64_t>(50, count - first));
    const DiagonalGaussian post = vae.encode(x);  // mean [B, C, h, w]
    for (double p : psnr_per_image(x, vae.decode(post.mean))) psnr_sum += p;
    for (float v : post.mean) s1 += v, s2 += double(v) * v, ++m;
    const int64_t B = post.mean.dim(0), hw = post.mean.numel() / (B * C);
    for (int64_t b = 0; b < B; ++b) {
      // one image's latent pixels as columns: [C, hw]
      const Eigen::MatrixXd z = post.mean.slice0(b, b + 1).matrix(C, hw).cast<double>();
      pixel_sum += z.rowwise().sum();
      pixel_outer_sum += z * z.transpose();
      pixels += hw;
    }
  }
  const double mean = s1 / double(m);
  Evaluation e{psnr_sum / double(count), std::sqrt(std::max(0.0, s2 / double(m) - mean * mean)), {}, 0};
  latent_spectrum(pixel_sum, pixel_outer_sum, pixels, e);
  return e;
}

// Originals (top) and reconstructions (below) of 8 held-out images, x2, with their PSNR.
void save_reconstructions(const AutoencoderKL& vae, uint64_t seed, const std::string& path) {
  const Tensor x = shapes_batch(seed + kEvalSeedOffset, 0, 8);
  const Tensor xr = vae.decode(vae.encode(x).mean);
  const std::vector<double> psnr = psnr_per_image(x, xr);
  std::vector<viz::Canvas> tiles;
  std::vector<std::string> captions;
  auto to01 = [](Tensor t) {
    for (float& v : t) v = std::clamp(v * 0.5f + 0.5f, 0.0f, 1.0f);
    return t;
  };
  for (int64_t b = 0; b < 8; ++b) tiles.push_back(viz::picture(to01(x.slice0(b, b + 1).clone()), 2)), captions.push_back("input");
  for (int64_t b = 0; b < 8; ++b) {
    tiles.push_back(viz::picture(to01(xr.slice0(b, b + 1).clone()), 2));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f dB", psnr[size_t(b)]);
    captions.push_back(buf);
  }
  viz::grid(tiles, captions, 8).save(path);
}

void run_train_vae(const TrainVAEOptions& o) {
  keep_freed_memory();  // every step frees and allocates the same tensors: no fresh pages each time
  const OptimOptions& op = o.optim;
  const nlohmann::json config_json = run_config(o.run, "vae");
  const VAEConfig cfg = VAEConfig::from_json(config_json, o.run + "/vae/config.json");
  const std::string train_dir = o.run + "/train";
  const std::string weights = o.run + "/vae/diffusion_pytorch_model.safetensors";
  if (!o.eval_only) make_folder(train_dir);  // --eval-only writes nothing (it may read a shipped model folder)
  LDM_CHECK(o.isotropy_weight == 0 || op.batch >= 2, "--isotropy-weight compares the latents of the pictures of a "
            "batch: it needs --batch 2 or more, got ", op.batch);
  const bool from_weights = o.eval_only || o.decoder_only;
  if (from_weights)
    LDM_CHECK(path_exists(weights), "'", weights, "' does not exist: ",
              o.eval_only ? "--eval-only evaluates" : "--decoder-only fine-tunes", " a trained VAE (ldm train vae --run ",
              o.run, " first)");
  // The part being trained: names its checkpoint, loss curve and sample grids.
  const std::string part = op.part(o.decoder_only ? "vae_decoder" : "vae");
  const std::string ckpt = train_dir + "/" + part + "_checkpoint.safetensors";

  AutoencoderKL vae;
  {
    std::shared_ptr<const WeightSource> src = std::make_shared<InitSource>(op.seed);
    if (from_weights) src = std::make_shared<SafeTensorsSource>(weights);
    WeightStore w(src);
    vae.load(w, "", cfg);
    w.finish();
  }
  if (o.eval_only) {
    const Evaluation e = evaluate(vae, op.seed, o.eval_images);
    std::fprintf(stderr, "vae: PSNR %.2f dB on %lld held-out images; latent std %.4f (scaling_factor %.5f)\n", e.psnr,
                 (long long)o.eval_images, e.latent_std, 1.0 / e.latent_std);
    std::fprintf(stderr, "vae: latent std along its principal directions %s\n", spectrum_str(e).c_str());
    return;
  }
  const std::vector<Parameter> all_params = parameters_of(vae);  // what the weights file holds
  std::vector<Parameter> params =                                // what this run trains
      o.decoder_only ? parameters_under(all_params, AutoencoderKL::decoder_prefixes()) : all_params;
  if (from_weights) make_writable(params);
  int64_t n_params = 0;
  for (const Parameter& p : params) n_params += p.value->numel();
  if (o.decoder_only)
    std::fprintf(stderr, "vae: fine-tuning the decoder of %s, the encoder frozen (PSNR before: %.2f dB)\n",
                 weights.c_str(), evaluate(vae, op.seed, o.eval_images).psnr);

  AdamW opt;
  opt.weight_decay = op.weight_decay;
  LdmGenerator rng(op.seed + 1);  // the posterior samples' noise
  int64_t step = 0;
  if (op.resume) {
    LDM_CHECK(path_exists(ckpt), "--resume: no checkpoint '", ckpt, "' to resume from");
    step = load_training_checkpoint(ckpt, params, opt, nullptr, &rng);
    std::fprintf(stderr, "vae: resumed from %s at step %lld\n", ckpt.c_str(), (long long)step);
  }
  const CosineScheduleWithWarmup schedule{op.warmup, op.steps, 0.5, op.min_lr_ratio};
  std::fprintf(stderr, "vae: %lld parameters (%.2f M), %lld steps of batch %lld, lr %.2g, run folder %s\n",
               (long long)n_params, double(n_params) / 1e6, (long long)op.steps, (long long)op.batch, op.lr,
               o.run.c_str());
  TrainLog log(train_dir, part, op.steps, step);

  for (; step < op.steps; ++step) {
    const Tensor x = shapes_batch(op.seed, step * op.batch, op.batch);  // [B, 3, 64, 64]
    const int64_t B = x.dim(0);
    zero_grad(params);
    AutoencoderKL::EncodeSaved es;
    // The frozen encoder keeps nothing for a backward.
    const DiagonalGaussian post = o.decoder_only ? vae.encode(x) : vae.encode(x, es);
    const Tensor noise = rng.randn(post.mean.shape());
    AutoencoderKL::DecodeSaved ds;
    const Tensor xr = vae.decode(post.sample(noise), ds);  // [B, 3, 64, 64]

    // loss = mean |x' - x| + mean (x' - x)^2 + kl_weight * mean_b KL_b / pixels (no KL term for a frozen encoder)
    const double pixels = double(x.numel() / B);
    double kl_mean = 0;
    if (!o.decoder_only)
      for (float v : post.kl()) kl_mean += v / double(B);  // post.kl(): [B]
    const bool isotropy = !o.decoder_only && o.isotropy_weight > 0;
    const float loss = float(l1_loss(xr, x) + mse_loss(xr, x) + o.kl_weight * kl_mean / pixels +
                             (isotropy ? o.isotropy_weight * latent_isotropy_loss(post.mean) : 0.0));

    Tensor dxr = l1_loss_backward(xr, x);
    add_(dxr, mse_loss_backward(xr, x));
    const Tensor dz = vae.decode_backward(ds, dxr);
    if (!o.decoder_only) {
      DiagonalGaussian::Grad g = post.sample_backward(noise, dz);
      const DiagonalGaussian::Grad gk = post.kl_backward(Tensor::full({B}, float(o.kl_weight / (pixels * double(B)))));
      add_(g.mean, gk.mean);
      add_(g.logvar, gk.logvar);
      if (isotropy) add_(g.mean, latent_isotropy_loss_backward(post.mean, float(o.isotropy_weight)));
      vae.encode_backward(es, g);
    }

    const double grad_norm = clip_grad_norm(params, op.max_grad_norm);
    opt.lr = schedule.lr(op.lr, step);
    opt.step(params);
    log.step(step, loss, opt.lr, grad_norm);
    LDM_CHECK(std::isfinite(loss), "vae: the loss became ", loss, " at step ", step,
              "; lower --lr or --max-grad-norm and --resume from the last checkpoint");

    const bool last = step + 1 == op.steps;
    if ((step + 1) % op.log_every == 0 || last) log.print(step);
    if ((step + 1) % op.sample_every == 0 || last) {
      char name[64];
      std::snprintf(name, sizeof name, "_samples_%06lld.png", (long long)(step + 1));
      save_reconstructions(vae, op.seed, train_dir + "/" + part + name);
    }
    if ((step + 1) % op.checkpoint_every == 0 || last)
      save_training_checkpoint(ckpt, params, step + 1, opt, nullptr, &rng);
  }

  const Evaluation e = evaluate(vae, op.seed, o.eval_images);
  if (!o.decoder_only) {  // a fine-tuned decoder keeps the latent space, and so its scaling_factor
    nlohmann::json out = config_json;
    out["scaling_factor"] = 1.0 / e.latent_std;
    std::ofstream f(o.run + "/vae/config.json");
    f << out.dump(2) << "\n";
    LDM_CHECK(f.good(), "cannot write '", o.run, "/vae/config.json'");
  }
  save_weights(weights, all_params, weights_dtype(o.dtype));
  std::fprintf(stderr, "vae: PSNR %.2f dB on %lld held-out images; latent std %.4f -> scaling_factor %.5f%s; wrote %s\n",
               e.psnr, (long long)o.eval_images, e.latent_std, o.decoder_only ? cfg.scaling_factor : 1.0 / e.latent_std,
               o.decoder_only ? " (kept: the encoder is unchanged)" : "", weights.c_str());
  std::fprintf(stderr, "vae: latent std along its principal directions %s\n", spectrum_str(e).c_str());
}

}  // namespace

void add_train_vae(CLI::App& train) {
  static TrainVAEOptions o;
  o.optim.steps = 1500;
  o.optim.batch = 32;
  o.optim.lr = 1e-3;
  auto* c = train.add_subcommand("vae", "Train the VAE of a run folder from scratch on the shapes dataset");
  c->add_option("--run", o.run, "run folder: a diffusers folder with the model's configs (cp -r configs/ldm-shapes RUN)")
      ->required();
  add_optim_options(c, o.optim);
  c->add_option("--kl-weight", o.kl_weight, "weight of the KL term (per pixel)")->capture_default_str();
  c->add_option("--isotropy-weight", o.isotropy_weight,
                "weight of a penalty asking the latent pixels' covariance to be isotropic, every latent direction "
                "used alike (0: off, as SD's VAE; docs/training.md)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  c->add_option("--eval-images", o.eval_images, "held-out images for the final PSNR and latent std")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(100000)));
  c->add_option("--dtype", o.dtype, "dtype of the final weights")
      ->capture_default_str()
      ->check(CLI::IsMember({"fp16", "fp32"}));
  c->add_flag("--eval-only", o.eval_only, "only evaluate RUN/vae's weights (PSNR, latent std)");
  c->add_flag("--decoder-only", o.decoder_only,
              "fine-tune the decoder of RUN/vae's trained weights, the encoder frozen (the latents, and a U-Net "
              "trained on them, stay valid)");
  c->callback([] { run_train_vae(o); });
}

}  // namespace ldm::cli
