#pragma once
// The CUDA batch-norm kernels (f32, LeakyReLU optionally fused) and what launching them needs:
// the device building blocks (Welford merges, the per-channel barrier, slices, cp.async), the
// kernels the library ships, and the host helpers that size and launch them (occupancy, cluster
// geometry). kernels/cuda/batchnorm.cu picks among them by shape; dev/bn_lab builds its candidate
// kernels from the same blocks and times them against these. Everything is in an unnamed
// namespace: each translation unit that includes this file gets its own copy.
//
// The designs (kernels/batchnorm_paths.h names them; measurements in docs/performance.md):
// * Single launch (backward): a cooperative grid of (group x split) blocks; a group walks channels
//   c = g, g + groups, ...; each block loads its slice of channel c into registers (all loads in
//   flight at once), publishes the sums of g and g*(x - mean), waits at the channel's arrival
//   counter for the other slices, merges all partials in the same fixed order as every other block
//   (so all agree bit for bit), and writes dx from registers. The activation crosses DRAM once.
//   Cooperative launch guarantees the blocks of a channel are co-resident, so the wait ends.
// * Reread (forward): the same barrier, one round at any size, each thread holding part of its
//   slice in shared memory and reading the rest twice (the second time from L2); bn_forward_reread.
// * Cluster (forward, sm_90+): one thread-block cluster per channel, the statistics merged through
//   distributed shared memory at the cluster's barrier; bn_forward_cluster.
// * Sliced two passes: (1) block b reduces slice b % splits of channel b / splits (Welford, merged
//   in-block with Chan's formula); the last block of a channel to finish (arrival counter) merges
//   the slices in double, writes mean/invstd and updates the running statistics (unbiased
//   variance, momentum). (2) y = act(x*scale + shift) over the same slices in reverse order, so it
//   re-reads first what pass 1 read last (still in L2). Backward alike. Used where a channel's
//   slices cannot all be co-resident.
// * Flat two passes: (splits x channels) reduction blocks over whole images, then a grid-stride
//   elementwise pass in memory order; the only path for odd planes (HW % 4 != 0) and unaligned views.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include <cooperative_groups.h>

#include "core/cuda_runtime.h"
#include "kernels/batchnorm.h"
#include "kernels/batchnorm_paths.h"
#include "kernels/cuda/common.cuh"

namespace cac::kernels::cuda {
namespace {
constexpr int kThreads = 256;
constexpr int kMaxChannels = 16384;

// Arrival counters of the last-block pattern and the single-launch barrier (kMaxChannels each:
// arrivals, then departures): zeroed once, and every launch leaves them at zero again (the last
// block of a channel resets its own), so each launch (and each replay of a captured graph) finds
// them at zero.
int* channel_counters() {
  static std::shared_ptr<Storage> block = [] {
    auto b = cac::cuda::allocate(2 * kMaxChannels * sizeof(int));
    cac::cuda::memset_zero(b->data, 2 * kMaxChannels * sizeof(int));
    return b;
  }();
  return static_cast<int*>(block->data);
}

// Enough (split, channel) blocks to fill the GPU several times, each with a whole number of images.
int splits_for(int N, int C) {
  const int want = std::max(1, 8 * cac::cuda::sm_count() / std::max(C, 1));
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

// A thread's sums of (x - shift) and (x - shift)^2 over `count` values as a Welford state.
__device__ __forceinline__ Welford thread_state(float sum, float sq, int count, float shift) {
  if (count == 0) return Welford{0.f, 0.f, 0.f};
  const float n = float(count), m = sum / n;
  return Welford{n, shift + m, fmaxf(sq - sum * m, 0.f)};
}

// A thread's running sums of x - shift and (x - shift)^2 (shift = a value of the channel keeps the
// variance from cancelling, see bn_stats), as a Welford state at the end.
struct SliceSums {
  float shift, sum = 0.f, sq = 0.f;
  int count = 0;
  __device__ explicit SliceSums(float centre) : shift(centre) {}
  __device__ __forceinline__ void add(float4 v) {
    const float a = v.x - shift, b = v.y - shift, cc = v.z - shift, d = v.w - shift;
    sum += (a + b) + (cc + d);
    sq += (a * a + b * b) + (cc * cc + d * d);
    count += 4;
  }
  __device__ __forceinline__ Welford state() const { return thread_state(sum, sq, count, shift); }
};

struct ChannelStats {
  double n, mean, m2;
};
// Called by one whole warp: lane k merges partials k, k+32, ... (`load(k)` returns partial k as
// (n, mean, m2); one load latency, not `count` of them), then the lanes merge by shuffles; all in
// double (Chan's formula). The result is valid in lane 0 and depends only on the partials, so every
// caller gets the same bits.
template <class Load>
__device__ ChannelStats merge_partials(int count, Load&& load) {
  const int lane = threadIdx.x & 31;
  double n = 0, mean = 0, m2 = 0;
  auto chan = [&](double nb, double mb, double m2b) {
    const double tot = n + nb;
    if (tot == 0) return;
    const double delta = mb - mean;
    mean += delta * nb / tot;
    m2 += m2b + delta * delta * n * nb / tot;
    n = tot;
  };
  for (int k = lane; k < count; k += 32) {
    const float3 p = load(k);
    chan(p.x, p.y, p.z);
  }
  for (int o = 16; o > 0; o >>= 1) {
    const double nb = __shfl_down_sync(0xffffffffu, n, o), mb = __shfl_down_sync(0xffffffffu, mean, o),
                 m2b = __shfl_down_sync(0xffffffffu, m2, o);
    chan(nb, mb, m2b);
  }
  return {n, mean, m2};
}
// The slices' partials of channel c, stored in global memory by the other blocks.
__device__ ChannelStats merge_slices(const float* partial, int c, int splits) {
  return merge_partials(splits, [&](int k) {
    const float* p = partial + (int64_t(c) * splits + k) * 3;
    return make_float3(__ldcg(p), __ldcg(p + 1), __ldcg(p + 2));  // L2: other blocks wrote them
  });
}

// The mean and invstd the normalisation and backward use (rounded to float once, here, so the
// forward and the backward's activation mask see the same numbers).
__device__ float2 normalisation(const ChannelStats& st, float eps) {
  return make_float2(float(st.mean), float(1.0 / sqrt(st.m2 / st.n + double(eps))));
}
// Running statistics: momentum update with the unbiased variance.
__device__ void update_running(const ChannelStats& st, int c, float momentum, float* running_mean,
                               float* running_var) {
  const double unbiased = st.n > 1 ? st.m2 / (st.n - 1) : st.m2 / st.n;
  running_mean[c] = float((1.0 - momentum) * running_mean[c] + momentum * st.mean);
  running_var[c] = float((1.0 - momentum) * running_var[c] + momentum * unbiased);
}
// One thread, with channel c's merged statistics: returns (mean, invstd); where `owner` (the one
// block of the channel that does it) also saves them and updates the running statistics.
__device__ float2 finalise_channel(const ChannelStats& st, bool owner, int c, float momentum, float eps,
                                   float* running_mean, float* running_var, float* save_mean, float* save_invstd) {
  const float2 mi = normalisation(st, eps);
  if (owner) {
    save_mean[c] = mi.x;
    save_invstd[c] = mi.y;
    update_running(st, c, momentum, running_mean, running_var);
  }
  return mi;
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

// Visits this block's part of channel c over images [n0, n1) in units of V floats, with no
// division in the loop (row/column counters step by blockDim).
template <int V, class F>
__device__ __forceinline__ void for_channel_slice(int n0, int n1, int C, int c, int HW, F&& f) {
  const int upr = HW / V, total = (n1 - n0) * upr;
  int r = int(threadIdx.x) / upr, col = int(threadIdx.x) % upr;
  const int step_r = int(blockDim.x) / upr, step_c = int(blockDim.x) % upr;
#pragma unroll 4
  for (int u = threadIdx.x; u < total; u += blockDim.x) {
    f((int64_t(n0 + r) * C + c) * HW + int64_t(col) * V);
    col += step_c;
    r += step_r;
    if (col >= upr) {
      col -= upr;
      ++r;
    }
  }
}

__device__ __forceinline__ void store_welford(float* partial, int c, int splits, int s, const Welford& w) {
  float* p = partial + (int64_t(c) * splits + s) * 3;
  p[0] = w.n;
  p[1] = w.mean;
  p[2] = w.m2;
}

// Two-pass statistics, after this block stored its partial: the last block of channel c to
// arrive merges the slices, writes mean/invstd, updates the running statistics and resets the
// channel's counter.
__device__ void finalise_if_last(const float* partial, int* counters, int c, int splits, float momentum,
                                 float eps, float* running_mean, float* running_var, float* save_mean,
                                 float* save_invstd) {
  if (!arrive_last(counters, c, splits) || threadIdx.x >= 32) return;
  const ChannelStats st = merge_slices(partial, c, splits);
  if (threadIdx.x != 0) return;
  finalise_channel(st, true, c, momentum, eps, running_mean, running_var, save_mean, save_invstd);
  counters[c] = 0;
}

// ---- forward statistics ---------------------------------------------------------------------------
// Each thread sums x - shift and (x - shift)^2 with shift = a value of the channel (centring the
// sums keeps the variance from cancelling); threads, blocks and slices then merge as Welford
// states with Chan's formula, the slices in double.
template <int V>
__global__ void bn_stats(const float* __restrict__ x, int N, int C, int HW, int splits,
                         float* __restrict__ partial, int* __restrict__ counters, float momentum,
                         float eps, float* __restrict__ running_mean, float* __restrict__ running_var,
                         float* __restrict__ save_mean, float* __restrict__ save_invstd) {
  const int c = blockIdx.y, s = blockIdx.x;
  const int n0 = int(int64_t(s) * N / splits), n1 = int(int64_t(s + 1) * N / splits);
  const float shift = __ldg(x + int64_t(c) * HW);
  float sum = 0.f, sq = 0.f;
  int count = 0;
  for_channel_slice<V>(n0, n1, C, c, HW, [&](int64_t off) {
    if constexpr (V == 4) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(x + off));
      const float a = v.x - shift, b = v.y - shift, cc = v.z - shift, d = v.w - shift;
      sum += (a + b) + (cc + d);
      sq += (a * a + b * b) + (cc * cc + d * d);
    } else {
      const float a = __ldg(x + off) - shift;
      sum += a;
      sq += a * a;
    }
    count += V;
  });
  const Welford w = block_merge(thread_state(sum, sq, count, shift));
  if (threadIdx.x == 0) store_welford(partial, c, splits, s, w);
  finalise_if_last(partial, counters, c, splits, momentum, eps, running_mean, running_var, save_mean, save_invstd);
}

// ---- y = act(x * scale + shift) -------------------------------------------------------------------
__device__ __forceinline__ float act_fn(float v, bool leaky, float slope) {
  return leaky ? (v > 0.f ? v : v * slope) : v;
}

// Elementwise passes run over units of V floats; Idx is uint32_t whenever the unit count fits, so
// the per-unit channel index costs a 32-bit division instead of a 64-bit one.
// kEval: `stat` is the running variance (invstd computed here); else the saved invstd.
template <bool kEval, int V, class Idx>
__global__ void bn_apply(const float* __restrict__ x, float* __restrict__ y,
                         const float* __restrict__ gamma, const float* __restrict__ beta,
                         const float* __restrict__ mean, const float* __restrict__ stat, float eps,
                         bool leaky, float slope, Idx C, Idx upr, Idx units) {
  auto one = [&](Idx u, float4 v) {
    const int c = int((u / upr) % C);
    const float is = kEval ? rsqrtf(__ldg(stat + c) + eps) : __ldg(stat + c);
    const float scale = __ldg(gamma + c) * is;  // the same expressions as the backward's mask
    const float shift = __ldg(beta + c) - __ldg(mean + c) * scale;
    return make_float4(act_fn(v.x * scale + shift, leaky, slope), act_fn(v.y * scale + shift, leaky, slope),
                       act_fn(v.z * scale + shift, leaky, slope), act_fn(v.w * scale + shift, leaky, slope));
  };
  const Idx stride = Idx(gridDim.x) * blockDim.x;
  Idx u = blockIdx.x * Idx(blockDim.x) + threadIdx.x;
  if constexpr (V == 4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (; u + stride < units; u += 2 * stride) {  // two 16-byte loads in flight per thread
      const float4 a = __ldg(x4 + u), b = __ldg(x4 + u + stride);
      y4[u] = one(u, a);
      y4[u + stride] = one(u + stride, b);
    }
    if (u < units) y4[u] = one(u, __ldg(x4 + u));
  } else {
    for (; u < units; u += stride) y[u] = one(u, make_float4(__ldg(x + u), 0.f, 0.f, 0.f)).x;
  }
}

// ---- backward --------------------------------------------------------------------------------------
struct BwdCoeffs {
  float mu, is, scale, shift;
};
__device__ __forceinline__ BwdCoeffs bwd_coeffs(const float* gamma, const float* beta,
                                                const float* mean, const float* invstd, int c) {
  BwdCoeffs k;
  k.mu = __ldg(mean + c);
  k.is = __ldg(invstd + c);
  k.scale = __ldg(gamma + c) * k.is;
  k.shift = __ldg(beta + c) - k.mu * k.scale;
  return k;
}
// Gradient at the BN output: the activation's mask comes from the recomputed pre-activation.
__device__ __forceinline__ float grad_pre(float g, float x, const BwdCoeffs& k, bool leaky, float slope) {
  return (!leaky || x * k.scale + k.shift > 0.f) ? g : g * slope;
}

struct GradSums {
  double g, gx;  // sums of g and g*(x - mean) over the channel
};
// Called by one whole warp: the slices' sums of channel c loaded in parallel and reduced by xor
// shuffles (every lane ends with the same bits, and so does every caller).
__device__ GradSums sum_slices(const double* partial, int c, int splits) {
  double tg = 0, tgx = 0;
  for (int j = threadIdx.x & 31; j < splits; j += 32) {
    tg += __ldcg(partial + (int64_t(c) * splits + j) * 2);
    tgx += __ldcg(partial + (int64_t(c) * splits + j) * 2 + 1);
  }
  return {warp_sum(tg), warp_sum(tgx)};
}
// The coefficients of dx: mean of g and mean of g*xhat over the M values of the channel (both 0
// outside training, where the statistics are constants).
__device__ float2 grad_coefficients(const GradSums& t, float invstd, bool training, double M) {
  return training ? make_float2(float(t.g / M), float(t.gx * invstd / M)) : make_float2(0.f, 0.f);
}
__device__ void write_param_grads(const GradSums& t, int c, float invstd, float* ggamma, float* gbeta) {
  gbeta[c] = float(t.g);
  ggamma[c] = float(t.gx * invstd);
}

template <int V>
__global__ void bn_bwd_reduce(const float* __restrict__ x, const float* __restrict__ gy,
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
  for_channel_slice<V>(n0, n1, C, c, HW, [&](int64_t off) {
    if constexpr (V == 4) {
      const float4 xv = __ldg(reinterpret_cast<const float4*>(x + off));
      const float4 gv = __ldg(reinterpret_cast<const float4*>(gy + off));
      const float g0 = grad_pre(gv.x, xv.x, k, leaky, slope), g1 = grad_pre(gv.y, xv.y, k, leaky, slope);
      const float g2 = grad_pre(gv.z, xv.z, k, leaky, slope), g3 = grad_pre(gv.w, xv.w, k, leaky, slope);
      sg += (g0 + g1) + (g2 + g3);
      sgx += (g0 * (xv.x - k.mu) + g1 * (xv.y - k.mu)) + (g2 * (xv.z - k.mu) + g3 * (xv.w - k.mu));
    } else {
      const float xv = __ldg(x + off), g = grad_pre(__ldg(gy + off), xv, k, leaky, slope);
      sg += g;
      sgx += g * (xv - k.mu);
    }
  });
  const double bsg = block_sum(double(sg), scratch);
  const double bsgx = block_sum(double(sgx), scratch);
  if (threadIdx.x == 0) {
    partial[(int64_t(c) * splits + s) * 2] = bsg;
    partial[(int64_t(c) * splits + s) * 2 + 1] = bsgx;
  }
  if (!arrive_last(counters, c, splits) || threadIdx.x >= 32) return;
  const GradSums t = sum_slices(partial, c, splits);
  if (threadIdx.x != 0) return;
  write_param_grads(t, c, k.is, ggamma, gbeta);
  const float2 cf = grad_coefficients(t, k.is, training, double(N) * HW);
  coef[2 * c] = cf.x;
  coef[2 * c + 1] = cf.y;
  counters[c] = 0;
}

// dx = gamma*invstd * (g - mean(g) - xhat * mean(g*xhat)); the means are 0 in eval mode.
template <int V, class Idx>
__global__ void bn_bwd_dx(const float* __restrict__ x, const float* __restrict__ gy,
                          const float* __restrict__ gamma, const float* __restrict__ beta,
                          const float* __restrict__ mean, const float* __restrict__ invstd,
                          const float* __restrict__ coef, bool leaky, float slope, Idx C, Idx upr,
                          Idx units, float* __restrict__ gx) {
  auto one = [&](Idx u, float4 xv, float4 gv) {
    const int c = int((u / upr) % C);
    const BwdCoeffs k = bwd_coeffs(gamma, beta, mean, invstd, c);
    const float mg = __ldg(coef + 2 * c), mgx = __ldg(coef + 2 * c + 1);
    auto e = [&](float xe, float ge) {
      return k.scale * (grad_pre(ge, xe, k, leaky, slope) - mg - (xe - k.mu) * k.is * mgx);
    };
    return make_float4(e(xv.x, gv.x), e(xv.y, gv.y), e(xv.z, gv.z), e(xv.w, gv.w));
  };
  const Idx stride = Idx(gridDim.x) * blockDim.x;
  Idx u = blockIdx.x * Idx(blockDim.x) + threadIdx.x;
  if constexpr (V == 4) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const float4* g4 = reinterpret_cast<const float4*>(gy);
    float4* o4 = reinterpret_cast<float4*>(gx);
    for (; u + stride < units; u += 2 * stride) {  // four 16-byte loads in flight per thread
      const float4 xa = __ldg(x4 + u), ga = __ldg(g4 + u), xb = __ldg(x4 + u + stride), gb = __ldg(g4 + u + stride);
      o4[u] = one(u, xa, ga);
      o4[u + stride] = one(u + stride, xb, gb);
    }
    if (u < units) o4[u] = one(u, __ldg(x4 + u), __ldg(g4 + u));
  } else {
    for (; u < units; u += stride)
      gx[u] = one(u, make_float4(__ldg(x + u), 0.f, 0.f, 0.f), make_float4(__ldg(gy + u), 0.f, 0.f, 0.f)).x;
  }
}

// ---- single launch ---------------------------------------------------------------------------------
__device__ __forceinline__ uint64_t globaltimer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Block-wide: counts this block as arrived at channel c (after its partial is visible) and waits
// for all `splits` blocks of the channel. Cooperative launch makes them co-resident, so the wait
// ends; the watchdog turns a broken assumption into a device trap (an error the host reports)
// instead of a hang.
__device__ void channel_barrier(int* arrive, int c, int splits) {
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(arrive + c, 1);
    const volatile int* count = arrive + c;
    const uint64_t t0 = globaltimer_ns();
    while (*count < splits) {
      __nanosleep(64);
      if (globaltimer_ns() - t0 > 10'000'000'000ull) __trap();
    }
    __threadfence();  // the partials are read after the count that covers them
  }
  __syncthreads();
}
// Thread 0, after its block has passed the barrier and read the partials: the last block of the
// channel to leave resets both counters for the next launch.
__device__ void channel_depart(int* arrive, int* depart, int c, int splits) {
  if (atomicAdd(depart + c, 1) == splits - 1) {
    arrive[c] = 0;
    depart[c] = 0;
  }
}

// ---- slices: the unit of work of the single-launch and sliced two-pass kernels ----------------------
// Channel c's N*upr float4 units are cut into slices of kThreads*U; a thread holds units
// first, first + kThreads, ... (U of them), all loads issued before any is used.
// Unit j lives in image j / upr, column j % upr.
__device__ __forceinline__ int64_t unit_offset(int j, int upr, int C, int c) {
  const int n = j / upr;
  return (int64_t(n) * C + c) * upr + (j - n * upr);
}
template <int U>
__device__ __forceinline__ void load_slice(const float* p, int first, int units, int upr, int C, int c, float4 (&v)[U]) {
  const float4* p4 = reinterpret_cast<const float4*>(p);
#pragma unroll
  for (int i = 0; i < U; ++i) {
    const int j = first + i * kThreads;
    v[i] = j < units ? __ldg(p4 + unit_offset(j, upr, C, c)) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
}
template <int U, class F>
__device__ __forceinline__ void store_slice(float* p, int first, int units, int upr, int C, int c, F&& value) {
  float4* p4 = reinterpret_cast<float4*>(p);
#pragma unroll
  for (int i = 0; i < U; ++i) {
    const int j = first + i * kThreads;
    if (j < units) p4[unit_offset(j, upr, C, c)] = value(i);
  }
}
// This thread's Welford state of its slice values, centred on `shift` (see bn_stats).
template <int U>
__device__ __forceinline__ Welford slice_state(const float4 (&v)[U], int first, int units, float shift) {
  SliceSums sums(shift);
#pragma unroll
  for (int i = 0; i < U; ++i)
    if (first + i * kThreads < units) sums.add(v[i]);
  return sums.state();
}
// Replaces g by the gradient at the BN output (activation mask applied) and returns this thread's
// sums of g and g*(x - mean). Out-of-range units are zeros and add nothing.
template <int U>
__device__ __forceinline__ float2 slice_grad_sums(const float4 (&xv)[U], float4 (&gv)[U], const BwdCoeffs& k,
                                                  bool leaky, float slope) {
  float sg = 0.f, sgx = 0.f;
#pragma unroll
  for (int i = 0; i < U; ++i) {
    gv[i] = make_float4(grad_pre(gv[i].x, xv[i].x, k, leaky, slope), grad_pre(gv[i].y, xv[i].y, k, leaky, slope),
                        grad_pre(gv[i].z, xv[i].z, k, leaky, slope), grad_pre(gv[i].w, xv[i].w, k, leaky, slope));
    sg += (gv[i].x + gv[i].y) + (gv[i].z + gv[i].w);
    sgx += (gv[i].x * (xv[i].x - k.mu) + gv[i].y * (xv[i].y - k.mu)) +
           (gv[i].z * (xv[i].z - k.mu) + gv[i].w * (xv[i].w - k.mu));
  }
  return make_float2(sg, sgx);
}
// Backward, both strategies: loads x and g of this block's slice (g masked by the activation),
// sums g and g*(x - mean) over the block in double and stores them as slice s of channel c.
template <int U>
__device__ __forceinline__ BwdCoeffs publish_grad_sums(
    const float* x, const float* gy, const float* gamma, const float* beta, const float* mean,
    const float* invstd, bool leaky, float slope, int first, int units, int upr, int C, int c, int s,
    int splits, double* partial, double* scratch, float4 (&xv)[U], float4 (&gv)[U]) {
  load_slice<U>(x, first, units, upr, C, c, xv);
  load_slice<U>(gy, first, units, upr, C, c, gv);
  const BwdCoeffs k = bwd_coeffs(gamma, beta, mean, invstd, c);
  const float2 sums = slice_grad_sums<U>(xv, gv, k, leaky, slope);
  const double bsg = block_sum(double(sums.x), scratch);
  const double bsgx = block_sum(double(sums.y), scratch);
  if (threadIdx.x == 0) {
    partial[(int64_t(c) * splits + s) * 2] = bsg;
    partial[(int64_t(c) * splits + s) * 2 + 1] = bsgx;
  }
  return k;
}

__device__ __forceinline__ float4 normalise4(float4 v, float scale, float shift, bool leaky, float slope) {
  return make_float4(act_fn(v.x * scale + shift, leaky, slope), act_fn(v.y * scale + shift, leaky, slope),
                     act_fn(v.z * scale + shift, leaky, slope), act_fn(v.w * scale + shift, leaky, slope));
}
// dx = gamma*invstd * (g - mean(g) - xhat * mean(g*xhat)), g already masked.
__device__ __forceinline__ float4 dx4(float4 xv, float4 gv, const BwdCoeffs& k, float2 coef) {
  auto e = [&](float xe, float ge) { return k.scale * (ge - coef.x - (xe - k.mu) * k.is * coef.y); };
  return make_float4(e(xv.x, gv.x), e(xv.y, gv.y), e(xv.z, gv.z), e(xv.w, gv.w));
}

// Rounds of a single launch = channels x slices / co-resident blocks, and each round pays a
// barrier (its cost: docs/performance.md), so the backward's registers are capped for 4 blocks per SM.
constexpr int kSingleBlocksPerSm = 4;

// ---- single launch: training forward and backward ---------------------------------------------------
// Block b is split b % splits of group b / splits; `partial` holds [C][splits] Welford states
// (forward) or pairs of sums (backward).
// 16-byte asynchronous copy global -> shared (sm_80+), bypassing registers and L1. Turing (sm_75)
// has no cp.async: there the copy is a plain load and store, complete when it returns, and the
// commit/wait calls are no-ops (callers still __syncthreads() before reading other threads' slots).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define CAC_BN_SYNC_COPIES 1
#endif
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#ifdef CAC_BN_SYNC_COPIES
  *static_cast<float4*>(smem) = __ldcg(static_cast<const float4*>(gmem));
#else
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem) : "memory");
#endif
}

// The same with an L2 eviction policy (from createpolicy), e.g. evict-first for data read once
// (sm_80+; ignored on sm_75).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, uint64_t l2_policy) {
#ifdef CAC_BN_SYNC_COPIES
  (void)l2_policy;
  cp_async16(smem, gmem);
#else
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "l"(l2_policy)
               : "memory");
#endif
}
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t policy = 0;
#ifndef CAC_BN_SYNC_COPIES
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
#endif
  return policy;
}

__device__ __forceinline__ void cp_async_commit() {
#ifndef CAC_BN_SYNC_COPIES
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
#ifndef CAC_BN_SYNC_COPIES
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Single-launch forward, block-wide, once every thread has the state of its part of slice s of
// channel c: publishes the block's state, waits at the channel's barrier for the other slices,
// merges them all (the same bits in every block); slice 0 saves mean/invstd and updates the
// running statistics. Returns (scale, shift) of y = act(x * scale + shift). The caller syncs the
// block before its next call (the merge scratch is reused).
__device__ float2 channel_scale_shift(const Welford& mine, const float* gamma, const float* beta, int c, int s,
                                      int splits, float* partial, int* counters, float momentum, float eps,
                                      float* running_mean, float* running_var, float* save_mean,
                                      float* save_invstd) {
  __shared__ float2 sh_mi;
  const Welford w = block_merge(mine);
  if (threadIdx.x == 0) store_welford(partial, c, splits, s, w);
  channel_barrier(counters, c, splits);
  if (threadIdx.x < 32) {
    const ChannelStats st = merge_slices(partial, c, splits);
    if (threadIdx.x == 0) {
      sh_mi = finalise_channel(st, s == 0, c, momentum, eps, running_mean, running_var, save_mean, save_invstd);
      channel_depart(counters, counters + kMaxChannels, c, splits);
    }
  }
  __syncthreads();
  const float scale = __ldg(gamma + c) * sh_mi.y;  // the same expressions as bn_apply
  return make_float2(scale, __ldg(beta + c) - sh_mi.x * scale);
}

// One round where the activation does not fit on chip (e.g. classifier32's conv2 activation on an
// H100): every (channel, slice) block is co-resident at once, each thread
// keeps `held` units of its slice in shared memory and streams the rest (`per_thread - held`) twice:
// once for the statistics, read last so it is the most recent data in L2, and again after the
// barrier, first, before the block's stores push it out. DRAM sees the activation once, the
// re-read comes from L2, and there is one barrier instead of one per round. When C exceeds the
// co-resident blocks a block walks channels c = g, g + groups, ... with one slice each.
// kEvictHeldFirst: the held part's loads carry an L2 evict-first policy, so that what L2 must
// give up first is what shared memory already holds, not the streamed part awaiting its re-read.
constexpr int kStreamChunk = 4;  // float4 loads in flight per thread in the streamed part
// Visits the units i in [from, per_thread) of a thread's slice of channel c (unit j = first +
// i * kThreads, those below `units`) as use(j, value), kStreamChunk loads in flight: the part of a
// slice that the re-reading forwards stream instead of holding in shared memory.
template <class Use>
__device__ __forceinline__ void stream_units(const float4* __restrict__ x4, int first, int from, int per_thread,
                                             int units, int upr, int C, int c, Use&& use) {
  for (int i = from; i < per_thread; i += kStreamChunk) {
    float4 v[kStreamChunk];
#pragma unroll
    for (int k = 0; k < kStreamChunk; ++k) {
      const int j = first + (i + k) * kThreads;
      v[k] = i + k < per_thread && j < units ? __ldg(x4 + unit_offset(j, upr, C, c)) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int k = 0; k < kStreamChunk; ++k) {
      const int j = first + (i + k) * kThreads;
      if (i + k < per_thread && j < units) use(j, v[k]);
    }
  }
}
template <bool kEvictHeldFirst>
__global__ void __launch_bounds__(kThreads, kSingleBlocksPerSm) bn_forward_reread(
    const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ gamma,
    const float* __restrict__ beta, int N, int C, int upr, int splits, int groups, int per_thread,
    int held, float* __restrict__ partial, int* __restrict__ counters, float momentum, float eps,
    float* __restrict__ running_mean, float* __restrict__ running_var, float* __restrict__ save_mean,
    float* __restrict__ save_invstd, bool leaky, float slope) {
  extern __shared__ float4 tiles[];  // [held][kThreads]; a thread reads only the slots it filled
  const int s = int(blockIdx.x) % splits, g = int(blockIdx.x) / splits;
  const int units = N * upr, first = s * (kThreads * per_thread) + int(threadIdx.x);
  const int own = min(held, per_thread);
  const uint64_t held_policy = kEvictHeldFirst ? l2_evict_first_policy() : 0;
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  auto slot = [&](int i) -> float4& { return tiles[i * kThreads + threadIdx.x]; };
  for (int c = g; c < C; c += groups) {
    for (int i = 0; i < own; ++i) {
      const int j = first + i * kThreads;
      if (j >= units) continue;
      if constexpr (kEvictHeldFirst) cp_async16(&slot(i), x4 + unit_offset(j, upr, C, c), held_policy);
      else cp_async16(&slot(i), x4 + unit_offset(j, upr, C, c));
    }
    cp_async_commit();
    SliceSums sums(__ldg(x + int64_t(c) * upr * 4));
    stream_units(x4, first, own, per_thread, units, upr, C, c, [&](int, float4 v) { sums.add(v); });
    cp_async_wait_group<0>();
    for (int i = 0; i < own; ++i)
      if (first + i * kThreads < units) sums.add(slot(i));
    const float2 ss = channel_scale_shift(sums.state(), gamma, beta, c, s, splits, partial, counters, momentum,
                                          eps, running_mean, running_var, save_mean, save_invstd);
    stream_units(x4, first, own, per_thread, units, upr, C, c,
                 [&](int j, float4 v) { y4[unit_offset(j, upr, C, c)] = normalise4(v, ss.x, ss.y, leaky, slope); });
    for (int i = 0; i < own; ++i) {
      const int j = first + i * kThreads;
      if (j < units) y4[unit_offset(j, upr, C, c)] = normalise4(slot(i), ss.x, ss.y, leaky, slope);
    }
    __syncthreads();  // the merge scratch is reused by the next channel
  }
}

// One thread-block cluster per channel (grid = C x cluster blocks; the cluster size is a launch
// attribute, read here from the cluster): block rank r holds slice r of the channel in shared
// memory (cp.async, all loads in flight), publishes its Welford state in its own shared memory,
// and after the cluster's hardware barrier every block merges all the states, read through
// distributed shared memory in rank order (so all agree bit for bit); rank 0 saves mean/invstd
// and updates the running statistics. The activation crosses DRAM once. Unlike the cooperative
// single launch there is no barrier in global memory and no round: a cluster needs only its own
// blocks resident, so while one cluster waits at its barrier others load or store.
// held < per_thread: a thread keeps its first `held` units in shared memory and streams the others
// twice, as bn_forward_reread does (read last before the barrier, first after it, so the second
// read finds them in L2), so that all of a large activation's blocks can be resident at once.
// At most 40 registers (ptxas: no spills) so that 6 blocks of 32 KiB share an SM (u=8), as 3 of
// 64 KiB do (u=16): the same bytes on chip. (Before sm_90 the kernel only traps, and 6 blocks of
// 256 threads exceed what a Turing SM holds, so there the bound asks for one.)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define CAC_BN_CLUSTER_MIN_BLOCKS 1
#else
#define CAC_BN_CLUSTER_MIN_BLOCKS 6
#endif
__global__ void __launch_bounds__(kThreads, CAC_BN_CLUSTER_MIN_BLOCKS) bn_forward_cluster(
    const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ gamma,
    const float* __restrict__ beta, int N, int C, int upr, int per_thread, int held, float momentum, float eps,
    float* __restrict__ running_mean, float* __restrict__ running_var, float* __restrict__ save_mean,
    float* __restrict__ save_invstd, bool leaky, float slope) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // no clusters before sm_90; the host launches this only where the binary has sm_90 code
#else
  namespace cg = cooperative_groups;
  const cg::cluster_group cluster = cg::this_cluster();
  extern __shared__ float4 tiles[];  // [held][kThreads]; a thread reads only the slots it filled
  __shared__ Welford block_state;    // read by every block of the cluster
  __shared__ float2 sh_mi;
  const int size = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int c = int(blockIdx.x) / size;
  const int units = N * upr, first = rank * (kThreads * per_thread) + int(threadIdx.x);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  auto slot = [&](int i) -> float4& { return tiles[i * kThreads + threadIdx.x]; };
#pragma unroll 4
  for (int i = 0; i < held; ++i) {
    const int j = first + i * kThreads;
    if (j < units) cp_async16(&slot(i), x4 + unit_offset(j, upr, C, c));
  }
  cp_async_commit();
  SliceSums sums(__ldg(x + int64_t(c) * upr * 4));  // centred on a value of the channel, as in bn_stats
  stream_units(x4, first, held, per_thread, units, upr, C, c, [&](int, float4 v) { sums.add(v); });
  cp_async_wait_group<0>();
  for (int i = 0; i < held; ++i)
    if (first + i * kThreads < units) sums.add(slot(i));
  const Welford w = block_merge(sums.state());
  if (threadIdx.x == 0) block_state = w;
  cluster.sync();  // every block's state is written, and visible to the whole cluster
  if (threadIdx.x < 32) {
    const ChannelStats st = merge_partials(size, [&](int k) {
      const Welford* p = cluster.map_shared_rank(&block_state, k);
      return make_float3(p->n, p->mean, p->m2);
    });
    if (threadIdx.x == 0)
      sh_mi = finalise_channel(st, rank == 0, c, momentum, eps, running_mean, running_var, save_mean, save_invstd);
  }
  __syncthreads();
  // This block is done reading the others' states; a block's shared memory must outlive every
  // remote read of it, so each block waits for all arrivals before it exits (after its stores).
  cluster.barrier_arrive();
  const float scale = __ldg(gamma + c) * sh_mi.y;  // the same expressions as bn_apply
  const float shift = __ldg(beta + c) - sh_mi.x * scale;
  stream_units(x4, first, held, per_thread, units, upr, C, c,
               [&](int j, float4 v) { y4[unit_offset(j, upr, C, c)] = normalise4(v, scale, shift, leaky, slope); });
  for (int i = 0; i < held; ++i) {
    const int j = first + i * kThreads;
    if (j < units) y4[unit_offset(j, upr, C, c)] = normalise4(slot(i), scale, shift, leaky, slope);
  }
  cluster.barrier_wait();
#endif
}

template <int U>
__global__ void __launch_bounds__(kThreads, U <= 4 ? kSingleBlocksPerSm : 1) bn_backward_single(
    const float* __restrict__ x, const float* __restrict__ gy, const float* __restrict__ gamma,
    const float* __restrict__ beta, const float* __restrict__ mean, const float* __restrict__ invstd,
    bool leaky, float slope, bool training, int N, int C, int upr, int splits, int groups,
    double* __restrict__ partial, int* __restrict__ counters, float* __restrict__ ggamma,
    float* __restrict__ gbeta, float* __restrict__ gx) {
  __shared__ double scratch[32];
  __shared__ float2 sh_coef;
  const int s = int(blockIdx.x) % splits, g = int(blockIdx.x) / splits;
  const int units = N * upr, first = s * (kThreads * U) + int(threadIdx.x);
  const double M = double(N) * upr * 4;
  for (int c = g; c < C; c += groups) {
    float4 xv[U], gv[U];
    const BwdCoeffs k = publish_grad_sums<U>(x, gy, gamma, beta, mean, invstd, leaky, slope, first, units,
                                             upr, C, c, s, splits, partial, scratch, xv, gv);
    channel_barrier(counters, c, splits);
    if (threadIdx.x < 32) {
      const GradSums t = sum_slices(partial, c, splits);
      if (threadIdx.x == 0) {
        sh_coef = grad_coefficients(t, k.is, training, M);
        if (s == 0) write_param_grads(t, c, k.is, ggamma, gbeta);
        channel_depart(counters, counters + kMaxChannels, c, splits);
      }
    }
    __syncthreads();
    const float2 coef = sh_coef;
    if (gx) store_slice<U>(gx, first, units, upr, C, c, [&](int i) { return dx4(xv[i], gv[i], k, coef); });
    __syncthreads();  // sh_coef and the scratch are reused by the next channel
  }
}

// ---- sliced two passes ---------------------------------------------------------------------------------
// Pass 1 block b takes slice b % splits of channel b / splits and the last block of a channel
// finalises it (arrival counter). Pass 2 visits the slices in reverse, so it first re-reads what
// pass 1 read last, while that is still in L2.
template <int U>
__global__ void __launch_bounds__(kThreads) bn_stats_sliced(
    const float* __restrict__ x, int N, int C, int upr, int splits, float* __restrict__ partial,
    int* __restrict__ counters, float momentum, float eps, float* __restrict__ running_mean,
    float* __restrict__ running_var, float* __restrict__ save_mean, float* __restrict__ save_invstd) {
  const int c = int(blockIdx.x) / splits, s = int(blockIdx.x) % splits;
  const int units = N * upr, first = s * (kThreads * U) + int(threadIdx.x);
  float4 v[U];
  load_slice<U>(x, first, units, upr, C, c, v);
  const Welford w = block_merge(slice_state<U>(v, first, units, __ldg(x + int64_t(c) * upr * 4)));
  if (threadIdx.x == 0) store_welford(partial, c, splits, s, w);
  finalise_if_last(partial, counters, c, splits, momentum, eps, running_mean, running_var, save_mean, save_invstd);
}

template <int U>
__global__ void __launch_bounds__(kThreads) bn_apply_sliced(
    const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ gamma,
    const float* __restrict__ beta, const float* __restrict__ mean, const float* __restrict__ invstd,
    int N, int C, int upr, int splits, bool leaky, float slope) {
  const int b = int(gridDim.x - 1 - blockIdx.x), c = b / splits, s = b % splits;
  const int units = N * upr, first = s * (kThreads * U) + int(threadIdx.x);
  float4 v[U];
  load_slice<U>(x, first, units, upr, C, c, v);
  const float scale = __ldg(gamma + c) * __ldg(invstd + c);  // the same expressions as bn_apply
  const float shift = __ldg(beta + c) - __ldg(mean + c) * scale;
  store_slice<U>(y, first, units, upr, C, c, [&](int i) { return normalise4(v[i], scale, shift, leaky, slope); });
}

template <int U>
__global__ void __launch_bounds__(kThreads) bn_bwd_sums_sliced(
    const float* __restrict__ x, const float* __restrict__ gy, const float* __restrict__ gamma,
    const float* __restrict__ beta, const float* __restrict__ mean, const float* __restrict__ invstd,
    bool leaky, float slope, bool training, int N, int C, int upr, int splits,
    double* __restrict__ partial, int* __restrict__ counters, float* __restrict__ ggamma,
    float* __restrict__ gbeta, float* __restrict__ coef) {
  __shared__ double scratch[32];
  const int c = int(blockIdx.x) / splits, s = int(blockIdx.x) % splits;
  const int units = N * upr, first = s * (kThreads * U) + int(threadIdx.x);
  float4 xv[U], gv[U];
  const BwdCoeffs k = publish_grad_sums<U>(x, gy, gamma, beta, mean, invstd, leaky, slope, first, units,
                                           upr, C, c, s, splits, partial, scratch, xv, gv);
  if (!arrive_last(counters, c, splits) || threadIdx.x >= 32) return;
  const GradSums t = sum_slices(partial, c, splits);
  if (threadIdx.x != 0) return;
  write_param_grads(t, c, k.is, ggamma, gbeta);
  const float2 cf = grad_coefficients(t, k.is, training, double(N) * upr * 4);
  coef[2 * c] = cf.x;
  coef[2 * c + 1] = cf.y;
  counters[c] = 0;
}

template <int U>
__global__ void __launch_bounds__(kThreads) bn_bwd_dx_sliced(
    const float* __restrict__ x, const float* __restrict__ gy, const float* __restrict__ gamma,
    const float* __restrict__ beta, const float* __restrict__ mean, const float* __restrict__ invstd,
    const float* __restrict__ coef, bool leaky, float slope, int N, int C, int upr, int splits,
    float* __restrict__ gx) {
  const int b = int(gridDim.x - 1 - blockIdx.x), c = b / splits, s = b % splits;
  const int units = N * upr, first = s * (kThreads * U) + int(threadIdx.x);
  float4 xv[U], gv[U];
  load_slice<U>(x, first, units, upr, C, c, xv);
  load_slice<U>(gy, first, units, upr, C, c, gv);
  const BwdCoeffs k = bwd_coeffs(gamma, beta, mean, invstd, c);
  slice_grad_sums<U>(xv, gv, k, leaky, slope);  // masks g; the sums are unused here
  const float2 cf = make_float2(__ldg(coef + 2 * c), __ldg(coef + 2 * c + 1));
  store_slice<U>(gx, first, units, upr, C, c, [&](int i) { return dx4(xv[i], gv[i], k, cf); });
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

// Launches an elementwise pass with V = 4 or 1 and a 32-bit index whenever the units fit.
template <template <int, class> class Launch, class... Args>
void elementwise_pass(bool vec4, const Shape4& s, Args&&... args) {
  const int64_t units = vec4 ? s.total / 4 : s.total;
  const int64_t upr = vec4 ? s.HW / 4 : s.HW;
  const int grid = grid_for(units, kThreads);
  if (units < (int64_t(1) << 31)) {
    if (vec4) Launch<4, uint32_t>::run(grid, uint32_t(s.C), uint32_t(upr), uint32_t(units), args...);
    else Launch<1, uint32_t>::run(grid, uint32_t(s.C), uint32_t(upr), uint32_t(units), args...);
  } else {
    if (vec4) Launch<4, int64_t>::run(grid, int64_t(s.C), upr, units, args...);
    else Launch<1, int64_t>::run(grid, int64_t(s.C), upr, units, args...);
  }
  CUDA_CHECK_LAUNCH();
}

template <int V, class Idx>
struct ApplyTrain {
  static void run(int grid, Idx C, Idx upr, Idx units, const float* x, float* y, const float* g,
                  const float* b, const float* m, const float* is, float eps, bool leaky, float slope) {
    bn_apply<false, V, Idx><<<grid, kThreads, 0, stream()>>>(x, y, g, b, m, is, eps, leaky, slope, C, upr, units);
  }
};
template <int V, class Idx>
struct ApplyEval {
  static void run(int grid, Idx C, Idx upr, Idx units, const float* x, float* y, const float* g,
                  const float* b, const float* m, const float* var, float eps, bool leaky, float slope) {
    bn_apply<true, V, Idx><<<grid, kThreads, 0, stream()>>>(x, y, g, b, m, var, eps, leaky, slope, C, upr, units);
  }
};
template <int V, class Idx>
struct BackwardDx {
  static void run(int grid, Idx C, Idx upr, Idx units, const float* x, const float* gy, const float* g,
                  const float* b, const float* m, const float* is, const float* coef, bool leaky,
                  float slope, float* gx) {
    bn_bwd_dx<V, Idx><<<grid, kThreads, 0, stream()>>>(x, gy, g, b, m, is, coef, leaky, slope, C, upr, units, gx);
  }
};

int splits_of(int64_t units, int U) { return int((units + int64_t(kThreads) * U - 1) / (int64_t(kThreads) * U)); }
// Units of a channel (float4s) when the 16-byte kernels apply: whole float4s per plane, aligned
// bases, a count that fits the kernels' int indexing and a sliced grid (C x slices at the smallest
// U = 2) that fits gridDim.x; else 0 (the flat two-pass kernels run).
int64_t channel_units(const Shape4& s, bool vec4) {
  if (!vec4) return 0;
  const int64_t units = int64_t(s.N) * (s.HW / 4);
  return units < (int64_t(1) << 30) && int64_t(s.C) * splits_of(units, 2) < (int64_t(1) << 31) ? units : 0;
}

// The most dynamic shared memory a block of kernel `fn` may ask for on this GPU (its static shared
// memory counts against the same limit; negative: none), set as the kernel's limit so that every
// size up to it launches, with shared memory preferred over L1 (the single-launch and cluster
// forwards keep their slices there).
int allow_all_shared_memory(const void* fn) {
  int device = 0, optin = 0;
  cudaFuncAttributes attrs{};
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  CUDA_CHECK(cudaFuncGetAttributes(&attrs, fn));
  const int dynamic_max = optin - int(attrs.sharedSizeBytes);
  if (dynamic_max >= 0) {
    CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    int(cudaSharedmemCarveoutMaxShared)));
    CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic_max));
  }
  return dynamic_max;
}

// Co-resident blocks of a kernel (occupancy x SMs) with `smem` bytes of dynamic shared memory,
// measured once per (kernel, smem); 0 where the device cannot launch cooperatively (the
// single-launch strategies then fall back to two passes).
template <class Kernel>
int resident_blocks(Kernel kernel, size_t smem = 0) {
  static const bool cooperative = [] {
    int device = 0, supported = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrCooperativeLaunch, device));
    return supported != 0;
  }();
  if (!cooperative) return 0;
  static std::mutex lock;  // evaluation threads and tests may launch at once
  static std::map<std::pair<const void*, size_t>, int> resident_of;
  const std::lock_guard<std::mutex> hold(lock);
  const void* fn = reinterpret_cast<const void*>(kernel);
  auto it = resident_of.find({fn, smem});
  if (it == resident_of.end()) {
    int per_sm = 0;
    if (const int dynamic_max = allow_all_shared_memory(fn); dynamic_max >= 0 && smem <= size_t(dynamic_max))
      CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
    it = resident_of.emplace(std::make_pair(fn, smem), per_sm * cac::cuda::sm_count()).first;
  }
  return it->second;
}

// Cooperative: all blocks co-resident, or the launch fails (never a hang at the barrier).
template <class... Params, class... Args>
void launch_cooperative(void (*kernel)(Params...), int blocks, size_t smem, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeCooperative;
  attr.val.cooperative = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
  CUDA_CHECK_LAUNCH();
}

// A launch of `blocks` blocks in clusters of `cluster` on the compute stream (cfg points at attr).
void cluster_config(cudaLaunchConfig_t& cfg, cudaLaunchAttribute& attr, int blocks, int cluster, size_t smem) {
  cfg = cudaLaunchConfig_t{};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  attr = cudaLaunchAttribute{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = unsigned(cluster);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
}

// bn_forward_cluster's geometry for channels of `units` float4s at `target` float4s per thread,
// `held` of them in shared memory (0: all);
// plan.fits is false where this GPU has no clusters, this build has no sm_90 code for the kernel,
// a channel exceeds what max_cluster blocks' shared memory holds, or no cluster of that size and
// shared memory can be resident.
struct ClusterGeometry {
  cac::kernels::BnClusterPlan plan;
  size_t smem = 0;
};
ClusterGeometry cluster_geometry(int64_t units, int target, int held) {
  struct Limits {
    bool ok = false;
    int max_cluster = 0, max_per_thread = 0;
  };
  static const Limits limits = [] {
    Limits l;
    int device = 0, clusters = 0;
    cudaFuncAttributes attrs{};
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&clusters, cudaDevAttrClusterLaunch, device));
    CUDA_CHECK(cudaFuncGetAttributes(&attrs, bn_forward_cluster));
    if (!clusters || attrs.binaryVersion < 90) return l;  // the sm_80 body of the kernel only traps
    const int dynamic_max = allow_all_shared_memory(reinterpret_cast<const void*>(bn_forward_cluster));
    if (dynamic_max < int(kThreads * sizeof(float4))) return l;
    // 16 blocks per cluster is beyond the portable 8; H100s grant it on request. A refusal is an
    // answer, not a failure: the portable size remains.
    l.max_cluster = 16;
    if (cudaFuncSetAttribute(bn_forward_cluster, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
      (void)cudaGetLastError();
      l.max_cluster = 8;
    }
    l.max_per_thread = dynamic_max / int(kThreads * sizeof(float4));
    l.ok = true;
    return l;
  }();
  ClusterGeometry g;
  if (!limits.ok) return g;
  g.plan = cac::kernels::batchnorm_cluster_plan(units, kThreads, target, limits.max_cluster, limits.max_per_thread,
                                                held);
  if (!g.plan.fits) return g;
  g.smem = size_t(g.plan.held) * kThreads * sizeof(float4);
  static std::mutex lock;
  static std::map<std::pair<int, size_t>, bool> resident;  // per (cluster size, shared memory)
  const std::lock_guard<std::mutex> hold(lock);
  auto it = resident.find({g.plan.cluster, g.smem});
  if (it == resident.end()) {
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute attr;
    cluster_config(cfg, attr, g.plan.cluster, g.plan.cluster, g.smem);
    int clusters = 0;
    // As above, a configuration this GPU refuses is a plan that does not fit.
    if (cudaOccupancyMaxActiveClusters(&clusters, bn_forward_cluster, &cfg) != cudaSuccess) {
      (void)cudaGetLastError();
      clusters = 0;
    }
    it = resident.emplace(std::make_pair(g.plan.cluster, g.smem), clusters > 0).first;
  }
  g.plan.fits = it->second;
  return g;
}

// Calls f(std::integral_constant<int, U>) for U = units (2, 4 or 8): the kernels' register arrays
// need U at compile time.
template <class F>
void with_units(int units, F&& f) {
  if (units == 2) f(std::integral_constant<int, 2>{});
  else if (units == 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

}  // namespace
}  // namespace cac::kernels::cuda
