// Which noise levels a training step practises: the timestep distribution of diffusers' training
// scripts' --timestep_bias_strategy (train_text_to_image_sdxl.py, generate_timestep_weights):
//   weights[t] = 1, times `multiplier` for t in the biased slice, normalised:
//     none     no bias: t ~ U{0, ..., T - 1}
//     later    the last `portion` of the timesteps (the noisiest; where the layout is decided)
//     earlier  the first `portion` (the least noisy; fine detail)
//     range    [begin, end)
// A draw maps one uniform number u in [0, 1) through the cumulative weights.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "ldm/core/error.hpp"

namespace ldm {

struct TimestepBias {
  std::string strategy = "none";  // none | later | earlier | range
  double multiplier = 1.0;        // > 0; 2 doubles the slice's weight, 0.5 halves it
  double portion = 0.25;          // later / earlier: the slice's fraction of the timesteps
  int begin = 0, end = 1000;      // range: the slice [begin, end)

  // The normalised weights of t = 0 .. T-1.
  std::vector<double> weights(int T) const {
    LDM_CHECK(T >= 1, "timestep bias: the schedule has no timesteps");
    std::vector<double> w(size_t(T), 1.0);
    if (strategy == "none") return normalised(w);
    LDM_CHECK(multiplier > 0.0, "--timestep-bias-multiplier must be positive, got ", multiplier);
    int lo = 0, hi = T;
    const int n = std::clamp(int(portion * T), 0, T);
    if (strategy == "later") {
      lo = T - n;
    } else if (strategy == "earlier") {
      hi = n;
    } else if (strategy == "range") {
      LDM_CHECK(begin >= 0 && begin < end && end <= T, "--timestep-bias-begin/end must give 0 <= begin < end <= ", T,
                ", got ", begin, " and ", end);
      lo = begin, hi = end;
    } else {
      LDM_FAIL("--timestep-bias-strategy must be none, later, earlier or range, got '", strategy, "'");
    }
    LDM_CHECK(strategy == "range" || (portion > 0.0 && portion <= 1.0),
              "--timestep-bias-portion must be in (0, 1], got ", portion);
    for (int t = lo; t < hi; ++t) w[size_t(t)] *= multiplier;
    return normalised(w);
  }

 private:
  static std::vector<double> normalised(std::vector<double> w) {
    double sum = 0;
    for (double x : w) sum += x;
    for (double& x : w) x /= sum;
    return w;
  }
};

// Draws timesteps from weights: t = the first index whose cumulative weight exceeds u.
class TimestepSampler {
 public:
  explicit TimestepSampler(const std::vector<double>& weights) : cumulative_(weights.size()) {
    double c = 0;
    for (size_t t = 0; t < weights.size(); ++t) cumulative_[t] = c += weights[t];
  }
  int operator()(double u) const {  // u in [0, 1)
    const double x = u * cumulative_.back();
    const auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), x);
    return int(std::min<ptrdiff_t>(it - cumulative_.begin(), ptrdiff_t(cumulative_.size()) - 1));
  }

 private:
  std::vector<double> cumulative_;
};

}  // namespace ldm
