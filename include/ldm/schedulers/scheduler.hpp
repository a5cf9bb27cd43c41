// The sampler interface of the denoising loop: diffusers.schedulers.scheduling_utils.SchedulerMixin
// (set_timesteps / scale_model_input / step / add_noise), a factory by name, and the img2img
// timestep helper of diffusers.StableDiffusionImg2ImgPipeline.get_timesteps.
//
//   auto s = ldm::make_scheduler("dpm++2m", ldm::SchedulerConfig{});
//   s->set_timesteps(25);
//   Tensor x = noise * s->init_noise_sigma();
//   for (double t : s->timesteps()) x = s->step(unet(s->scale_model_input(x, t), t), t, x);
//
// Samplers keep state between steps (multistep history, Heun's half step, the step index),
// so one Scheduler runs one trajectory at a time; set_timesteps resets it.
#pragma once
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/core/random.hpp"
#include "ldm/core/tensor.hpp"
#include "ldm/schedulers/noise_schedule.hpp"

namespace ldm {

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config) : config_(config), schedule_(config) {}
  virtual ~Scheduler() = default;

  virtual std::string name() const = 0;  // the make_scheduler name
  // Timesteps per model evaluation slot: 2 for Heun (each step is listed twice), else 1.
  virtual int order() const { return 1; }

  // Builds the inference timesteps (and sigmas) and resets the sampler's state.
  virtual void set_timesteps(int num_inference_steps) = 0;
  // The timesteps to run, in order; each is passed back to scale_model_input/step/the U-Net.
  const std::vector<double>& timesteps() const { return timesteps_; }
  // Noise levels sigma_i of the sigma-parametrised samplers (one more than the timesteps,
  // the last 0); empty for DDPM, DDIM and PNDM.
  const std::vector<double>& sigmas() const { return sigmas_; }
  int num_inference_steps() const { return num_inference_steps_; }

  // Standard deviation of the initial latents: latents = randn * init_noise_sigma.
  virtual float init_noise_sigma() const { return 1.0f; }
  // The U-Net input for sample x at timestep t (x / sqrt(sigma^2 + 1) for the k-diffusion samplers).
  virtual Tensor scale_model_input(const Tensor& sample, double t) {
    (void)t;
    return sample;
  }
  // One denoising step: x_t -> x_{t-1} from the model output (epsilon or v). `gen` draws the
  // noise of the stochastic samplers (DDPM, Euler a, DDIM with eta > 0) and is ignored by the others.
  virtual Tensor step(const Tensor& model_output, double t, const Tensor& sample, Generator* gen = nullptr) = 0;
  // The forward process at timestep t (img2img / inpainting): noise `original` to level t.
  virtual Tensor add_noise(const Tensor& original, const Tensor& noise, double t) const = 0;

  // Starts the step counter at timesteps()[begin_index] (img2img, where the loop does not
  // begin at the first timestep; see get_timesteps).
  void set_begin_index(int begin_index) {
    LDM_CHECK(begin_index >= 0 && begin_index <= int(timesteps_.size()), name(), ": begin index ", begin_index,
              " outside the ", timesteps_.size(), " timesteps");
    begin_index_ = begin_index;
  }

  const SchedulerConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return schedule_; }

 protected:
  void require_timesteps(const char* what) const {
    LDM_CHECK(num_inference_steps_ > 0, name(), ": call set_timesteps() before ", what);
  }
  void reset_timesteps(int num_inference_steps) {
    num_inference_steps_ = num_inference_steps;
    step_index_ = -1;
    begin_index_ = -1;
  }
  // DDPM/DDIM/PNDM index alphas_cumprod by the timestep itself: it must be an integer in [0, T).
  int train_index(double t) const {
    LDM_CHECK(t == std::floor(t) && t >= 0 && t < config_.num_train_timesteps, name(), ": timestep ", t,
              " is not an integer in [0, ", config_.num_train_timesteps, ")");
    return int(t);
  }
  // Position of t in timesteps(): the second of duplicates, so an img2img start inside the
  // schedule does not skip a sigma (EulerDiscreteScheduler.index_for_timestep).
  int index_for_timestep(double t) const {
    std::vector<int> hits;
    for (size_t i = 0; i < timesteps_.size(); ++i)
      if (timesteps_[i] == t) hits.push_back(int(i));
    LDM_CHECK(!hits.empty(), name(), ": timestep ", t, " is not one of the scheduler's timesteps");
    return hits.size() > 1 ? hits[1] : hits[0];
  }
  // The same for the multistep solvers, whose schedules may repeat t: a timestep not in the
  // schedule means the last step (DPMSolverMultistepScheduler.index_for_timestep).
  int solver_index_for_timestep(double t) const {
    std::vector<int> hits;
    for (size_t i = 0; i < timesteps_.size(); ++i)
      if (timesteps_[i] == t) hits.push_back(int(i));
    if (hits.empty()) return int(timesteps_.size()) - 1;
    return hits.size() > 1 ? hits[1] : hits[0];
  }
  // The step counter of the sigma-based samplers, set on first use (_init_step_index).
  int current_step_index(double t) {
    require_timesteps("stepping");
    if (step_index_ < 0) step_index_ = begin_index_ >= 0 ? begin_index_ : index_for_timestep(t);
    LDM_CHECK(step_index_ < int(timesteps_.size()), name(), ": step called more often than there are timesteps (",
              timesteps_.size(), "); call set_timesteps() again to restart");
    return step_index_;
  }
  // The index add_noise uses: the running step, else the begin index, else t's position.
  int add_noise_index(double t) const {
    require_timesteps("add_noise");
    if (begin_index_ < 0) return index_for_timestep(t);
    return step_index_ >= 0 ? step_index_ : begin_index_;
  }
  static void check_step_shapes(const Tensor& model_output, const Tensor& sample, const std::string& who) {
    LDM_CHECK(model_output.shape() == sample.shape(), who, ": model output ", model_output.shape_str(),
              " does not match sample ", sample.shape_str());
  }
  bool v_prediction() const { return config_.prediction_type == "v_prediction"; }

  SchedulerConfig config_;
  NoiseSchedule schedule_;
  std::vector<double> timesteps_, sigmas_;
  int num_inference_steps_ = 0;
  int step_index_ = -1;   // -1: not started
  int begin_index_ = -1;  // -1: not set
};

// One creator per sampler, each defined in its header (all included at the end of this file).
inline std::unique_ptr<Scheduler> make_ddpm_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_ddim_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_pndm_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_lms_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_euler_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_euler_ancestral_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_heun_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_dpmpp_2m_scheduler(const SchedulerConfig& config);
inline std::unique_ptr<Scheduler> make_unipc_scheduler(const SchedulerConfig& config);

namespace detail {
// Every sampler: its short name (the CLI's), its diffusers class name, its factory. The one list.
struct SchedulerEntry {
  const char* name;
  const char* class_name;
  std::unique_ptr<Scheduler> (*make)(const SchedulerConfig&);
};
inline const std::vector<SchedulerEntry>& scheduler_table() {
  static const std::vector<SchedulerEntry> table = {
      {"pndm", "PNDMScheduler", make_pndm_scheduler},
      {"ddim", "DDIMScheduler", make_ddim_scheduler},
      {"ddpm", "DDPMScheduler", make_ddpm_scheduler},
      {"lms", "LMSDiscreteScheduler", make_lms_scheduler},
      {"euler", "EulerDiscreteScheduler", make_euler_scheduler},
      {"euler-a", "EulerAncestralDiscreteScheduler", make_euler_ancestral_scheduler},
      {"heun", "HeunDiscreteScheduler", make_heun_scheduler},
      {"dpm++2m", "DPMSolverMultistepScheduler", make_dpmpp_2m_scheduler},
      {"unipc", "UniPCMultistepScheduler", make_unipc_scheduler},
  };
  return table;
}
}  // namespace detail

inline const std::vector<std::string>& scheduler_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& e : detail::scheduler_table()) v.push_back(e.name);
    return v;
  }();
  return names;
}

// The short names joined by `sep`: "pndm|ddim|..." for a command line's help, ", " for errors.
inline std::string scheduler_names_joined(const std::string& sep) {
  std::string s;
  for (const auto& n : scheduler_names()) s += (s.empty() ? "" : sep) + n;
  return s;
}

// A sampler by name (scheduler_names()) or by its diffusers class name ("PNDMScheduler", as in
// a model folder's scheduler/scheduler_config.json "_class_name").
inline std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const SchedulerConfig& config) {
  for (const auto& e : detail::scheduler_table())
    if (name == e.name || name == e.class_name) return e.make(config);
  LDM_FAIL("unknown scheduler \"", name, "\"; valid names: ", scheduler_names_joined(", "));
}

// The short name of a diffusers scheduler class ("EulerDiscreteScheduler" -> "euler"), or "" for
// a class ldm.cpp does not implement.
inline std::string scheduler_name_of_class(const std::string& class_name) {
  for (const auto& e : detail::scheduler_table())
    if (class_name == e.class_name) return e.name;
  return "";
}

// img2img: the tail of the schedule that starts at noise level `strength` (1 = from pure
// noise), as StableDiffusionImg2ImgPipeline.get_timesteps. Also sets the scheduler's begin
// index. Returns the timesteps to run; add_noise the init latents at the first of them.
inline std::vector<double> get_timesteps(Scheduler& scheduler, int num_inference_steps, double strength) {
  LDM_CHECK(strength >= 0.0 && strength <= 1.0, "img2img: strength must be in [0, 1], got ", strength);
  LDM_CHECK(scheduler.num_inference_steps() == num_inference_steps, "img2img: call set_timesteps(",
            num_inference_steps, ") on the scheduler first");
  const int init_timestep = std::min(int(double(num_inference_steps) * strength), num_inference_steps);
  const int t_start = std::max(num_inference_steps - init_timestep, 0);
  const std::vector<double>& all = scheduler.timesteps();
  const size_t first = std::min(size_t(t_start) * size_t(scheduler.order()), all.size());
  scheduler.set_begin_index(int(first));
  return std::vector<double>(all.begin() + std::ptrdiff_t(first), all.end());
}

}  // namespace ldm

#include "ldm/schedulers/ddim.hpp"
#include "ldm/schedulers/ddpm.hpp"
#include "ldm/schedulers/dpmpp_2m.hpp"
#include "ldm/schedulers/euler.hpp"
#include "ldm/schedulers/euler_ancestral.hpp"
#include "ldm/schedulers/heun.hpp"
#include "ldm/schedulers/lms.hpp"
#include "ldm/schedulers/pndm.hpp"
#include "ldm/schedulers/unipc.hpp"
