// The CUDA device runtime: context (device, streams, library handles, cuDNN workspace) and the
// caching allocator behind every device tensor.
#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/block_cache.h"
#include "core/cuda/check.h"
#include "core/cuda_runtime.h"

namespace cac::cuda {

namespace detail {
void throw_cuda(cudaError_t e, const char* stmt, const char* file, int line) {
  fail("CUDA error {} ({}) in `{}` at {}:{}", cudaGetErrorName(e), cudaGetErrorString(e), stmt, file,
       line);
}
void throw_cublas(cublasStatus_t s, const char* stmt, const char* file, int line) {
  fail("cuBLAS error {} ({}) in `{}` at {}:{}", cublasGetStatusName(s), cublasGetStatusString(s),
       stmt, file, line);
}
void throw_cudnn(cudnnStatus_t s, const char* stmt, const char* file, int line) {
  fail("cuDNN error {} in `{}` at {}:{}", cudnnGetErrorString(s), stmt, file, line);
}
}  // namespace detail

namespace {

std::string format_bytes(size_t b) {
  if (b >= (size_t(1) << 30)) return fmt::format("{:.2f} GiB", double(b) / double(size_t(1) << 30));
  if (b >= (size_t(1) << 20)) return fmt::format("{:.1f} MiB", double(b) / double(size_t(1) << 20));
  return fmt::format("{} B", b);
}

// Caching allocator: BlockCache's rules (core/block_cache.h) over cudaMalloc. Steady-state
// training therefore makes no cudaMalloc/cudaFree calls, and replays see the same addresses.
class CachingAllocator {
 public:
  void* allocate(size_t bytes) {
    const size_t size = BlockCache::round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    void* p = cache_.take(size);
    if (!p) p = device_malloc(size, bytes);
    cache_.handed_out(p, size);
    stats_.in_use += size;
    stats_.peak_in_use = std::max(stats_.peak_in_use, stats_.in_use);
    return p;
  }
  void release(void* p, size_t bytes) {
    const size_t size = BlockCache::round(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    cache_.give_back(p, size);
    stats_.in_use -= size;
  }
  void begin_recording() {
    std::lock_guard<std::mutex> lock(mu_);
    cache_.begin_recording();
  }
  void end_recording(BlockCache::Owner graph) {
    std::lock_guard<std::mutex> lock(mu_);
    cache_.end_recording(graph);
  }
  void release_graph(BlockCache::Owner graph) {
    std::lock_guard<std::mutex> lock(mu_);
    cache_.release(graph);
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    empty_cache_locked();
  }
  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  void* device_malloc(size_t size, size_t requested) {
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation && !cache_.recording()) {  // give cached blocks back and try once more
      cudaGetLastError();
      empty_cache_locked();
      e = cudaMalloc(&p, size);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("CUDA out of memory: requested {} ({} rounded); this process holds {} in tensors and {} "
           "reserved; the device has {} free of {}. Reduce --batch or the image size.",
           format_bytes(requested), format_bytes(size), format_bytes(stats_.in_use),
           format_bytes(stats_.reserved), format_bytes(free_b), format_bytes(total_b));
    }
    CUDA_CHECK(e);
    stats_.reserved += size;
    stats_.device_allocations += 1;
    return p;
  }
  void empty_cache_locked() {
    CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
    for (const auto& [size, p] : cache_.drain()) {
      CUDA_CHECK(cudaFree(p));
      stats_.reserved -= size;
    }
  }

  std::mutex mu_;
  BlockCache cache_;
  AllocatorStats stats_;
};

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();  // never destroyed: outlives all tensors
  return *a;
}

struct Context {
  int device = 0;
  int sms = 0;
  cudaStream_t compute = nullptr, copy = nullptr;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  std::shared_ptr<Storage> workspace_block;
  // A recorded graph keeps using the workspace it was recorded with: outgrown blocks are kept
  // while any graph lives.
  int graphs_alive = 0;
  std::vector<std::shared_ptr<Storage>> outgrown_workspaces;

  Context() {
    std::string why;
    CAC_CHECK(device_available(&why), "CUDA requested but unavailable: {}", why);
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&cublas));
    CUBLAS_CHECK(cublasSetStream(cublas, compute));
    CUDNN_CHECK(cudnnCreate(&cudnn));
    CUDNN_CHECK(cudnnSetStream(cudnn, compute));
  }
};

Context& ctx() {
  static Context* c = new Context();  // created on first use, kept for the process
  return *c;
}

}  // namespace

bool built_with_cuda() { return true; }

namespace {
__global__ void probe_kernel() {}
}  // namespace

GpuProbe probe_gpu() {
  GpuProbe p;
  p.built_with_cuda = true;
  p.built_for = CAC_CUDA_ARCHITECTURES;
  // Neither call needs a device; a machine without a driver answers 0 for the driver.
  if (cudaDriverGetVersion(&p.driver_version) != cudaSuccess) p.driver_version = 0;
  if (cudaRuntimeGetVersion(&p.runtime_version) != cudaSuccess) p.runtime_version = 0;
  if (p.driver_version == 0) return p;
  const cudaError_t e = cudaGetDeviceCount(&p.devices);
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky, but leave no error behind for a later check
    p.devices = 0;
    p.count = e == cudaErrorNoDevice              ? GpuProbe::Count::NoDevice
              : e == cudaErrorInsufficientDriver ? GpuProbe::Count::DriverTooOld
                                                 : GpuProbe::Count::Failed;
    p.error = fmt::format("{}: {}", cudaGetErrorName(e), cudaGetErrorString(e));
    return p;
  }
  if (p.devices == 0) return p;
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess) {
    p.name = prop.name;
    p.major = prop.major;
    p.minor = prop.minor;
  }
  // No SASS for this GPU and no PTX it can compile: every kernel launch would fail with
  // cudaErrorNoKernelImageForDevice, so ask once here, where the message can say what to do.
  cudaFuncAttributes attrs{};
  p.has_code = cudaFuncGetAttributes(&attrs, probe_kernel) == cudaSuccess;
  cudaGetLastError();
  return p;
}

GpuState gpu_state(std::string* why) { return explain_gpu(probe_gpu(), why); }

bool device_available(std::string* why) { return gpu_state(why) == GpuState::Usable; }

std::string device_description() {
  std::string why;
  if (!device_available(&why)) return why;
  int dev = 0;
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return fmt::format("{} (sm_{}{}, {} SMs, {:.0f} GiB)", p.name, p.major, p.minor,
                     p.multiProcessorCount, double(p.totalGlobalMem) / double(size_t(1) << 30));
}

std::string library_versions() {
  // Neither call needs a device: both answer on a machine without a GPU.
  int runtime = 0;
  const std::string cuda = cudaRuntimeGetVersion(&runtime) == cudaSuccess
                               ? fmt::format("CUDA runtime {}.{}", runtime / 1000, runtime % 1000 / 10)
                               : std::string("CUDA runtime unknown");
  // cuDNN 9 numbers itself major*10000 + minor*100 + patch, earlier versions major*1000 + ...
  const size_t dnn = cudnnGetVersion(), major_unit = dnn >= 90000 ? 10000 : 1000;
  return fmt::format("{}, cuDNN {}.{}.{}, GPU code {}", cuda, dnn / major_unit, dnn % major_unit / 100, dnn % 100,
                     describe_architectures(CAC_CUDA_ARCHITECTURES));
}

cudaStream_t compute_stream() { return ctx().compute; }
cudaStream_t copy_stream() { return ctx().copy; }
cublasHandle_t cublas() { return ctx().cublas; }
cudnnHandle_t cudnn() { return ctx().cudnn; }
int sm_count() { return ctx().sms; }
size_t cudnn_workspace_limit() { return size_t(256) << 20; }

void* cudnn_workspace(size_t bytes) {
  Context& c = ctx();
  if (bytes > c.workspace_bytes) {
    if (c.graphs_alive > 0 && c.workspace_block) c.outgrown_workspaces.push_back(c.workspace_block);
    c.workspace_block = allocate(bytes);  // else the old block returns to the cache, stream-ordered
    c.workspace = c.workspace_block->data;
    c.workspace_bytes = bytes;
  }
  return c.workspace;
}

std::shared_ptr<Storage> allocate(size_t bytes) {
  ctx();  // fail early with a clear message when there is no device
  auto s = std::make_shared<Storage>();
  s->data = allocator().allocate(bytes);
  s->bytes = bytes;
  s->device = Device::CUDA;
  s->release = [](void* p, size_t n) { allocator().release(p, n); };
  return s;
}

AllocatorStats allocator_stats() { return allocator().stats(); }
void release_cached_memory() { allocator().empty_cache(); }
size_t free_device_bytes() {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const AllocatorStats s = allocator().stats();
  return free_b + (s.reserved - s.in_use);
}

void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  cudaMemcpyKind kind = dst_dev == Device::CUDA
                            ? (src_dev == Device::CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                            : (src_dev == Device::CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, compute_stream()));
  // Host memory is pageable here: wait so the caller may reuse or read it at once.
  if (kind != cudaMemcpyDeviceToDevice) CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
}

std::shared_ptr<Storage> allocate_pinned(size_t bytes) {
  std::string why;
  if (!device_available(&why)) return allocate_storage(bytes, Device::CPU);
  auto s = std::make_shared<Storage>();
  CUDA_CHECK(cudaHostAlloc(&s->data, std::max<size_t>(bytes, 1), cudaHostAllocDefault));
  s->bytes = bytes;
  s->device = Device::CPU;
  s->release = [](void* p, size_t) { cudaFreeHost(p); };
  return s;
}

CopyHandle copy_to_device_async(void* dst, const void* src, size_t bytes) {
  cudaEvent_t after_compute, copied;
  CUDA_CHECK(cudaEventCreateWithFlags(&after_compute, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(after_compute, compute_stream()));
  CUDA_CHECK(cudaStreamWaitEvent(copy_stream(), after_compute, 0));
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, copy_stream()));
  CUDA_CHECK(cudaEventRecord(copied, copy_stream()));
  CUDA_CHECK(cudaStreamWaitEvent(compute_stream(), copied, 0));
  CUDA_CHECK(cudaEventDestroy(after_compute));  // destruction is deferred until it completes
  return CopyHandle(static_cast<void*>(copied), [](void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); });
}

void wait_host(const CopyHandle& h) {
  if (h) CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(h.get())));
}

void memset_zero(void* dst, size_t bytes) { CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, compute_stream())); }

void synchronize() {
  std::string why;
  if (device_available(&why)) CUDA_CHECK(cudaStreamSynchronize(compute_stream()));
}

namespace {
bool g_allow_tf32 = true;
}
// Convolutions only: GEMMs through cuBLAS stay full float32 (PyTorch's defaults, too).
void set_allow_tf32(bool on) { g_allow_tf32 = on; }
bool allow_tf32() { return g_allow_tf32; }
namespace {
bool g_strict_conv = false;
}
void set_strict_conv_algorithms(bool on) { g_strict_conv = on; }
bool strict_conv_algorithms() { return g_strict_conv; }

struct RecordedWork::Impl {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  size_t nodes = 0;
};
RecordedWork::RecordedWork(const std::function<void()>& record) : impl_(std::make_unique<Impl>()) {
  cudaStream_t s = compute_stream();
  // Relaxed mode: only what would make the host wait for the recorded stream fails (the error
  // names the call). cuBLAS and cuDNN may make other runtime calls of their own; a cudaMalloc of
  // ours is allowed too (its block simply belongs to the graph); CudaAllocator tests that a
  // steady-state step makes none.
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  allocator().begin_recording();
  std::string error;
  try {
    record();
  } catch (const std::exception& e) {  // the recording must end whatever went wrong in it
    error = e.what();
  }
  const cudaError_t ended = cudaStreamEndCapture(s, &impl_->graph);
  cudaGetLastError();  // a failed recording leaves its error here; the stream works again
  cudaError_t made = ended;
  if (error.empty() && ended == cudaSuccess) {
    made = cudaGraphGetNodes(impl_->graph, nullptr, &impl_->nodes);
    if (made == cudaSuccess) made = cudaGraphInstantiate(&impl_->exec, impl_->graph, 0);
    cudaGetLastError();
  }
  const bool failed = !error.empty() || made != cudaSuccess;
  allocator().end_recording(failed ? nullptr : impl_.get());
  if (failed) {
    if (impl_->graph) cudaGraphDestroy(impl_->graph);
    fail("recording device work into a CUDA graph failed: {}. Something in it makes the host wait "
         "(a copy from pageable memory, a synchronisation, reading a value).",
         error.empty() ? fmt::format("{} ({})", cudaGetErrorName(made), cudaGetErrorString(made)) : error);
  }
  ctx().graphs_alive += 1;
}
RecordedWork::~RecordedWork() {
  if (impl_ && impl_->exec) cudaGraphExecDestroy(impl_->exec);
  if (impl_ && impl_->graph) cudaGraphDestroy(impl_->graph);
  // Replays already queued run before anything queued later can use the blocks (one stream).
  if (impl_) allocator().release_graph(impl_.get());
  if (impl_ && impl_->exec && --ctx().graphs_alive == 0) ctx().outgrown_workspaces.clear();
}
void RecordedWork::replay() { CUDA_CHECK(cudaGraphLaunch(impl_->exec, compute_stream())); }
size_t RecordedWork::launches() const { return impl_->nodes; }

namespace {
// Keeps the GPU busy for `ns` nanoseconds of wall time (the global timer, not SM clocks).
__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}
}  // namespace

double time_ms(const std::function<void()>& fn, int warmup, int iters, bool flush_l2) {
  int dev = 0, l2 = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  std::shared_ptr<Storage> flush;
  if (flush_l2) flush = allocate(size_t(l2) * 2);
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < iters; ++i) {
    if (flush) CUDA_CHECK(cudaMemsetAsync(flush->data, i & 0xff, flush->bytes, compute_stream()));
    spin_kernel<<<1, 1, 0, compute_stream()>>>(200000);  // covers the host's launch work below
    CUDA_CHECK(cudaGetLastError());  // no debug-build sync here: that would undo the spin
    CUDA_CHECK(cudaEventRecord(start, compute_stream()));
    fn();
    CUDA_CHECK(cudaEventRecord(stop, compute_stream()));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(times.begin(), times.end());
  return times.empty() ? 0.0 : double(times[times.size() / 2]);
}

struct StepTimer::Impl {
  std::vector<cudaEvent_t> events;  // before/after pairs
  size_t used = 0;
  bool on = false;
  void grow(size_t n) {
    while (events.size() < n) {
      cudaEvent_t e;
      CUDA_CHECK(cudaEventCreate(&e));
      events.push_back(e);
    }
  }
};
StepTimer::StepTimer(int steps) : impl_(std::make_unique<Impl>()) {
  impl_->on = device_available();
  if (impl_->on) impl_->grow(size_t(std::max(steps, 1)) * 2);
}
StepTimer::~StepTimer() {
  for (cudaEvent_t e : impl_->events) cudaEventDestroy(e);  // (no check in a destructor)
}
void StepTimer::reset() { impl_->used = 0; }
void StepTimer::begin() {
  if (!impl_->on) return;
  impl_->grow(impl_->used + 2);
  CUDA_CHECK(cudaEventRecord(impl_->events[impl_->used++], compute_stream()));
}
void StepTimer::end() {
  if (!impl_->on) return;
  CUDA_CHECK(cudaEventRecord(impl_->events[impl_->used++], compute_stream()));
}
double StepTimer::busy_ms() {
  if (!impl_->on || impl_->used < 2) return 0;
  CUDA_CHECK(cudaEventSynchronize(impl_->events[impl_->used - 1]));
  double total = 0;
  for (size_t i = 0; i + 1 < impl_->used; i += 2) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, impl_->events[i], impl_->events[i + 1]));
    total += ms;
  }
  return total;
}

double copy_bandwidth_gbs(size_t bytes) {
  auto a = allocate(bytes), b = allocate(bytes);
  CUDA_CHECK(cudaMemsetAsync(a->data, 1, bytes, compute_stream()));
  const double ms = time_ms([&] {
    CUDA_CHECK(cudaMemcpyAsync(b->data, a->data, bytes, cudaMemcpyDeviceToDevice, compute_stream()));
  }, 3, 20, false);
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

namespace {
template <class T>
__global__ void accumulate_kernel(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}
}  // namespace

namespace {
__global__ void accumulate_bf16_kernel(uint16_t* __restrict__ dst, const uint16_t* __restrict__ src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = bf16_bits(bf16_to_float(dst[i]) + bf16_to_float(src[i]));
}
}  // namespace
void accumulate(const Tensor& dst, const Tensor& src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const int threads = 256;
  const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, int64_t(sm_count()) * 8));
  Tensor d = dst;
  if (dst.dtype() == DType::BF16)
    accumulate_bf16_kernel<<<blocks, threads, 0, compute_stream()>>>(reinterpret_cast<uint16_t*>(d.data<bf16>()),
                                                                     reinterpret_cast<const uint16_t*>(src.data<bf16>()), n);
  else if (dst.dtype() == DType::F32)
    accumulate_kernel<<<blocks, threads, 0, compute_stream()>>>(d.data<float>(), src.data<float>(), n);
  else
    accumulate_kernel<<<blocks, threads, 0, compute_stream()>>>(d.data<double>(), src.data<double>(), n);
  CUDA_CHECK_LAUNCH();
}

namespace {
template <class T>
__global__ void fill_kernel(T* __restrict__ dst, T value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = value;
}
template <class T>
void launch_fill(void* dst, double value, int64_t n) {
  const int threads = 256;
  const int blocks = int(std::min<int64_t>((n + threads - 1) / threads, int64_t(sm_count()) * 8));
  fill_kernel<<<blocks, threads, 0, compute_stream()>>>(static_cast<T*>(dst), T(value), n);
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void fill(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  Tensor d = dst;  // a handle to the same storage
  void* p = d.raw();
  switch (dst.dtype()) {
    case DType::F32: launch_fill<float>(p, value, n); break;
    case DType::F64: launch_fill<double>(p, value, n); break;
    case DType::I64: launch_fill<int64_t>(p, value, n); break;
    case DType::U8: launch_fill<uint8_t>(p, value, n); break;
    case DType::BF16: launch_fill<bf16>(p, value, n); break;
  }
}

}  // namespace cac::cuda
