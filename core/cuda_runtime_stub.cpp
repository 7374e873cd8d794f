// Definitions of core/cuda_runtime.h for builds without the CUDA backend.
#include "core/cuda_runtime.h"

namespace cac::cuda {

namespace {
[[noreturn]] void no_cuda() {
  fail("this build has no CUDA backend (configured with CAC_CUDA=OFF or without nvcc); rebuild with "
       "-DCAC_CUDA=ON on a machine with the CUDA toolkit, or run with --device cpu");
}
}  // namespace

bool built_with_cuda() { return false; }
GpuProbe probe_gpu() { return GpuProbe{}; }  // built_with_cuda = false
GpuState gpu_state(std::string* why) { return explain_gpu(probe_gpu(), why); }
bool device_available(std::string* why) { return gpu_state(why) == GpuState::Usable; }
std::string device_description() { return "none (built without CUDA)"; }
std::string library_versions() { return "CPU only (built without CUDA)"; }
std::shared_ptr<Storage> allocate(size_t) { no_cuda(); }
AllocatorStats allocator_stats() { return {}; }
void release_cached_memory() {}
size_t free_device_bytes() { return 0; }
void copy(void*, Device, const void*, Device, size_t) { no_cuda(); }
void memset_zero(void*, size_t) { no_cuda(); }
std::shared_ptr<Storage> allocate_pinned(size_t bytes) { return allocate_storage(bytes, Device::CPU); }
CopyHandle copy_to_device_async(void*, const void*, size_t) { no_cuda(); }
void wait_host(const CopyHandle&) {}
void accumulate(const Tensor&, const Tensor&) { no_cuda(); }
void fill(const Tensor&, double) { no_cuda(); }
struct RecordedWork::Impl {};
RecordedWork::RecordedWork(const std::function<void()>&) { no_cuda(); }
RecordedWork::~RecordedWork() = default;
void RecordedWork::replay() { no_cuda(); }
size_t RecordedWork::launches() const { return 0; }
void synchronize() {}
void set_allow_tf32(bool) {}
bool allow_tf32() { return false; }
void set_strict_conv_algorithms(bool) {}
bool strict_conv_algorithms() { return false; }
double time_ms(const std::function<void()>&, int, int, bool) { no_cuda(); }
double copy_bandwidth_gbs(size_t) { no_cuda(); }
struct StepTimer::Impl {};
StepTimer::StepTimer(int) {}
StepTimer::~StepTimer() = default;
void StepTimer::reset() {}
void StepTimer::begin() {}
void StepTimer::end() {}
double StepTimer::busy_ms() { return 0; }

}  // namespace cac::cuda
