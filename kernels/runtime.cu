// The CUDA runtime side of DeviceTensor: device discovery, the stream, cuBLAS, allocation
// (stream-ordered, with a byte count for peak-memory reports) and host <-> device copies.
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "runtime.cuh"

namespace ldm::cuda {

DType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32" || name == "f32") return DType::f32;
  if (name == "fp16" || name == "float16" || name == "f16" || name == "half") return DType::f16;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  LDM_FAIL("unknown precision '", name, "': expected fp32, fp16 or bf16");
}

bool available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

std::string device_description() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device (") + cudaGetErrorString(e) + ")";
  }
  if (n == 0) return "no CUDA device";
  int dev = 0;
  LDM_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  LDM_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return str(p.name, " (sm_", p.major, p.minor, ", ", p.multiProcessorCount, " SMs, ",
             double(p.totalGlobalMem) / double(1ull << 30), " GiB)");
}

void synchronize() { LDM_CUDA_CHECK(cudaStreamSynchronize(stream())); }

cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t st = nullptr;
    LDM_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    return st;
  }();
  return s;
}

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t handle = nullptr;
    LDM_CUBLAS_CHECK(cublasCreate(&handle));
    LDM_CUBLAS_CHECK(cublasSetStream(handle, stream()));
    // fp32 parity: never let cuBLAS round fp32 operands to TF32.
    LDM_CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_PEDANTIC_MATH));
    // A workspace of its own, allocated once here, so that cuBLAS allocates nothing while a
    // CUDA graph is being recorded (unet_graph.hpp). 32 MiB is what NVIDIA suggests for Hopper.
    constexpr size_t kWorkspace = size_t(32) << 20;
    void* workspace = nullptr;
    LDM_CUDA_CHECK(cudaMalloc(&workspace, kWorkspace));
    LDM_CUBLAS_CHECK(cublasSetWorkspace(handle, workspace, kWorkspace));
    return handle;
  }();
  return h;
}

// ---- allocation: counted, stream-ordered ---------------------------------------------------
namespace {
std::atomic<int64_t> g_allocated{0};
std::atomic<int64_t> g_peak{0};

void count_alloc(int64_t bytes) {
  const int64_t now = g_allocated.fetch_add(bytes) + bytes;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

std::shared_ptr<void> alloc_on_stream(int64_t bytes) {
  LDM_CHECK(bytes >= 0, "device_alloc: negative size ", bytes);
  const size_t n = size_t(std::max<int64_t>(bytes, 1));
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, n, stream());
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    LDM_FAIL("out of GPU memory allocating ", double(n) / double(1 << 20), " MiB (", double(free_b) / double(1 << 20),
             " MiB free of ", double(total_b) / double(1 << 20), "): ", cudaGetErrorString(e));
  }
  count_alloc(int64_t(n));
  return std::shared_ptr<void>(p, [n](void* q) {
    cudaFreeAsync(q, stream());
    g_allocated.fetch_sub(int64_t(n));
  });
}
}  // namespace

std::shared_ptr<void> device_alloc(int64_t bytes) { return alloc_on_stream(bytes); }
std::shared_ptr<void> scratch_alloc(int64_t bytes) { return alloc_on_stream(bytes); }

int64_t memory_allocated_bytes() { return g_allocated.load(); }
int64_t peak_memory_allocated_bytes() { return g_peak.load(); }
void reset_peak_memory() { g_peak.store(g_allocated.load()); }

// ---- DeviceTensor -------------------------------------------------------------------------
DeviceTensor DeviceTensor::empty(Shape shape, DType dtype) {
  for (int64_t d : shape) LDM_CHECK(d >= 0, "negative dimension in shape ", ldm::shape_str(shape));
  DeviceTensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.storage_ = device_alloc(numel_of(t.shape_) * dtype_bytes(dtype));
  t.data_ = t.storage_.get();
  return t;
}

DeviceTensor DeviceTensor::zeros(Shape shape, DType dtype) {
  DeviceTensor t = empty(std::move(shape), dtype);
  LDM_CUDA_CHECK(cudaMemsetAsync(t.data_, 0, size_t(t.bytes()), stream()));
  return t;
}

DeviceTensor DeviceTensor::reshape(Shape shape) const {
  shape = infer_shape(std::move(shape), numel(), shape_str());
  DeviceTensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

DeviceTensor DeviceTensor::slice0(int64_t begin, int64_t end) const {
  LDM_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice0: [", begin, ", ", end,
            ") out of range for ", shape_str());
  DeviceTensor t = *this;
  const int64_t row = numel() / std::max<int64_t>(shape_[0], 1);
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + begin * row * dtype_bytes(dtype_);
  return t;
}

// ---- conversions and copies ---------------------------------------------------------------
namespace {
template <typename Src, typename Dst>
__global__ void convert_kernel(const Src* src, Dst* dst, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = from_float<Dst>(to_float<Src>(src[i]));
}

void convert(const DeviceTensor& src, DeviceTensor& dst) {
  const int64_t n = src.numel();
  if (n == 0) return;
  LDM_DISPATCH_DTYPE(src.dtype(), S, {
    LDM_DISPATCH_DTYPE(dst.dtype(), D, {
      convert_kernel<S, D><<<grid_1d(n), 256, 0, stream()>>>(src.ptr<S>(), dst.ptr<D>(), n);
      LDM_KERNEL_CHECK();
    });
  });
}
}  // namespace

DeviceTensor to_dtype(const DeviceTensor& t, DType dtype) {
  if (t.dtype() == dtype) return t;
  DeviceTensor out = DeviceTensor::empty(t.shape(), dtype);
  convert(t, out);
  return out;
}

DeviceTensor upload(const float* host, const Shape& shape, DType dtype) {
  DeviceTensor f = DeviceTensor::empty(shape, DType::f32);
  if (f.numel() > 0) {
    LDM_CUDA_CHECK(cudaMemcpyAsync(f.data(), host, size_t(f.bytes()), cudaMemcpyHostToDevice, stream()));
  }
  // The copy is asynchronous only from pinned memory; from pageable memory it returns once the
  // host buffer has been read, so the caller may free `host` afterwards.
  return to_dtype(f, dtype);
}

void download(const DeviceTensor& t, float* host) {
  const DeviceTensor f = to_dtype(t, DType::f32);
  if (f.numel() > 0) {
    LDM_CUDA_CHECK(cudaMemcpyAsync(host, f.data(), size_t(f.bytes()), cudaMemcpyDeviceToHost, stream()));
  }
  synchronize();
}

}  // namespace ldm::cuda
