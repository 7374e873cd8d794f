// CUDA versions of kernels/distance.h (f32): one launch forward, one launch backward (to z and c).
#include "kernels/cuda/common.cuh"
#include "kernels/distance.h"

namespace cac::kernels::cuda {

namespace {
constexpr int kThreads = 256;

// One thread per (b, k); the reduction over the width runs in double, like the reference twin,
// so that near-equal z and c do not lose the distance to cancellation.
__global__ void distance_fwd(const float* __restrict__ z, const float* __restrict__ c,
                             float* __restrict__ d, int B, int K, int N) {
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < int64_t(B) * K;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int b = int(idx / K), k = int(idx % K);
    double s = 0;
    for (int n = 0; n < N; ++n) {
      const double diff = double(z[int64_t(b) * N + n]) - c[int64_t(k) * N + n];
      s += diff * diff;
    }
    d[idx] = float(sqrt(s));
  }
}

// Threads [0, B*N) compute gz[b, n]; threads [B*N, B*N + K*N) compute gc[k, n]. w = gd/d, 0 at d = 0.
__global__ void distance_bwd(const float* __restrict__ z, const float* __restrict__ c,
                             const float* __restrict__ d, const float* __restrict__ gd,
                             float* __restrict__ gz, float* __restrict__ gc, int B, int K, int N) {
  const int64_t nz = gz ? int64_t(B) * N : 0, nc = gc ? int64_t(K) * N : 0;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < nz + nc;
       idx += int64_t(gridDim.x) * blockDim.x) {
    if (idx < nz) {
      const int b = int(idx / N), n = int(idx % N);
      float s = 0.f;
      for (int k = 0; k < K; ++k) {
        const float dist = d[int64_t(b) * K + k];
        const float w = dist > 0.f ? gd[int64_t(b) * K + k] / dist : 0.f;
        s += w * (z[idx] - c[int64_t(k) * N + n]);
      }
      gz[idx] = s;
    } else {
      const int64_t j = idx - nz;
      const int k = int(j / N), n = int(j % N);
      float s = 0.f;
      for (int b = 0; b < B; ++b) {
        const float dist = d[int64_t(b) * K + k];
        const float w = dist > 0.f ? gd[int64_t(b) * K + k] / dist : 0.f;
        s -= w * (z[int64_t(b) * N + n] - c[j]);
      }
      gc[j] = s;
    }
  }
}
}  // namespace

void distance_forward(const Tensor& z, const Tensor& c, Tensor& d) {
  require_f32("pairwise_distance", z);
  const int B = int(z.dim(0)), K = int(c.dim(0)), N = int(z.dim(1));
  if (int64_t(B) * K == 0) return;
  distance_fwd<<<grid_for(int64_t(B) * K, kThreads), kThreads, 0, stream()>>>(
      z.data<float>(), c.data<float>(), d.data<float>(), B, K, N);
  CUDA_CHECK_LAUNCH();
}

void distance_backward(const Tensor& z, const Tensor& c, const Tensor& d, const Tensor& gd, Tensor* gz,
                       Tensor* gc) {
  require_f32("pairwise_distance_backward", z);
  const int B = int(z.dim(0)), K = int(c.dim(0)), N = int(z.dim(1));
  const int64_t total = (gz ? int64_t(B) * N : 0) + (gc ? int64_t(K) * N : 0);
  if (total == 0) return;
  distance_bwd<<<grid_for(total, kThreads), kThreads, 0, stream()>>>(
      z.data<float>(), c.data<float>(), d.data<float>(), gd.data<float>(),
      gz ? gz->data<float>() : nullptr, gc ? gc->data<float>() : nullptr, B, K, N);
  CUDA_CHECK_LAUNCH();
}

}  // namespace cac::kernels::cuda
