// The order in which a training run visits its dataset: every epoch a fresh shuffle of the
// indices [0, n), a pure function of (seed, epoch), so a run is reproducible and resumes at any
// step from the step count alone (no sampler state to save).
//
// Definition: epoch e's order is a Fisher-Yates shuffle of 0..n-1 (for i = n-1 down to 1, swap
// i with j, a uniform integer in [0, i]), where swap i takes
//   (x0, x1, ...) = Philox4x32-10(counter = {i, e mod 2^32, e div 2^32, 0xDA7A}, key = seed)
//   j = ((x0 << 32 | x1) * (i + 1)) >> 64
// (the counter's last word keeps this stream apart from LdmGenerator's noise for the same seed;
// the multiply-shift's bias, (i + 1) / 2^64, is far below anything a dataset can show).
// Batches read the epochs' orders one after another: batch k holds positions
// k * batch_size ... (k + 1) * batch_size - 1 of that endless sequence, so a batch can straddle
// two epochs and no sample is dropped.
#pragma once
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "ldm/core/error.hpp"
#include "ldm/core/rng_philox.hpp"

namespace ldm {

struct DataOrder {
  int64_t dataset_size = 0;
  uint64_t seed = 0;

  DataOrder(int64_t size, uint64_t order_seed) : dataset_size(size), seed(order_seed) {
    LDM_CHECK(dataset_size > 0, "DataOrder: the dataset is empty; a training run needs at least one sample");
  }

  // A permutation of [0, dataset_size).
  std::vector<int64_t> epoch_order(int64_t epoch) const {
    std::vector<int64_t> order(static_cast<size_t>(dataset_size));
    std::iota(order.begin(), order.end(), int64_t(0));
    const PhiloxKey key = philox_key(seed);
    const uint64_t e = uint64_t(epoch);
    for (int64_t i = dataset_size - 1; i >= 1; --i) {
      const PhiloxCounter x = philox4x32_10({uint32_t(i), uint32_t(e), uint32_t(e >> 32), 0xDA7Au}, key);
      const uint64_t r = (uint64_t(x[0]) << 32) | x[1];
      const int64_t j = int64_t((unsigned __int128)r * uint64_t(i + 1) >> 64);
      std::swap(order[size_t(i)], order[size_t(j)]);
    }
    return order;
  }

  // The dataset indices of batch `step` (0-based).
  std::vector<int64_t> batch(int64_t step, int64_t batch_size) const {
    LDM_CHECK(step >= 0 && batch_size > 0, "DataOrder::batch: step ", step, " and batch size ", batch_size,
              " must be >= 0 and > 0");
    std::vector<int64_t> indices;
    std::vector<int64_t> order;
    int64_t epoch = -1;
    for (int64_t pos = step * batch_size; pos < (step + 1) * batch_size; ++pos) {
      if (pos / dataset_size != epoch) order = epoch_order(epoch = pos / dataset_size);
      indices.push_back(order[size_t(pos % dataset_size)]);
    }
    return indices;
  }
};

}  // namespace ldm
