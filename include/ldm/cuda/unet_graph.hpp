// CUDA graphs for the U-Net forward: record the ~thousand kernel launches of one forward once,
// replay them with a single launch. EXPERIMENTAL, off by default (--cuda-graphs).
//
// Why: a U-Net step at 512x512 in fp16 is a few milliseconds of GPU work spread over about a
// thousand kernels; launched one by one from the host, the launch overhead alone is of the
// same order. A graph replays the whole sequence with one call.
//
// What a graph bakes in: every kernel argument and every pointer of the recorded forward. So
//   - inputs go through fixed buffers: before each replay the sample and context are copied
//     (on the stream, device to device) into the buffers the graph was recorded with, and the
//     result is copied out of the graph's output buffer;
//   - the timestep is a host value (cuda::UNet2DConditionModel::forward takes std::vector<float>),
//     so it is baked in too: graphs are keyed by (shapes, dtype, timestep). A key gets a graph
//     the SECOND time it is seen (the first forward of a key runs eagerly, which also warms up
//     cuBLAS and the memory pool outside capture), and is replayed from the third time on. One
//     image visits each timestep once, so graphs pay off across images (a server, a benchmark),
//     not within the first one. With a device-side timestep in the U-Net this would become one
//     graph per shape. cuda::timestep_embedding passes the timesteps to its kernel by value
//     (kernels/elementwise.cu), so that launch can be recorded.
//   - scratch memory: every allocation inside the forward goes through cudaMallocAsync, which
//     stream capture records as graph memory nodes (freed inside the graph again).
// Safety: capture runs in cudaStreamCaptureModeThreadLocal; anything in the forward that cannot
// be captured (a synchronize, a pageable host copy, a plain cudaMalloc) makes the capture fail.
// Any failure, at capture, instantiation or launch, turns graphs off for good, runs that step
// eagerly and says so once on stderr. Results are identical to the eager forward's (same kernels,
// same order), which tests/test_cuda_pipeline.cpp checks on a GPU.
// Memory: graph memory nodes come from a separate pool that peak_memory_allocated_bytes() does
// not see; graph_pool_bytes() reports it. At most `max_graphs` graphs are kept.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "ldm/cuda/device_tensor.hpp"
#include "ldm/cuda/unet.hpp"

namespace ldm::cuda {

cudaStream_t stream();  // the library's stream (kernels/runtime.cuh): every op is queued on it

// Bytes the CUDA graph memory pool of the current device holds (0 if it cannot be read).
inline int64_t graph_pool_bytes() {
  int dev = 0;
  unsigned long long v = 0;  // the attribute is a 64-bit unsigned value
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetGraphMemAttribute(dev, cudaGraphMemAttrReservedMemHigh, &v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return int64_t(v);
}

class UNetGraphs {
 public:
  explicit UNetGraphs(std::shared_ptr<const UNet2DConditionModel> unet, size_t max_graphs = 64)
      : unet_(std::move(unet)), max_graphs_(max_graphs) {}
  ~UNetGraphs() {
    for (auto& kv : graphs_)
      if (kv.second.exec) cudaGraphExecDestroy(kv.second.exec);
  }
  UNetGraphs(const UNetGraphs&) = delete;
  UNetGraphs& operator=(const UNetGraphs&) = delete;

  bool enabled() const { return enabled_; }
  int64_t replays() const { return replays_; }
  size_t graphs() const { return graphs_with_exec_; }  // recorded so far

  // eps = unet.forward(sample, {t}, context), from a graph when this key has one.
  DeviceTensor forward(const DeviceTensor& sample, float t, const DeviceTensor& context) {
    if (!enabled_) return unet_->forward(sample, {t}, context);
    Key key{sample.shape(), context.shape(), int(sample.dtype()), int(context.dtype()), bits(t)};
    Entry& e = graphs_[key];
    ++e.seen;
    if (e.seen == 1 || (!e.exec && graphs_with_exec_ >= max_graphs_)) return unet_->forward(sample, {t}, context);
    Buffers& b = buffers(sample, context);
    copy(b.sample, sample);
    copy(b.context, context);
    if (!e.exec && !capture(e, b, t)) return unet_->forward(sample, {t}, context);
    const cudaError_t err = cudaGraphLaunch(e.exec, stream());
    if (err != cudaSuccess) {
      cudaGetLastError();
      disable(std::string("cudaGraphLaunch: ") + cudaGetErrorString(err));
      return unet_->forward(sample, {t}, context);
    }
    ++replays_;
    DeviceTensor out = DeviceTensor::empty(b.out.shape(), b.out.dtype());
    copy(out, b.out);
    return out;
  }

 private:
  struct Key {
    Shape sample, context;
    int sample_dtype, context_dtype;
    uint32_t t;
    bool operator<(const Key& o) const {
      return std::tie(sample, context, sample_dtype, context_dtype, t) <
             std::tie(o.sample, o.context, o.sample_dtype, o.context_dtype, o.t);
    }
  };
  struct Entry {
    int seen = 0;
    cudaGraphExec_t exec = nullptr;
  };
  // The fixed input and output buffers a graph reads and writes, one set per input shape.
  struct Buffers {
    DeviceTensor sample, context, out;
  };

  static uint32_t bits(float t) {
    uint32_t u = 0;
    std::memcpy(&u, &t, sizeof u);
    return u;
  }

  // dst <- src, same shape and dtype, queued on the stream.
  static void copy(DeviceTensor& dst, const DeviceTensor& src) {
    LDM_CHECK(dst.shape() == src.shape() && dst.dtype() == src.dtype(), "UNetGraphs: copy of ", src.shape_str(),
              " into ", dst.shape_str());
    const cudaError_t e =
        cudaMemcpyAsync(dst.data(), src.data(), size_t(src.bytes()), cudaMemcpyDeviceToDevice, stream());
    if (e != cudaSuccess) LDM_FAIL("UNetGraphs: cudaMemcpyAsync: ", cudaGetErrorString(e));
  }

  Buffers& buffers(const DeviceTensor& sample, const DeviceTensor& context) {
    const auto k = std::make_tuple(sample.shape(), context.shape(), int(sample.dtype()), int(context.dtype()));
    auto it = buffers_.find(k);
    if (it != buffers_.end()) return it->second;
    Buffers b;  // allocated outside any capture: ordinary pool memory, alive as long as this object
    b.sample = DeviceTensor::empty(sample.shape(), sample.dtype());
    b.context = DeviceTensor::empty(context.shape(), context.dtype());
    return buffers_.emplace(k, std::move(b)).first->second;
  }

  // Records unet.forward(b.sample, {t}, b.context) -> b.out into e.exec. False (graphs off) on failure.
  bool capture(Entry& e, Buffers& b, float t) {
    if (!b.out.defined()) {
      // The output buffer must exist before recording (allocated inside, it would be graph
      // memory); its shape comes from one eager forward, outside capture.
      const DeviceTensor probe = unet_->forward(b.sample, {t}, b.context);
      b.out = DeviceTensor::empty(probe.shape(), probe.dtype());
    }
    cudaGetLastError();  // start clean: a stale error must not be blamed on the capture
    cudaError_t err = cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal);
    if (err != cudaSuccess) {
      cudaGetLastError();
      disable(std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(err));
      return false;
    }
    std::string why;
    try {
      // Every temporary of the forward, `out` included, is allocated and freed inside the capture.
      DeviceTensor out = unet_->forward(b.sample, {t}, b.context);
      copy(b.out, out);
    } catch (const std::exception& ex) {
      why = ex.what();
    }
    cudaGraph_t graph = nullptr;
    err = cudaStreamEndCapture(stream(), &graph);  // ends the capture even after a failure inside it
    if (why.empty() && err != cudaSuccess) why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(err);
    if (why.empty() && graph == nullptr) why = "cudaStreamEndCapture returned no graph";
    if (why.empty()) {
      err = cudaGraphInstantiate(&e.exec, graph, 0);
      if (err != cudaSuccess) {
        e.exec = nullptr;
        why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(err);
      }
    }
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    if (!why.empty()) {
      disable(why);
      return false;
    }
    ++graphs_with_exec_;
    return true;
  }

  void disable(const std::string& why) {
    enabled_ = false;
    std::fprintf(stderr, "note: CUDA graphs turned off for the U-Net (%s); running it eagerly\n", why.c_str());
  }

  std::shared_ptr<const UNet2DConditionModel> unet_;
  size_t max_graphs_;
  bool enabled_ = true;
  int64_t replays_ = 0;
  size_t graphs_with_exec_ = 0;
  std::map<Key, Entry> graphs_;
  std::map<std::tuple<Shape, Shape, int, int>, Buffers> buffers_;
};

}  // namespace ldm::cuda
