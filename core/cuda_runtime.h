#pragma once
// The host-visible face of the CUDA runtime (core/cuda/runtime.cu). Everything here is declared in
// every build; in a build without CUDA the definitions in cuda_runtime_stub.cpp throw a clear error
// (or report "no device"), so callers never need #ifdefs.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace cac::cuda {

bool built_with_cuda();

// What a look for a GPU found (probe_gpu()); plain data, so that explain_gpu's messages are tested
// on machines without one.
struct GpuProbe {
  enum class Count { Ok, NoDevice, DriverTooOld, Failed };  // how cudaGetDeviceCount answered
  bool built_with_cuda = false;
  int driver_version = 0;   // CUDA version the driver supports, e.g. 13000; 0: no driver installed
  int runtime_version = 0;  // the CUDA runtime this build loaded
  Count count = Count::Ok;
  std::string error;        // cudaGetDeviceCount's error where count is Failed
  int devices = 0;
  std::string name;         // the current device's name and compute capability
  int major = 0, minor = 0;
  bool has_code = false;    // this binary has kernels the current device can run
  std::string built_for;    // CMAKE_CUDA_ARCHITECTURES of the build, e.g. "90" or "80;90-real"
};
enum class GpuState {
  Usable,
  Absent,    // no GPU here (no driver, no device, or a build without CUDA): --device auto uses the CPU
  Unusable,  // a GPU this build or driver cannot use: an error, with what to do, even for auto
};
GpuProbe probe_gpu();
GpuState explain_gpu(const GpuProbe& probe, std::string* why);
// "sm_90 + PTX", "sm_80, sm_90" ...: what a CMAKE_CUDA_ARCHITECTURES list puts in the binary.
std::string describe_architectures(const std::string& cmake_list);
// explain_gpu(probe_gpu(), why).
GpuState gpu_state(std::string* why = nullptr);
// True when built with CUDA and a device is usable; `why` receives the reason otherwise.
bool device_available(std::string* why = nullptr);
std::string device_description();
// The CUDA runtime and cuDNN this process loaded, e.g. "CUDA runtime 13.0, cuDNN 9.10.2"; a build
// without CUDA says "CPU only (built without CUDA)".
std::string library_versions();

// Caching, stream-ordered allocation on the compute stream.
std::shared_ptr<Storage> allocate(size_t bytes);
struct AllocatorStats {
  size_t in_use = 0, reserved = 0, peak_in_use = 0;
  size_t device_allocations = 0;  // cudaMalloc calls so far (flat in steady state)
};
AllocatorStats allocator_stats();
void release_cached_memory();
// Device memory not yet taken by any process, plus what this process's allocator holds unused
// (cudaMemGetInfo + the cache): what a new large tensor could get. 0 without a device.
size_t free_device_bytes();

// Copies/fills on the compute stream. Copies that involve host memory synchronise the stream
// (they are only used outside training steps).
void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void memset_zero(void* dst, size_t bytes);

// Page-locked host memory (cudaHostAlloc) for the data loader's batches; plain host memory in a
// build without CUDA or without a device.
std::shared_ptr<Storage> allocate_pinned(size_t bytes);
// Host-to-device copy on the copy stream, ordered after the compute stream's work so far (the
// destination block may have been freed by it) and before its later work; no host wait. The
// returned handle completes when the copy has finished: wait_host() on it before reusing `src`.
using CopyHandle = std::shared_ptr<void>;
CopyHandle copy_to_device_async(void* dst, const void* src, size_t bytes);
void wait_host(const CopyHandle& h);
void accumulate(const Tensor& dst, const Tensor& src);  // dst += src, f32, f64 or bf16
// Every element of a device tensor = value (converted to its dtype), by a kernel on the compute
// stream: no host copy, so no host wait (Tensor::full on the device, e.g. backward()'s seed).
void fill(const Tensor& dst, double value);
void synchronize();

// TF32 tensor cores for cuDNN convolutions (on by default, as in PyTorch); cuBLAS GEMMs stay
// float32. Tests turn it off to compare against the float32 CPU twins.
void set_allow_tf32(bool on);
bool allow_tf32();
// Restrict cuDNN to GEMM-based convolution algorithms (no FFT or Winograd, whose float32 rounding
// is about 1e-3 relative). cudnnFind otherwise picks whatever measures fastest, which can differ
// between runs; tests turn this on so the GPU-vs-CPU tolerances hold every time.
void set_strict_conv_algorithms(bool on);
bool strict_conv_algorithms();

// Device work recorded once from the compute stream into a CUDA graph and replayed as one launch
// (what a training step's no-host-wait, no-cudaMalloc rule is for). Recording fails with a clear
// error at the first call that would make the host wait for the stream. A replay reuses the
// recorded buffers, including blocks the recording freed; those stay the graph's until it is
// destroyed (BlockCache), so eager work and other graphs may run and allocate between replays.
// Whatever changes between replays must be in device memory the graph reads (inputs copied into
// its buffers, a learning rate, counters), never a value passed to a kernel at recording time.
class RecordedWork {
 public:
  explicit RecordedWork(const std::function<void()>& record);
  ~RecordedWork();
  RecordedWork(const RecordedWork&) = delete;
  RecordedWork& operator=(const RecordedWork&) = delete;
  void replay();                // enqueued on the compute stream; no host wait
  size_t launches() const;      // nodes of the graph (kernels, copies, memsets)
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Timing with CUDA events on the compute stream: median milliseconds of `iters` runs of fn after
// `warmup` runs; with flush_l2, a buffer larger than the L2 is overwritten before each timed run.
// Each timed run is queued behind a short GPU spin (200 us), so the host's launch work for fn
// (allocation, argument set-up, the launch calls) happens while the GPU is busy and the events
// measure GPU execution only, as in a training step where the host runs ahead of the device.
double time_ms(const std::function<void()>& fn, int warmup, int iters, bool flush_l2);
// How long the GPU spent in the training steps of an epoch: an event before and after each step on
// the compute stream (no host wait), read once at the end. The GPU's idle share of the epoch is
// what its wall time leaves: time the host made the GPU wait (data, launches between steps).
// Events are made up front for `steps` steps (more grow the set outside the timed work); without
// CUDA or a device every call does nothing and busy_ms() is 0.
class StepTimer {
 public:
  explicit StepTimer(int steps);
  ~StepTimer();
  StepTimer(const StepTimer&) = delete;
  StepTimer& operator=(const StepTimer&) = delete;
  void reset();  // a new epoch
  void begin();  // before a step's work is queued
  void end();    // after it
  double busy_ms();  // waits for the last step; the sum of the steps' spans
 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Device-to-device copy bandwidth in GB/s (bytes read + bytes written), measured on `bytes` bytes.
double copy_bandwidth_gbs(size_t bytes);

}  // namespace cac::cuda
