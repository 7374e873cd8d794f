// CUDA versions of kernels/elementwise.h (f32): grid-stride loops, one launch each.
#include "core/bf16.h"
#include "core/rng.h"
#include "kernels/bf16_copy_math.h"
#include "kernels/cuda/common.cuh"
#include "kernels/elementwise.h"

namespace cac::kernels::cuda {

namespace {
constexpr int kThreads = 256;

__device__ __forceinline__ float leaky(float v, float s) { return v > 0.f ? v : v * s; }

// 16-byte loads and stores for the n/4 whole float4s (bases checked on the host), then the tail.
__global__ void leaky_fwd4(const float4* __restrict__ x, float4* __restrict__ y, float s, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 v = __ldg(x + i);
    y[i] = make_float4(leaky(v.x, s), leaky(v.y, s), leaky(v.z, s), leaky(v.w, s));
  }
}
__global__ void leaky_fwd(const float* __restrict__ x, float* __restrict__ y, float s, int64_t begin, int64_t n) {
  for (int64_t i = begin + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = leaky(x[i], s);
}
__global__ void leaky_bwd(const float* __restrict__ x, const float* __restrict__ g, float* __restrict__ gx,
                          float s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    gx[i] = x[i] > 0.f ? g[i] : g[i] * s;
}
__global__ void add_kernel(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y,
                           int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}
// bf16 tensors (issue 25): out[i] = bf16(f(float(a[i]), float(b[i]))).
template <class F>
__global__ void bf16_map(const uint16_t* __restrict__ a, const uint16_t* __restrict__ b, uint16_t* __restrict__ out,
                         int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = bf16_bits(f(bf16_to_float(a[i]), bf16_to_float(b[i])));
}
struct LeakyF {
  float s;
  __device__ float operator()(float v, float) const { return v > 0.f ? v : v * s; }
};
struct LeakyB {
  float s;
  __device__ float operator()(float v, float g) const { return v > 0.f ? g : g * s; }
};
struct AddF {
  __device__ float operator()(float u, float v) const { return u + v; }
};
template <class F>
void launch_bf16_map(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const int64_t n = a.numel();
  if (n == 0) return;
  bf16_map<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(reinterpret_cast<const uint16_t*>(a.data<bf16>()),
                                                            reinterpret_cast<const uint16_t*>(b.data<bf16>()),
                                                            reinterpret_cast<uint16_t*>(out.data<bf16>()), n, f);
  CUDA_CHECK_LAUNCH();
}
// Idx: uint32_t when n fits (a 64-bit division per element costs more than the memory traffic).
template <class Idx>
__global__ void dropout_fwd(const float* __restrict__ x, float* __restrict__ y, float* __restrict__ mask,
                            float p, float scale, uint64_t seed, uint64_t counter,
                            const int64_t* __restrict__ counter_at, Idx hw, Idx n) {
  if (counter_at) counter += uint64_t(*counter_at);
  for (Idx i = blockIdx.x * Idx(blockDim.x) + threadIdx.x; i < n; i += Idx(gridDim.x) * blockDim.x) {
    const Idx plane = i / hw;
    // Same draw as the CPU twin: the mask is a pure function of (seed, counter, plane).
    const float m = dropout_mask_value(seed, counter, uint64_t(plane), p, scale);
    y[i] = x[i] * m;
    if (i % hw == 0) mask[plane] = m;
  }
}
// Channels-last bf16: first the [B, C] mask (the same draw as dropout_fwd), then one pass.
__global__ void dropout_nhwc_mask(float* __restrict__ mask, float p, float scale, uint64_t seed, uint64_t counter,
                                  const int64_t* __restrict__ counter_at, int64_t planes) {
  if (counter_at) counter += uint64_t(*counter_at);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < planes; i += int64_t(gridDim.x) * blockDim.x)
    mask[i] = dropout_mask_value(seed, counter, uint64_t(i), p, scale);
}
__global__ void dropout_nhwc_apply(const uint16_t* __restrict__ x, const float* __restrict__ mask,
                                   uint16_t* __restrict__ y, int64_t hw, int64_t C, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = bf16_bits(bf16_to_float(x[i]) * mask[(i / (hw * C)) * C + i % C]);
}
__global__ void dropout_bwd(const float* __restrict__ g, const float* __restrict__ mask, float* __restrict__ gx,
                            int64_t hw, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    gx[i] = g[i] * mask[i / hw];
}
// One warp per (n, c) plane.
__global__ void gap_fwd(const float* __restrict__ x, float* __restrict__ y, int64_t planes, int64_t hw) {
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= planes) return;
  float s = 0.f;
  for (int64_t i = lane; i < hw; i += 32) s += x[warp * hw + i];
  s = warp_sum(s);
  if (lane == 0) y[warp] = s / float(hw);
}
__global__ void gap_bwd(const float* __restrict__ g, float* __restrict__ gx, int64_t hw, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    gx[i] = g[i / hw] / float(hw);
}
__global__ void count_up_kernel(int64_t* c) { *c += 1; }
// The transposes table of a Bf16Copy, in shared memory when it fits (every element looks it up).
struct CopyTable {
  uint16_t* out;
  const int64_t* table;
  int rows;
};
// 2 KiB holds a table for up to 64 convolutions (ResNet-18 has 20); a longer one is read from global memory.
constexpr int kSharedTableRows = 64;
__device__ const int64_t* stage_table(const CopyTable& c, int64_t* shared) {
  if (c.rows > kSharedTableRows) return c.table;
  for (int k = threadIdx.x; k < 4 * c.rows; k += blockDim.x) shared[k] = c.table[k];
  __syncthreads();
  return shared;
}
__global__ void sgd_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf,
                           const double* __restrict__ lr_at, float momentum, float wd, int64_t n, CopyTable copy) {
  __shared__ int64_t shared[4 * kSharedTableRows];
  const int64_t* table = copy.out ? stage_table(copy, shared) : nullptr;
  const float lr = float(*lr_at);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float d = g[i] + wd * p[i];
    const float b = momentum * buf[i] + d;
    buf[i] = b;
    const float v = p[i] - lr * b;
    p[i] = v;
    if (copy.out) copy.out[bf16_copy_index(i, table, copy.rows)] = bf16_bits(v);
  }
}
__global__ void write_copy_kernel(const float* __restrict__ x, int64_t n, CopyTable copy) {
  __shared__ int64_t shared[4 * kSharedTableRows];
  const int64_t* table = stage_table(copy, shared);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    copy.out[bf16_copy_index(i, table, copy.rows)] = bf16_bits(x[i]);
}
CopyTable copy_table(Bf16Copy* c) {
  if (!c) return {nullptr, nullptr, 0};
  return {reinterpret_cast<uint16_t*>(c->copy.data<bf16>()), c->transposes.data<int64_t>(),
          int(c->transposes.dim(0))};
}
}  // namespace

void leaky_relu_forward(const Tensor& x, double slope, Tensor& y) {
  if (x.dtype() == DType::BF16) return launch_bf16_map(x, x, y, LeakyF{float(slope)});
  require_f32("leaky_relu", x);
  const int64_t n = x.numel();
  if (n == 0) return;
  const bool vec4 = reinterpret_cast<uintptr_t>(x.raw()) % 16 == 0 && reinterpret_cast<uintptr_t>(y.raw()) % 16 == 0;
  const int64_t n4 = vec4 ? n / 4 : 0;
  if (n4 > 0) {
    leaky_fwd4<<<grid_for(n4, kThreads), kThreads, 0, stream()>>>(
        reinterpret_cast<const float4*>(x.data<float>()), reinterpret_cast<float4*>(y.data<float>()), float(slope), n4);
    CUDA_CHECK_LAUNCH();
  }
  if (n4 * 4 < n) {
    leaky_fwd<<<grid_for(n - n4 * 4, kThreads), kThreads, 0, stream()>>>(x.data<float>(), y.data<float>(),
                                                                         float(slope), n4 * 4, n);
    CUDA_CHECK_LAUNCH();
  }
}

void leaky_relu_backward(const Tensor& x, const Tensor& gy, double slope, Tensor& gx) {
  if (x.dtype() == DType::BF16) return launch_bf16_map(x, gy, gx, LeakyB{float(slope)});
  require_f32("leaky_relu_backward", x);
  const int64_t n = x.numel();
  if (n == 0) return;
  leaky_bwd<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(x.data<float>(), gy.data<float>(),
                                                               gx.data<float>(), float(slope), n);
  CUDA_CHECK_LAUNCH();
}

void add_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  if (a.dtype() == DType::BF16) return launch_bf16_map(a, b, y, AddF{});
  require_f32("add", a);
  const int64_t n = a.numel();
  if (n == 0) return;
  add_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(a.data<float>(), b.data<float>(), y.data<float>(), n);
  CUDA_CHECK_LAUNCH();
}

void dropout2d_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter, const Tensor* counter_at,
                       Tensor& y, Tensor& mask) {
  const int64_t* at = counter_at ? counter_at->data<int64_t>() : nullptr;
  require_f32("dropout2d", x);
  const int64_t n = x.numel(), planes = x.dim(0) * x.dim(1);
  if (n == 0) return;
  const int64_t hw = n / planes;
  if (n < (int64_t(1) << 31))  // i + grid stride must not wrap a uint32_t
    dropout_fwd<uint32_t><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
        x.data<float>(), y.data<float>(), mask.data<float>(), float(p), float(1.0 / (1.0 - p)), seed,
        counter, at, uint32_t(hw), uint32_t(n));
  else
    dropout_fwd<int64_t><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
        x.data<float>(), y.data<float>(), mask.data<float>(), float(p), float(1.0 / (1.0 - p)), seed,
        counter, at, hw, n);
  CUDA_CHECK_LAUNCH();
}

void dropout2d_nhwc_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter, const Tensor* counter_at,
                            Tensor& y, Tensor& mask) {
  const int64_t planes = x.dim(0) * x.dim(3), n = x.numel();
  if (n == 0) return;
  dropout_nhwc_mask<<<grid_for(planes, kThreads), kThreads, 0, stream()>>>(
      mask.data<float>(), float(p), float(1.0 / (1.0 - p)), seed, counter,
      counter_at ? counter_at->data<int64_t>() : nullptr, planes);
  CUDA_CHECK_LAUNCH();
  dropout2d_nhwc_backward(x, mask, y);  // the same pass: y = bf16(x * mask)
}

void dropout2d_nhwc_backward(const Tensor& gy, const Tensor& mask, Tensor& gx) {
  const int64_t n = gy.numel();
  if (n == 0) return;
  dropout_nhwc_apply<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
      reinterpret_cast<const uint16_t*>(gy.data<bf16>()), mask.data<float>(), reinterpret_cast<uint16_t*>(gx.data<bf16>()),
      gy.dim(1) * gy.dim(2), gy.dim(3), n);
  CUDA_CHECK_LAUNCH();
}

void dropout2d_backward(const Tensor& gy, const Tensor& mask, Tensor& gx) {
  require_f32("dropout2d_backward", gy);
  const int64_t n = gy.numel();
  if (n == 0) return;
  dropout_bwd<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(gy.data<float>(), mask.data<float>(),
                                                                 gx.data<float>(), n / mask.numel(), n);
  CUDA_CHECK_LAUNCH();
}

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  require_f32("global_avg_pool", x);
  const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  if (planes == 0) return;
  const int blocks = int((planes * 32 + kThreads - 1) / kThreads);
  gap_fwd<<<blocks, kThreads, 0, stream()>>>(x.data<float>(), y.data<float>(), planes, hw);
  CUDA_CHECK_LAUNCH();
}

void global_avg_pool_backward(const Tensor& gy, Tensor& gx) {
  require_f32("global_avg_pool_backward", gy);
  const int64_t n = gx.numel();
  if (n == 0) return;
  gap_bwd<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(gy.data<float>(), gx.data<float>(),
                                                             gx.dim(2) * gx.dim(3), n);
  CUDA_CHECK_LAUNCH();
}

void count_up(Tensor& counter) {
  count_up_kernel<<<1, 1, 0, stream()>>>(counter.data<int64_t>());
  CUDA_CHECK_LAUNCH();
}

void sgd_step(Tensor& values, const Tensor& grads, Tensor& momentum_buf, const Tensor& lr, double momentum,
              double weight_decay, Bf16Copy* copy) {
  require_f32("sgd_step", values);
  const int64_t n = values.numel();
  if (n == 0) return;
  // One launch over the whole parameter slab.
  sgd_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
      values.data<float>(), grads.data<float>(), momentum_buf.data<float>(), lr.data<double>(),
      float(momentum), float(weight_decay), n, copy_table(copy));
  CUDA_CHECK_LAUNCH();
}

void write_bf16_copy(const Tensor& values, Bf16Copy& copy) {
  require_f32("write_bf16_copy", values);
  const int64_t n = values.numel();
  if (n == 0) return;
  write_copy_kernel<<<grid_for(n, kThreads), kThreads, 0, stream()>>>(values.data<float>(), n, copy_table(&copy));
  CUDA_CHECK_LAUNCH();
}

}  // namespace cac::kernels::cuda
