// Training checkpoints: everything a run needs to continue exactly where it stopped, in one
// safetensors file.
//   <name>              the weights, under their checkpoint names (the file loads as a model)
//   adamw.m.<name>      AdamW's exp_avg, adamw.v.<name> its exp_avg_sq, adamw.step.<name> (I64 [1])
//                       its step count, for each parameter the optimizer has updated
//   ema.<name>          the EMA weights, when an EMAModel is given
//   __metadata__        "step" (optimizer steps taken: the LR schedule's and the data order's
//                       position, train/lr_schedule.hpp, train/data_order.hpp), the AdamW and
//                       EMA settings, and "rng.seed" / "rng.offset" of the run's LdmGenerator
// Numbers in the metadata are written with 17 significant digits, so they read back exactly.
// Gradients are not saved: a step starts from zeroed gradients.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

#include "ldm/core/rng_ldm.hpp"
#include "ldm/core/safetensors.hpp"
#include "ldm/train/adamw.hpp"
#include "ldm/train/ema.hpp"
#include "ldm/train/parameter.hpp"

namespace ldm {

namespace detail {
inline std::string exact_str(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}
inline const std::string& checkpoint_meta(const SafeTensors& f, const std::string& key) {
  auto it = f.metadata().find(key);
  LDM_CHECK(it != f.metadata().end(), "training checkpoint '", f.path(), "' has no metadata \"", key,
            "\"; it was not written by save_training_checkpoint");
  return it->second;
}
inline double checkpoint_number(const SafeTensors& f, const std::string& key) {
  const std::string& s = checkpoint_meta(f, key);
  try {
    return std::stod(s);
  } catch (const std::exception&) {
    LDM_FAIL("training checkpoint '", f.path(), "': metadata \"", key, "\" is \"", s, "\", not a number");
  }
}
inline uint64_t checkpoint_count(const SafeTensors& f, const std::string& key) {
  const std::string& s = checkpoint_meta(f, key);
  try {
    LDM_CHECK(s.find('-') == std::string::npos, "negative");
    return std::stoull(s);
  } catch (const std::exception&) {
    LDM_FAIL("training checkpoint '", f.path(), "': metadata \"", key, "\" is \"", s, "\", not a count >= 0");
  }
}
// Tensor `name` as an owned copy; it must have `shape`, the model's.
inline Tensor load_shaped(const SafeTensors& f, const std::string& name, const Shape& shape) {
  LDM_CHECK(f.contains(name), "training checkpoint '", f.path(), "' has no tensor '", name,
            "'; was it saved from a different model, or without this optimizer / EMA?");
  LDM_CHECK(f.info(name).shape == shape, "training checkpoint '", f.path(), "': tensor '", name, "' has shape ",
            shape_str(f.info(name).shape), " but the model's is ", shape_str(shape));
  return f.load(name);
}
}  // namespace detail

// ema and rng may be null when the run has none.
inline void save_training_checkpoint(const std::string& path, const std::vector<Parameter>& params, int64_t step,
                                     const AdamW& optimizer, const EMAModel* ema, const LdmGenerator* rng) {
  using detail::exact_str;
  SafeTensorsWriter w;
  for (const Parameter& p : params) w.add(p.name, p.as_stored(*p.value));
  for (const Parameter& p : params) {
    auto it = optimizer.state.find(p.name);
    if (it == optimizer.state.end()) continue;  // never updated: no gradient has reached it yet
    w.add("adamw.m." + p.name, p.as_stored(it->second.exp_avg));
    w.add("adamw.v." + p.name, p.as_stored(it->second.exp_avg_sq));
    w.add_i64("adamw.step." + p.name, {1}, {it->second.step});
  }
  w.set_metadata("step", std::to_string(step));
  w.set_metadata("adamw.lr", exact_str(optimizer.lr));
  w.set_metadata("adamw.beta1", exact_str(optimizer.beta1));
  w.set_metadata("adamw.beta2", exact_str(optimizer.beta2));
  w.set_metadata("adamw.eps", exact_str(optimizer.eps));
  w.set_metadata("adamw.weight_decay", exact_str(optimizer.weight_decay));
  if (ema) {
    for (const Parameter& p : params) {
      auto it = ema->shadow_params.find(p.name);
      if (it != ema->shadow_params.end()) w.add("ema." + p.name, p.as_stored(it->second));
    }
    w.set_metadata("ema.decay", exact_str(ema->decay));
    w.set_metadata("ema.min_decay", exact_str(ema->min_decay));
    w.set_metadata("ema.update_after_step", std::to_string(ema->update_after_step));
    w.set_metadata("ema.warmup", ema->warmup ? "1" : "0");
    w.set_metadata("ema.optimization_step", std::to_string(ema->optimization_step));
  }
  if (rng) {
    w.set_metadata("rng.seed", std::to_string(rng->seed()));
    w.set_metadata("rng.offset", std::to_string(rng->offset()));
  }
  w.save(path);
}

// Restores what save_training_checkpoint wrote into the model's parameters (replaced by owned
// copies of the saved weights), the optimizer, the EMA and the generator; returns the step.
inline int64_t load_training_checkpoint(const std::string& path, const std::vector<Parameter>& params,
                                        AdamW& optimizer, EMAModel* ema, LdmGenerator* rng) {
  const SafeTensors f(path);
  auto integer = [&](const std::string& key) { return int64_t(detail::checkpoint_count(f, key)); };
  auto number = [&](const std::string& key) { return detail::checkpoint_number(f, key); };
  const int64_t step = integer("step");
  optimizer.lr = number("adamw.lr");
  optimizer.beta1 = number("adamw.beta1");
  optimizer.beta2 = number("adamw.beta2");
  optimizer.eps = number("adamw.eps");
  optimizer.weight_decay = number("adamw.weight_decay");
  optimizer.state.clear();
  // Stored in the checkpoint's shape (Parameter::stored), used in the value's.
  auto load = [&](const Parameter& p, const std::string& name) {
    return detail::load_shaped(f, name, p.checkpoint_shape()).reshape(p.value->shape());
  };
  for (const Parameter& p : params) {
    *p.value = load(p, p.name);
    if (!f.contains("adamw.step." + p.name)) continue;
    optimizer.state[p.name] = {load(p, "adamw.m." + p.name), load(p, "adamw.v." + p.name),
                               f.load_i64("adamw.step." + p.name).at(0)};
  }
  if (ema) {
    ema->decay = number("ema.decay");
    ema->min_decay = number("ema.min_decay");
    ema->update_after_step = integer("ema.update_after_step");
    ema->warmup = integer("ema.warmup") != 0;
    ema->optimization_step = integer("ema.optimization_step");
    ema->shadow_params.clear();
    for (const Parameter& p : params) {
      if (f.contains("ema." + p.name))
        ema->shadow_params[p.name] = load(p, "ema." + p.name);
    }
  }
  if (rng) {
    rng->manual_seed(detail::checkpoint_count(f, "rng.seed"));
    rng->set_offset(detail::checkpoint_count(f, "rng.offset"));
  }
  return step;
}

}  // namespace ldm
