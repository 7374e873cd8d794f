#pragma once
// NVTX ranges for Nsight Systems (docs/profiling.md). In builds without CUDA they compile to
// nothing. Use CAC_NVTX_RANGE("name") at the top of a scope.
#if CAC_WITH_CUDA
#include <nvtx3/nvToolsExt.h>
namespace cac {
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};
}  // namespace cac
#define CAC_NVTX_CONCAT2(a, b) a##b
#define CAC_NVTX_CONCAT(a, b) CAC_NVTX_CONCAT2(a, b)
#define CAC_NVTX_RANGE(name) ::cac::NvtxRange CAC_NVTX_CONCAT(cac_nvtx_range_, __LINE__)(name)
#else
#define CAC_NVTX_RANGE(name) ((void)0)
#endif
