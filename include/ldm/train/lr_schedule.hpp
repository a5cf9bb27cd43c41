// Learning rate: linear warm-up, then a cosine decay to a floor. With min_lr_ratio = 0 this is
// diffusers' get_cosine_schedule_with_warmup (optimization.py); with a floor it is
// transformers' get_cosine_with_min_lr_schedule_with_warmup (min_lr_rate). As torch's LambdaLR,
// the rate of optimizer step k (k = 0, 1, ...: the number of steps taken before it) is
//   base_lr * k / warmup                                             k < warmup
//   base_lr * (floor + (1 - floor) * 0.5 (1 + cos(2 pi num_cycles p)))   p = (k - warmup) / (total - warmup)
// so the first step of a warm-up has rate 0, exactly as a diffusers training script. The rate is
// a pure function of k: resuming needs only the step count.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ldm {

struct CosineScheduleWithWarmup {
  int64_t num_warmup_steps = 0;
  int64_t num_training_steps = 1;
  double num_cycles = 0.5;    // half a cosine: from 1 down to the floor
  double min_lr_ratio = 0.0;  // the floor, as a fraction of the base rate

  // The multiplier of the base rate at step k (LambdaLR's lr_lambda).
  double lr_lambda(int64_t k) const {
    if (k < num_warmup_steps) return double(k) / double(std::max<int64_t>(1, num_warmup_steps));
    const double progress =
        double(k - num_warmup_steps) / double(std::max<int64_t>(1, num_training_steps - num_warmup_steps));
    const double cosine = 0.5 * (1.0 + std::cos(M_PI * num_cycles * 2.0 * progress));
    return std::max(0.0, cosine * (1.0 - min_lr_ratio) + min_lr_ratio);
  }
  double lr(double base_lr, int64_t k) const { return base_lr * lr_lambda(k); }
};

}  // namespace ldm
