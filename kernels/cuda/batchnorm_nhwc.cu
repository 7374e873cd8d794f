// Channels-last bf16 batch norm on the GPU (kernels/batchnorm_nhwc.h). Each direction is three
// launches: per-block sums over a slice of rows for every channel (a row is one pixel's C channels,
// contiguous, so a warp reads whole rows), a per-channel finish in float64, then one elementwise
// pass. The forward's sums are shifted by the first row's values (var = E[(x-k)^2] - E[x-k]^2 loses
// nothing to cancellation when k is near the mean); partial sums are float within a thread, float64
// across the block and the grid. Each thread moves 8 bf16 values at a time (16 bytes) where C is a
// multiple of 8 and the tensors are 16-byte aligned, else pairs where C is even, else one. The
// per-element expressions are the CPU twin's (batchnorm_nhwc_math.h).
#include <algorithm>

#include "core/bf16.h"
#include "kernels/batchnorm_nhwc.h"
#include "kernels/batchnorm_nhwc_math.h"
#include "kernels/cuda/common.cuh"

namespace cac::kernels::cuda {

namespace {
constexpr int kThreads = 256;

// V bf16 values moved as one aligned load or store (V = 8: 16 bytes, the widest; more bytes in
// flight per thread is what keeps these memory-bound passes near the copy rate).
template <int V>
struct Pack;
template <>
struct Pack<2> {
  using T = uint32_t;
};
template <>
struct Pack<8> {
  using T = uint4;
};
template <int V>
__device__ __forceinline__ void load(const uint16_t* p, int64_t i, float* v) {
  if constexpr (V == 1) {
    v[0] = bf16_to_float(p[i]);
  } else {
    const typename Pack<V>::T w = *reinterpret_cast<const typename Pack<V>::T*>(p + i);
    const uint32_t* u = reinterpret_cast<const uint32_t*>(&w);
#pragma unroll
    for (int k = 0; k < V / 2; ++k) {
      v[2 * k] = bf16_to_float(uint16_t(u[k] & 0xffffu));
      v[2 * k + 1] = bf16_to_float(uint16_t(u[k] >> 16));
    }
  }
}
template <int V>
__device__ __forceinline__ void store(uint16_t* p, int64_t i, const float* v) {
  if constexpr (V == 1) {
    p[i] = bf16_bits(v[0]);
  } else {
    typename Pack<V>::T w;
    uint32_t* u = reinterpret_cast<uint32_t*>(&w);
#pragma unroll
    for (int k = 0; k < V / 2; ++k) u[k] = uint32_t(bf16_bits(v[2 * k])) | (uint32_t(bf16_bits(v[2 * k + 1])) << 16);
    *reinterpret_cast<typename Pack<V>::T*>(p + i) = w;
  }
}

// The block's per-thread sums (a[], b[] for V channels from channel u * V) over its P row lanes,
// summed per channel in float64 into partial[block][2][C].
template <int V>
__device__ void block_partials(const float* a, const float* b, int C, int P, double* partial) {
  extern __shared__ float sh[];  // [2][P][C]
  const int U = C / V, u = threadIdx.x % U, j = threadIdx.x / U;
  if (j < P)
    for (int e = 0; e < V; ++e) {
      sh[j * C + u * V + e] = a[e];
      sh[(P + j) * C + u * V + e] = b[e];
    }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    double sa = 0, sb = 0;
    for (int k = 0; k < P; ++k) sa += sh[k * C + c], sb += sh[(P + k) * C + c];
    partial[(size_t(blockIdx.x) * 2) * C + c] = sa;
    partial[(size_t(blockIdx.x) * 2 + 1) * C + c] = sb;
  }
}

// Forward sums: (x - k) and (x - k)^2 per channel, k = row 0's value.
template <int V>
__global__ void nhwc_stats(const uint16_t* __restrict__ x, int64_t R, int C, int P, int64_t chunk,
                           double* __restrict__ partial) {
  const int U = C / V, u = threadIdx.x % U, j = threadIdx.x / U;
  float s[V] = {}, q[V] = {}, k[V], v[V];
  load<V>(x, int64_t(u) * V, k);
  const int64_t r0 = blockIdx.x * chunk, r1 = min(R, r0 + chunk);
  if (j < P) {
#pragma unroll 4  // several rows' loads in flight per thread
    for (int64_t r = r0 + j; r < r1; r += P) {
      load<V>(x, r * C + int64_t(u) * V, v);
      for (int e = 0; e < V; ++e) {
        const float d = v[e] - k[e];
        s[e] += d;
        q[e] = fmaf(d, d, q[e]);
      }
    }
  }
  block_partials<V>(s, q, C, P, partial);
}

// The two per-channel sums of every block's partials, one warp per channel (the lanes split the
// blocks; a single thread per channel would walk hundreds of them in turn). Lane 0 holds them.
__device__ __forceinline__ bool channel_totals(const double* __restrict__ partial, int blocks, int C, int* c_out,
                                               double* a, double* b) {
  const int lane = threadIdx.x % 32, c = int(blockIdx.x) * (int(blockDim.x) / 32) + int(threadIdx.x) / 32;
  if (c >= C) return false;
  double sa = 0, sb = 0;
  for (int i = lane; i < blocks; i += 32) sa += partial[(size_t(i) * 2) * C + c], sb += partial[(size_t(i) * 2 + 1) * C + c];
  sa = warp_sum(sa);
  sb = warp_sum(sb);
  *c_out = c, *a = sa, *b = sb;
  return lane == 0;
}
constexpr int kChannelsPerFinish = kThreads / 32;

// Per channel: the batch statistics, running statistics, saved mean/invstd, and the affine.
__global__ void nhwc_finish_forward(const double* __restrict__ partial, int blocks, const uint16_t* __restrict__ x,
                                    int64_t R, int C, const float* __restrict__ gamma, const float* __restrict__ beta,
                                    float* rm, float* rv, double momentum, double eps, float* save_mean,
                                    float* save_invstd, float* coef) {
  int c;
  double a, b;
  if (!channel_totals(partial, blocks, C, &c, &a, &b)) return;
  const double M = double(R), dm = a / M, mean = double(bf16_to_float(x[c])) + dm;
  const double var = fmax(b / M - dm * dm, 0.0), unbiased = M > 1 ? var * M / (M - 1) : var;
  rm[c] = float((1 - momentum) * rm[c] + momentum * mean);
  rv[c] = float((1 - momentum) * rv[c] + momentum * unbiased);
  const float mf = float(mean), is = float(1.0 / sqrt(var + eps));
  save_mean[c] = mf;
  save_invstd[c] = is;
  const BnAffine af = bn_affine(gamma[c], beta[c], mf, is);
  coef[c] = af.scale;
  coef[C + c] = af.shift;
}

template <int V>
__global__ void nhwc_normalise(const uint16_t* __restrict__ x, uint16_t* __restrict__ y, int64_t units, int C,
                               const float* __restrict__ coef, bool leaky, float slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < units; i += int64_t(gridDim.x) * blockDim.x) {
    const int c0 = int((i * V) % C);
    float v[V];
    load<V>(x, i * V, v);
    for (int e = 0; e < V; ++e) v[e] = bn_act(bn_pre(v[e], BnAffine{coef[c0 + e], coef[C + c0 + e]}), leaky, slope);
    store<V>(y, i * V, v);
  }
}

// Eval: the affine from the running statistics.
__global__ void nhwc_finish_eval(int C, const float* __restrict__ gamma, const float* __restrict__ beta,
                                 const float* __restrict__ rm, const float* __restrict__ rv, double eps, float* coef) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const BnAffine af = bn_affine(gamma[c], beta[c], rm[c], float(1.0 / sqrt(double(rv[c]) + eps)));
  coef[c] = af.scale;
  coef[C + c] = af.shift;
}

// Backward sums: g and g * (x - mean) per channel, g = gy through the activation's mask.
template <int V>
__global__ void nhwc_grad_sums(const uint16_t* __restrict__ x, const uint16_t* __restrict__ gy, int64_t R, int C,
                               int P, int64_t chunk, const float* __restrict__ gamma, const float* __restrict__ beta,
                               const float* __restrict__ mean, const float* __restrict__ invstd, bool leaky, float slope,
                               double* __restrict__ partial) {
  const int U = C / V, u = threadIdx.x % U, j = threadIdx.x / U;
  float s[V] = {}, q[V] = {}, xv[V], gv[V], mu[V];
  BnAffine af[V];
  for (int e = 0; e < V; ++e) {
    const int c = u * V + e;
    mu[e] = mean[c];
    af[e] = bn_affine(gamma[c], beta[c], mean[c], invstd[c]);
  }
  const int64_t r0 = blockIdx.x * chunk, r1 = min(R, r0 + chunk);
  if (j < P) {
#pragma unroll 4  // several rows' loads in flight per thread
    for (int64_t r = r0 + j; r < r1; r += P) {
      load<V>(x, r * C + int64_t(u) * V, xv);
      load<V>(gy, r * C + int64_t(u) * V, gv);
      for (int e = 0; e < V; ++e) {
        const float g = bn_grad_pre(gv[e], xv[e], af[e], leaky, slope);
        s[e] += g;
        q[e] = fmaf(g, xv[e] - mu[e], q[e]);
      }
    }
  }
  block_partials<V>(s, q, C, P, partial);
}

// Per channel: ggamma, gbeta and the coefficients of gx ([7][C]: scale, shift, k1, mean_g, mean_gx,
// mean, invstd).
__global__ void nhwc_finish_backward(const double* __restrict__ partial, int blocks, int64_t R, int C,
                                     const float* __restrict__ gamma, const float* __restrict__ beta,
                                     const float* __restrict__ mean, const float* __restrict__ invstd, float* ggamma,
                                     float* gbeta, float* coef) {
  int c;
  double sg, sgx;
  if (!channel_totals(partial, blocks, C, &c, &sg, &sgx)) return;
  const double M = double(R);
  const float is = invstd[c];
  gbeta[c] = float(sg);
  ggamma[c] = float(sgx * is);
  const BnAffine af = bn_affine(gamma[c], beta[c], mean[c], is);
  const float k[7] = {af.scale, af.shift, gamma[c] * is, float(sg / M), float(sgx * is / M), mean[c], is};
  for (int i = 0; i < 7; ++i) coef[i * C + c] = k[i];
}

template <int V>
__global__ void nhwc_grad_input(const uint16_t* __restrict__ x, const uint16_t* __restrict__ gy,
                                uint16_t* __restrict__ gx, int64_t units, int C, const float* __restrict__ coef,
                                bool leaky, float slope) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < units; i += int64_t(gridDim.x) * blockDim.x) {
    const int c0 = int((i * V) % C);
    float xv[V], gv[V];
    load<V>(x, i * V, xv);
    load<V>(gy, i * V, gv);
    for (int e = 0; e < V; ++e) {
      const int c = c0 + e;
      const BnAffine af{coef[c], coef[C + c]};
      const BnBackwardCoef k{coef[2 * C + c], coef[3 * C + c], coef[4 * C + c], coef[5 * C + c], coef[6 * C + c]};
      gv[e] = bn_grad_input(bn_grad_pre(gv[e], xv[e], af, leaky, slope), xv[e], k);
    }
    store<V>(gx, i * V, gv);
  }
}

// How the blocks cover the rows: V channels per thread (8, 2 or 1, as above), U = C / V threads per
// row, P rows at a time, `blocks` slices of `chunk` rows.
struct Tiling {
  int V = 1, U = 0, P = 0, blocks = 0;
  int64_t R = 0, chunk = 0;
};
Tiling tiling_for(const Tensor& x, std::initializer_list<const Tensor*> others) {
  Tiling t;
  const int64_t C = x.dim(3);
  t.R = x.numel() / C;
  auto aligned = [&](uintptr_t bytes) {
    bool ok = reinterpret_cast<uintptr_t>(x.raw()) % bytes == 0;
    for (const Tensor* o : others) ok = ok && reinterpret_cast<uintptr_t>(o->raw()) % bytes == 0;
    return ok;
  };
  t.V = C % 8 == 0 && aligned(16) ? 8 : C % 2 == 0 && aligned(4) ? 2 : 1;
  CAC_CHECK(C / t.V <= kThreads,
            "batchnorm_nhwc (CUDA): {} channels, {} per thread, are more than a block of {} threads covers", C, t.V,
            kThreads);
  t.U = int(C / t.V);
  t.P = kThreads / t.U;
  t.blocks = int(std::max<int64_t>(1, std::min<int64_t>((t.R + t.P - 1) / t.P, int64_t(cac::cuda::sm_count()) * 4)));
  t.chunk = (t.R + t.blocks - 1) / t.blocks;
  return t;
}
// The kernel instance for the tiling's width.
template <class F>
F by_width(int V, F eight, F two, F one) {
  return V == 8 ? eight : V == 2 ? two : one;
}
const uint16_t* bits(const Tensor& t) { return reinterpret_cast<const uint16_t*>(t.data<bf16>()); }
uint16_t* bits(Tensor& t) { return reinterpret_cast<uint16_t*>(t.data<bf16>()); }

// y = bf16(act(x * coef[c] + coef[C + c])), the forward's last pass (training and eval).
void normalise(const Tiling& t, const Tensor& x, Tensor& y, const Tensor& coef, BnActivation act) {
  const int64_t units = x.numel() / t.V;
  auto kernel = by_width(t.V, nhwc_normalise<8>, nhwc_normalise<2>, nhwc_normalise<1>);
  kernel<<<grid_for(units, kThreads), kThreads, 0, stream()>>>(bits(x), bits(y), units, int(x.dim(3)),
                                                               coef.data<float>(), act.leaky, float(act.slope));
  CUDA_CHECK_LAUNCH();
}
}  // namespace

void batchnorm_nhwc_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                  Tensor& running_var, double momentum, double eps, BnActivation act, Tensor& y,
                                  Tensor& save_mean, Tensor& save_invstd) {
  if (x.numel() == 0) return;
  const int C = int(x.dim(3));
  const Tiling t = tiling_for(x, {&y});
  Tensor partial = Tensor::empty({t.blocks, 2, C}, DType::F64, Device::CUDA);
  Tensor coef = Tensor::empty({2, C}, DType::F32, Device::CUDA);
  const size_t shared = size_t(2) * t.P * C * sizeof(float);
  auto stats = by_width(t.V, nhwc_stats<8>, nhwc_stats<2>, nhwc_stats<1>);
  stats<<<t.blocks, kThreads, shared, stream()>>>(bits(x), t.R, C, t.P, t.chunk, partial.data<double>());
  CUDA_CHECK_LAUNCH();
  nhwc_finish_forward<<<(C + kChannelsPerFinish - 1) / kChannelsPerFinish, kThreads, 0, stream()>>>(
      partial.data<double>(), t.blocks, bits(x), t.R, C, gamma.data<float>(), beta.data<float>(),
      running_mean.data<float>(), running_var.data<float>(), momentum, eps, save_mean.data<float>(),
      save_invstd.data<float>(), coef.data<float>());
  CUDA_CHECK_LAUNCH();
  normalise(t, x, y, coef, act);
}

void batchnorm_nhwc_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                                 const Tensor& running_var, double eps, BnActivation act, Tensor& y) {
  if (x.numel() == 0) return;
  const int C = int(x.dim(3));
  const Tiling t = tiling_for(x, {&y});
  Tensor coef = Tensor::empty({2, C}, DType::F32, Device::CUDA);
  nhwc_finish_eval<<<(C + kThreads - 1) / kThreads, kThreads, 0, stream()>>>(
      C, gamma.data<float>(), beta.data<float>(), running_mean.data<float>(), running_var.data<float>(), eps,
      coef.data<float>());
  CUDA_CHECK_LAUNCH();
  normalise(t, x, y, coef, act);
}

void batchnorm_nhwc_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                             const Tensor& invstd, const Tensor& gy, BnActivation act, Tensor& gx, Tensor& ggamma,
                             Tensor& gbeta) {
  const int C = int(x.dim(3));
  if (x.numel() == 0) {
    ggamma.zero_();
    gbeta.zero_();
    return;
  }
  const Tiling t = tiling_for(x, {&gy, &gx});
  Tensor partial = Tensor::empty({t.blocks, 2, C}, DType::F64, Device::CUDA);
  Tensor coef = Tensor::empty({7, C}, DType::F32, Device::CUDA);
  const size_t shared = size_t(2) * t.P * C * sizeof(float);
  auto sums = by_width(t.V, nhwc_grad_sums<8>, nhwc_grad_sums<2>, nhwc_grad_sums<1>);
  sums<<<t.blocks, kThreads, shared, stream()>>>(bits(x), bits(gy), t.R, C, t.P, t.chunk, gamma.data<float>(),
                                                 beta.data<float>(), mean.data<float>(), invstd.data<float>(),
                                                 act.leaky, float(act.slope), partial.data<double>());
  CUDA_CHECK_LAUNCH();
  nhwc_finish_backward<<<(C + kChannelsPerFinish - 1) / kChannelsPerFinish, kThreads, 0, stream()>>>(
      partial.data<double>(), t.blocks, t.R, C, gamma.data<float>(), beta.data<float>(), mean.data<float>(),
      invstd.data<float>(), ggamma.data<float>(), gbeta.data<float>(), coef.data<float>());
  CUDA_CHECK_LAUNCH();
  const int64_t units = x.numel() / t.V;
  auto input = by_width(t.V, nhwc_grad_input<8>, nhwc_grad_input<2>, nhwc_grad_input<1>);
  input<<<grid_for(units, kThreads), kThreads, 0, stream()>>>(bits(x), bits(gy), bits(gx), units, C,
                                                              coef.data<float>(), act.leaky, float(act.slope));
  CUDA_CHECK_LAUNCH();
}

}  // namespace cac::kernels::cuda
