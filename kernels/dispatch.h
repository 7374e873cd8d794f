#pragma once
// The one dispatch point of every kernel family: kernels/<family>.cpp forwards each call to the
// CPU twin or the CUDA kernel with the same signature. Nothing else in the project branches on the
// device or on how the project was built.
#include "core/tensor.h"

namespace cac::kernels {
[[noreturn]] void no_cuda_kernels(const char* op);
}

// CAC_CUDA_ONLY: a call with no CPU twin (a CUDA launch detail such as the batch-norm path).
#if CAC_WITH_CUDA_KERNELS
#define CAC_DISPATCH(device, op, ...)                                               \
  ((device) == ::cac::Device::CUDA ? ::cac::kernels::cuda::op(__VA_ARGS__) \
                                   : ::cac::kernels::cpu::op(__VA_ARGS__))
#define CAC_CUDA_ONLY(op, ...) ::cac::kernels::cuda::op(__VA_ARGS__)
#else
#define CAC_CUDA_ONLY(op, ...) \
  (::cac::kernels::no_cuda_kernels(#op), decltype(::cac::kernels::cuda::op(__VA_ARGS__))())
#define CAC_DISPATCH(device, op, ...)                                             \
  ((device) == ::cac::Device::CUDA ? ::cac::kernels::no_cuda_kernels(#op) \
                                   : ::cac::kernels::cpu::op(__VA_ARGS__))
#endif

// Declares one kernel three times with the same signature: the dispatching entry point, the CPU
// twin (the reference) and the CUDA kernel. Use inside namespace cac::kernels.
#define CAC_DECLARE_KERNEL(signature) \
  signature;                          \
  namespace cpu {                     \
  signature;                          \
  }                                   \
  namespace cuda {                    \
  signature;                          \
  }

// Declares a CUDA-only call twice with one signature: the entry point (which throws in a build
// without CUDA kernels, CAC_CUDA_ONLY) and the CUDA definition. Use inside namespace cac::kernels.
#define CAC_DECLARE_CUDA_ONLY(signature) \
  signature;                             \
  namespace cuda {                       \
  signature;                             \
  }
