// Where a forward pass spends its time, op by op. While an OpProfile is installed on the calling
// thread (OpProfile::Scope), the nn modules time each call (Conv2d, Linear, attention, GroupNorm,
// LayerNorm, GEGLU) and add it up under (op, shape), with the FLOPs it did:
//
//   OpProfile profile;
//   { OpProfile::Scope on(profile); unet.forward(x, t, context); }
//   std::fputs(profile.table(step_seconds, gemm_gflops).c_str(), stdout);
//
// Without a Scope an op pays one test of a thread-local pointer. The modules run their work on
// all cores from the calling thread, so the time an op keeps that thread is its wall time.
// Ops that are not timed (element-wise adds, copies, the timestep embedding) show up as the
// table's "not in an op" row: the step's time minus the timed ops'.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ldm {

class OpProfile {
 public:
  struct Entry {
    std::string op;     // "conv3x3 f43", "linear", "attention", "group_norm+silu", ...
    std::string shape;  // "[2, 320, 64, 64] -> 320"
    int64_t calls = 0;
    double seconds = 0, flops = 0;  // summed over the calls; FLOPs 2 per multiply-add, 0 for norms
  };

  // Makes `profile` the calling thread's profile for the scope's lifetime (scopes nest).
  class Scope {
   public:
    explicit Scope(OpProfile& profile) : previous_(current()) { current() = &profile; }
    ~Scope() { current() = previous_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfile* previous_;
  };

  // The calling thread's profile, or nullptr when none is installed.
  static OpProfile*& current() {
    static thread_local OpProfile* profile = nullptr;
    return profile;
  }

  void add(const std::string& op, const std::string& shape, double seconds, double flops) {
    for (Entry& e : entries_)
      if (e.op == op && e.shape == shape) {
        ++e.calls, e.seconds += seconds, e.flops += flops;
        return;
      }
    entries_.push_back({op, shape, 1, seconds, flops});
  }

  const std::vector<Entry>& entries() const { return entries_; }
  double seconds() const {
    double s = 0;
    for (const Entry& e : entries_) s += e.seconds;
    return s;
  }

  // A text table, the most expensive rows first: calls, milliseconds, % of `total_seconds` (the
  // whole pass's wall time), GFLOP/s, and that rate as a fraction of `gemm_gflops` (a plain GEMM's
  // rate on this machine, 0 to leave the column out). Then the op kinds summed, and the time
  // outside the timed ops.
  std::string table(double total_seconds, double gemm_gflops = 0) const {
    std::string out;
    char line[512];
    auto row = [&](const std::string& op, const std::string& shape, int64_t calls, double s, double flops) {
      const double rate = s > 0 ? flops / s * 1e-9 : 0;
      std::string of_gemm = "";
      if (gemm_gflops > 0 && flops > 0) {
        char b[32];
        std::snprintf(b, sizeof b, "%6.0f%%", 100 * rate / gemm_gflops);
        of_gemm = b;
      }
      std::snprintf(line, sizeof line, "%-18s %-34s %5lld %9.1f %6.1f%% %8s %s\n", op.c_str(), shape.c_str(),
                    static_cast<long long>(calls), s * 1e3, 100 * s / total_seconds,
                    flops > 0 ? std::to_string(static_cast<int>(rate + 0.5)).c_str() : "-", of_gemm.c_str());
      out += line;
    };
    std::snprintf(line, sizeof line, "%-18s %-34s %5s %9s %7s %8s %s\n", "op", "shape", "calls", "ms", "share",
                  "GFLOP/s", gemm_gflops > 0 ? "of GEMM" : "");
    out += line;
    std::vector<Entry> sorted = entries_;
    std::stable_sort(sorted.begin(), sorted.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
    for (const Entry& e : sorted) row(e.op, e.shape, e.calls, e.seconds, e.flops);
    out += "-- by op\n";
    std::vector<Entry> kinds;
    for (const Entry& e : entries_) {
      auto k = std::find_if(kinds.begin(), kinds.end(), [&](const Entry& x) { return x.op == e.op; });
      if (k == kinds.end()) kinds.push_back({e.op, "", e.calls, e.seconds, e.flops});
      else k->calls += e.calls, k->seconds += e.seconds, k->flops += e.flops;
    }
    std::stable_sort(kinds.begin(), kinds.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
    for (const Entry& k : kinds) row(k.op, "", k.calls, k.seconds, k.flops);
    row("not in an op", "(element-wise, copies, ...)", 0, std::max(0.0, total_seconds - seconds()), 0);
    return out;
  }

 private:
  std::vector<Entry> entries_;
};

// Times one call of an op when the calling thread has a profile; `shape` (a callable returning
// the shape string) is called only then:
//   const OpTimer timer("linear", [&] { return x.shape_str() + " -> " + std::to_string(out); }, flops);
class OpTimer {
 public:
  template <typename Shape>
  OpTimer(const char* op, Shape&& shape, double flops) : profile_(OpProfile::current()) {
    if (!profile_) return;
    op_ = op, shape_ = shape(), flops_ = flops;
    start_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (profile_)
      profile_->add(op_, shape_,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(), flops_);
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  OpProfile* profile_;
  std::string op_, shape_;
  double flops_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace ldm
