// CUDA versions of kernels/batchnorm.h (f32), optionally with the LeakyReLU fused in.
//
// Training forward = 2 launches: (1) per-channel statistics: a grid of (splits x channels) blocks,
// each a Welford pass over its slice of the batch, merged in-block with Chan's formula; the last
// block of a channel to finish (arrival counter) merges the slices in double, writes mean/invstd
// and updates the running statistics (unbiased variance, momentum). (2) y = act(x*scale + shift),
// 16-byte loads and stores. Backward = 2 launches of the same shape: per-channel sums of g and
// g*(x - mean) (last block finalises dgamma/dbeta and the two coefficients of dx), then dx.
#include <cstdint>
#include <initializer_list>

#include "core/cuda_runtime.h"
#include "kernels/batchnorm.h"
#include "kernels/cuda/common.cuh"

namespace cac::kernels::cuda {

namespace {
constexpr int kThreads = 256;
constexpr int kMaxChannels = 16384;

// Arrival counters of the last-block pattern: zeroed once, and every last block resets its own,
// so each launch (and each replay of a captured graph) finds them at zero.
int* channel_counters() {
  static std::shared_ptr<Storage> block = [] {
    auto b = cac::cuda::allocate(kMaxChannels * sizeof(int));
    cac::cuda::memset_zero(b->data, kMaxChannels * sizeof(int));
    return b;
  }();
  return static_cast<int*>(block->data);
}

// Enough (split, channel) blocks to fill the GPU a few times, each with a whole number of images.
int splits_for(int N, int C) {
  const int want = std::max(1, 4 * cac::cuda::sm_count() / std::max(C, 1));
  return std::max(1, std::min({want, N, 64}));
}

struct Welford {
  float n, mean, m2;
};

__device__ __forceinline__ Welford merge(Welford a, Welford b) {
  const float n = a.n + b.n;
  if (n == 0.f) return a;
  const float delta = b.mean - a.mean, fb = b.n / n;
  return {n, a.mean + delta * fb, a.m2 + b.m2 + delta * delta * a.n * fb};
}

__device__ __forceinline__ Welford shfl_down(Welford w, int o) {
  return {__shfl_down_sync(0xffffffffu, w.n, o), __shfl_down_sync(0xffffffffu, w.mean, o),
          __shfl_down_sync(0xffffffffu, w.m2, o)};
}

// Thread 0 receives the block's merged statistics.
__device__ Welford block_merge(Welford w) {
  __shared__ Welford sh[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  for (int o = 16; o > 0; o >>= 1) w = merge(w, shfl_down(w, o));
  if (lane == 0) sh[warp] = w;
  __syncthreads();
  if (warp == 0) {
    w = lane < warps ? sh[lane] : Welford{0.f, 0.f, 0.f};
    for (int o = 16; o > 0; o >>= 1) w = merge(w, shfl_down(w, o));
  }
  return w;
}

// Returns true in thread 0 of the last block of channel c to arrive (after its own partial is
// visible to that block).
__device__ bool arrive_last(int* counters, int c, int splits) {
  __shared__ bool last;
  if (threadIdx.x == 0) {
    __threadfence();  // this block's partial is visible device-wide before it counts as arrived
    last = atomicAdd(&counters[c], 1) == splits - 1;
  }
  __syncthreads();
  return last;
}

// ---- forward statistics ---------------------------------------------------------------------------
__global__ void bn_stats(const float* __restrict__ x, bool vec4, int N, int C, int HW, int splits,
                         float* __restrict__ partial, int* __restrict__ counters, float momentum,
                         float eps, float* __restrict__ running_mean, float* __restrict__ running_var,
                         float* __restrict__ save_mean, float* __restrict__ save_invstd) {
  const int c = blockIdx.y, s = blockIdx.x;
  const int n0 = int(int64_t(s) * N / splits), n1 = int(int64_t(s + 1) * N / splits);
  Welford w{0.f, 0.f, 0.f};
  if (vec4) {
    // Four values at a time: their own mean and m2, merged into the running Welford state.
    const int64_t quads = int64_t(n1 - n0) * HW / 4;
    for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
      const int64_t e = q * 4;
      const int n = n0 + int(e / HW), i = int(e % HW);
      const float4 v = *reinterpret_cast<const float4*>(x + (int64_t(n) * C + c) * HW + i);
      const float m4 = 0.25f * (v.x + v.y + v.z + v.w);
      const float a = v.x - m4, b = v.y - m4, cc = v.z - m4, d = v.w - m4;
      w = merge(w, Welford{4.f, m4, a * a + b * b + cc * cc + d * d});
    }
  } else {
    const int64_t count = int64_t(n1 - n0) * HW;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const int n = n0 + int(e / HW), i = int(e % HW);
      const float v = x[(int64_t(n) * C + c) * HW + i];
      w.n += 1.f;
      const float delta = v - w.mean;
      w.mean += delta / w.n;
      w.m2 += delta * (v - w.mean);
    }
  }
  w = block_merge(w);
  if (threadIdx.x == 0) {
    float* p = partial + (int64_t(c) * splits + s) * 3;
    p[0] = w.n;
    p[1] = w.mean;
    p[2] = w.m2;
  }
  if (!arrive_last(counters, c, splits) || threadIdx.x != 0) return;
  // Last block: merge the slices in double (Chan), finalise, reset the counter.
  double n = 0, mean = 0, m2 = 0;
  for (int k = 0; k < splits; ++k) {
    const float* p = partial + (int64_t(c) * splits + k) * 3;
    const double nb = __ldcg(p), mb = __ldcg(p + 1), m2b = __ldcg(p + 2);
    const double tot = n + nb;
    if (tot == 0) continue;
    const double delta = mb - mean;
    mean += delta * nb / tot;
    m2 += m2b + delta * delta * n * nb / tot;
    n = tot;
  }
  const double var = m2 / n;
  save_mean[c] = float(mean);
  save_invstd[c] = float(1.0 / sqrt(var + double(eps)));
  const double unbiased = n > 1 ? m2 / (n - 1) : var;
  running_mean[c] = float((1.0 - momentum) * running_mean[c] + momentum * mean);
  running_var[c] = float((1.0 - momentum) * running_var[c] + momentum * unbiased);
  counters[c] = 0;
}

// ---- y = act(x * scale + shift) -------------------------------------------------------------------
__device__ __forceinline__ float act_fn(float v, bool leaky, float slope) {
  return leaky ? (v > 0.f ? v : v * slope) : v;
}

// kEval: `stat` is the running variance (invstd computed here); else the saved invstd.
template <bool kEval>
__global__ void bn_apply(const float* __restrict__ x, float* __restrict__ y, bool vec4,
                         const float* __restrict__ gamma, const float* __restrict__ beta,
                         const float* __restrict__ mean, const float* __restrict__ stat, float eps,
                         bool leaky, float slope, int C, int HW, int64_t total) {
  auto coeffs = [&](int c, float& scale, float& shift) {
    const float is = kEval ? float(1.0 / sqrt(double(stat[c]) + double(eps))) : stat[c];
    scale = gamma[c] * is;  // the same expressions as the backward's mask (and the CPU twin)
    shift = beta[c] - mean[c] * scale;
  };
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  if (vec4) {
    for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < total / 4; q += stride) {
      const int c = int((q * 4 / HW) % C);
      float scale, shift;
      coeffs(c, scale, shift);
      float4 v = reinterpret_cast<const float4*>(x)[q];
      v.x = act_fn(v.x * scale + shift, leaky, slope);
      v.y = act_fn(v.y * scale + shift, leaky, slope);
      v.z = act_fn(v.z * scale + shift, leaky, slope);
      v.w = act_fn(v.w * scale + shift, leaky, slope);
      reinterpret_cast<float4*>(y)[q] = v;
    }
  } else {
    for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += stride) {
      const int c = int((e / HW) % C);
      float scale, shift;
      coeffs(c, scale, shift);
      y[e] = act_fn(x[e] * scale + shift, leaky, slope);
    }
  }
}

// ---- backward --------------------------------------------------------------------------------------
struct BwdCoeffs {
  float mu, is, scale, shift;
};
__device__ __forceinline__ BwdCoeffs bwd_coeffs(const float* gamma, const float* beta,
                                                const float* mean, const float* invstd, int c) {
  BwdCoeffs k;
  k.mu = mean[c];
  k.is = invstd[c];
  k.scale = gamma[c] * k.is;
  k.shift = beta[c] - k.mu * k.scale;
  return k;
}
// Gradient at the BN output: the activation's mask comes from the recomputed pre-activation.
__device__ __forceinline__ float grad_pre(float g, float x, const BwdCoeffs& k, bool leaky, float slope) {
  return (!leaky || x * k.scale + k.shift > 0.f) ? g : g * slope;
}

__global__ void bn_bwd_reduce(const float* __restrict__ x, const float* __restrict__ gy, bool vec4,
                              const float* __restrict__ gamma, const float* __restrict__ beta,
                              const float* __restrict__ mean, const float* __restrict__ invstd,
                              bool leaky, float slope, bool training, int N, int C, int HW,
                              int splits, double* __restrict__ partial, int* __restrict__ counters,
                              float* __restrict__ ggamma, float* __restrict__ gbeta,
                              float* __restrict__ coef) {
  __shared__ double scratch[32];
  const int c = blockIdx.y, s = blockIdx.x;
  const int n0 = int(int64_t(s) * N / splits), n1 = int(int64_t(s + 1) * N / splits);
  const BwdCoeffs k = bwd_coeffs(gamma, beta, mean, invstd, c);
  float sg = 0.f, sgx = 0.f;  // sums of g and g*(x - mean) over this thread's elements
  if (vec4) {
    const int64_t quads = int64_t(n1 - n0) * HW / 4;
    for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
      const int64_t e = q * 4;
      const int64_t off = (int64_t(n0 + int(e / HW)) * C + c) * HW + e % HW;
      const float4 xv = *reinterpret_cast<const float4*>(x + off);
      const float4 gv = *reinterpret_cast<const float4*>(gy + off);
      const float g0 = grad_pre(gv.x, xv.x, k, leaky, slope), g1 = grad_pre(gv.y, xv.y, k, leaky, slope);
      const float g2 = grad_pre(gv.z, xv.z, k, leaky, slope), g3 = grad_pre(gv.w, xv.w, k, leaky, slope);
      sg += (g0 + g1) + (g2 + g3);
      sgx += (g0 * (xv.x - k.mu) + g1 * (xv.y - k.mu)) + (g2 * (xv.z - k.mu) + g3 * (xv.w - k.mu));
    }
  } else {
    const int64_t count = int64_t(n1 - n0) * HW;
    for (int64_t e = threadIdx.x; e < count; e += blockDim.x) {
      const int64_t off = (int64_t(n0 + int(e / HW)) * C + c) * HW + e % HW;
      const float g = grad_pre(gy[off], x[off], k, leaky, slope);
      sg += g;
      sgx += g * (x[off] - k.mu);
    }
  }
  const double bsg = block_sum(double(sg), scratch);
  const double bsgx = block_sum(double(sgx), scratch);
  if (threadIdx.x == 0) {
    partial[(int64_t(c) * splits + s) * 2] = bsg;
    partial[(int64_t(c) * splits + s) * 2 + 1] = bsgx;
  }
  if (!arrive_last(counters, c, splits) || threadIdx.x != 0) return;
  double tg = 0, tgx = 0;
  for (int j = 0; j < splits; ++j) {
    tg += __ldcg(partial + (int64_t(c) * splits + j) * 2);
    tgx += __ldcg(partial + (int64_t(c) * splits + j) * 2 + 1);
  }
  const double M = double(N) * HW;
  gbeta[c] = float(tg);
  ggamma[c] = float(tgx * k.is);
  coef[2 * c] = training ? float(tg / M) : 0.f;                 // mean of g
  coef[2 * c + 1] = training ? float(tgx * k.is / M) : 0.f;     // mean of g * xhat
  counters[c] = 0;
}

__global__ void bn_bwd_dx(const float* __restrict__ x, const float* __restrict__ gy, bool vec4,
                          const float* __restrict__ gamma, const float* __restrict__ beta,
                          const float* __restrict__ mean, const float* __restrict__ invstd,
                          const float* __restrict__ coef, bool leaky, float slope, int C, int HW,
                          int64_t total, float* __restrict__ gx) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  // dx = gamma*invstd * (g - mean(g) - xhat * mean(g*xhat)); the means are 0 in eval mode.
  if (vec4) {
    for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < total / 4; q += stride) {
      const int c = int((q * 4 / HW) % C);
      const BwdCoeffs k = bwd_coeffs(gamma, beta, mean, invstd, c);
      const float k1 = k.scale, mg = coef[2 * c], mgx = coef[2 * c + 1];
      const float4 xv = reinterpret_cast<const float4*>(x)[q];
      const float4 gv = reinterpret_cast<const float4*>(gy)[q];
      float4 o;
      o.x = k1 * (grad_pre(gv.x, xv.x, k, leaky, slope) - mg - (xv.x - k.mu) * k.is * mgx);
      o.y = k1 * (grad_pre(gv.y, xv.y, k, leaky, slope) - mg - (xv.y - k.mu) * k.is * mgx);
      o.z = k1 * (grad_pre(gv.z, xv.z, k, leaky, slope) - mg - (xv.z - k.mu) * k.is * mgx);
      o.w = k1 * (grad_pre(gv.w, xv.w, k, leaky, slope) - mg - (xv.w - k.mu) * k.is * mgx);
      reinterpret_cast<float4*>(gx)[q] = o;
    }
  } else {
    for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += stride) {
      const int c = int((e / HW) % C);
      const BwdCoeffs k = bwd_coeffs(gamma, beta, mean, invstd, c);
      gx[e] = k.scale * (grad_pre(gy[e], x[e], k, leaky, slope) - coef[2 * c] -
                         (x[e] - k.mu) * k.is * coef[2 * c + 1]);
    }
  }
}

struct Shape4 {
  int N, C, HW;
  int64_t total;
};
Shape4 shape_of(const Tensor& x) {
  Shape4 s{int(x.dim(0)), int(x.dim(1)), int(x.dim(2) * x.dim(3)), x.numel()};
  CAC_CHECK(s.C <= kMaxChannels, "batch_norm2d (CUDA): {} channels exceed the supported {}", s.C,
            kMaxChannels);
  return s;
}
// 16-byte loads need whole float4s per plane and 16-byte aligned bases (views may be offset).
bool vec4_ok(int HW, std::initializer_list<const void*> ptrs) {
  if (HW % 4 != 0) return false;
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}
int apply_grid(int64_t total, bool vec4) { return grid_for(vec4 ? total / 4 : total, kThreads); }
}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                             BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  require_f32("batch_norm2d", x);
  const Shape4 s = shape_of(x);
  if (s.total == 0) return;
  const int splits = splits_for(s.N, s.C);
  const bool vec4 = vec4_ok(s.HW, {x.raw(), y.raw()});
  Tensor partial = Tensor::empty({s.C, splits, 3}, DType::F32, Device::CUDA);
  bn_stats<<<dim3(splits, s.C), kThreads, 0, stream()>>>(
      x.data<float>(), vec4, s.N, s.C, s.HW, splits, partial.data<float>(), channel_counters(),
      float(momentum), float(eps), running_mean.data<float>(), running_var.data<float>(),
      save_mean.data<float>(), save_invstd.data<float>());
  CUDA_CHECK_LAUNCH();
  bn_apply<false><<<apply_grid(s.total, vec4), kThreads, 0, stream()>>>(
      x.data<float>(), y.data<float>(), vec4, gamma.data<float>(), beta.data<float>(), save_mean.data<float>(),
      save_invstd.data<float>(), float(eps), act.leaky, float(act.slope), s.C, s.HW, s.total);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, double eps,
                            BnActivation act, Tensor& y) {
  require_f32("batch_norm2d", x);
  const Shape4 s = shape_of(x);
  if (s.total == 0) return;
  const bool vec4 = vec4_ok(s.HW, {x.raw(), y.raw()});
  bn_apply<true><<<apply_grid(s.total, vec4), kThreads, 0, stream()>>>(
      x.data<float>(), y.data<float>(), vec4, gamma.data<float>(), beta.data<float>(),
      running_mean.data<float>(), running_var.data<float>(), float(eps), act.leaky, float(act.slope),
      s.C, s.HW, s.total);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                        const Tensor& invstd, const Tensor& gy, BnActivation act, bool training,
                        Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  require_f32("batch_norm2d_backward", x);
  const Shape4 s = shape_of(x);
  if (s.total == 0) return;
  const int splits = splits_for(s.N, s.C);
  Tensor partial = Tensor::empty({s.C, splits, 2}, DType::F64, Device::CUDA);
  Tensor coef = Tensor::empty({s.C, 2}, DType::F32, Device::CUDA);
  const bool vec4 = vec4_ok(s.HW, {x.raw(), gy.raw(), gx ? gx->raw() : nullptr});
  bn_bwd_reduce<<<dim3(splits, s.C), kThreads, 0, stream()>>>(
      x.data<float>(), gy.data<float>(), vec4, gamma.data<float>(), beta.data<float>(), mean.data<float>(),
      invstd.data<float>(), act.leaky, float(act.slope), training, s.N, s.C, s.HW, splits,
      partial.data<double>(), channel_counters(), ggamma.data<float>(), gbeta.data<float>(),
      coef.data<float>());
  CUDA_CHECK_LAUNCH();
  if (!gx) return;
  bn_bwd_dx<<<apply_grid(s.total, vec4), kThreads, 0, stream()>>>(
      x.data<float>(), gy.data<float>(), vec4, gamma.data<float>(), beta.data<float>(), mean.data<float>(),
      invstd.data<float>(), coef.data<float>(), act.leaky, float(act.slope), s.C, s.HW, s.total,
      gx->data<float>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace cac::kernels::cuda
