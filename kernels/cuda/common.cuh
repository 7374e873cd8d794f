#pragma once
// Shared helpers of the CUDA kernels: dtype checks, launch sizing, warp/block reductions.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/cuda/check.h"
#include "core/tensor.h"

namespace cac::kernels::cuda {

inline void require_f32(const char* op, const Tensor& t) {
  CAC_CHECK(t.dtype() == DType::F32, "{} (CUDA): the GPU kernels take f32 tensors, got {}", op,
            t.str());
}

inline cudaStream_t stream() { return cac::cuda::compute_stream(); }

// Blocks for a grid-stride loop over n items: enough to fill every SM several times over.
inline int grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return int(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(cac::cuda::sm_count()) * 16)));
}

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block, returned to every thread. `scratch` holds 32 values in shared memory.
template <class T>
__device__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? scratch[lane] : T(0);
    v = warp_sum(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

}  // namespace cac::kernels::cuda
