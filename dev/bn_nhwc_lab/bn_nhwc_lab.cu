// bn_nhwc_lab: issue 25's bf16 channels-last batch norm + LeakyReLU forward (training) at the
// networks' shapes, the library's path (kernels/cuda/batchnorm_nhwc.cu: sums, finish, normalise;
// x read twice) against a single-launch candidate that keeps each block's rows in shared memory
// across a grid-wide barrier, so x is read once and y written once, the fewest bytes there are.
// Each is checked against the CPU twin, then timed (CUDA events, median) as a share of the
// measured device-to-device copy rate (issue 25's target: >= 70% at 128x32x32x64). Scratch space
// (dev/), built in CI so it keeps compiling; never linked into the library.
//   bn_nhwc_lab [--shape NxHxWxC]... [--iters N]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "dev/lab_common.h"
#include "kernels/batchnorm_nhwc.h"
#include "kernels/batchnorm_nhwc_math.h"
#include "kernels/cuda/batchnorm_kernels.cuh"  // kThreads, cooperative launch, residency, the watchdog clock

namespace cac::lab {
namespace {
using namespace cac::kernels::cuda;
using cac::kernels::BnActivation;
using cac::kernels::BnAffine;

__device__ __forceinline__ void unpack8(const uint4& w, float* v) {
  const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    v[2 * k] = bf16_to_float(uint16_t(u[k] & 0xffffu));
    v[2 * k + 1] = bf16_to_float(uint16_t(u[k] >> 16));
  }
}
__device__ __forceinline__ uint4 pack8(const float* v) {
  uint32_t u[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) u[k] = uint32_t(bf16_bits(v[2 * k])) | (uint32_t(bf16_bits(v[2 * k + 1])) << 16);
  return make_uint4(u[0], u[1], u[2], u[3]);
}

// Every block arrives once; the wait ends when all have (cooperative launch: all co-resident). The
// last block to depart resets both counts for the next launch.
__device__ void grid_arrive_and_wait(int* counts) {
  __threadfence();  // this thread's partials are visible device-wide before its block counts as arrived
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(counts, 1);
    const volatile int* arrived = counts;
    const uint64_t t0 = globaltimer_ns();
    while (*arrived < int(gridDim.x)) {
      __nanosleep(64);
      if (globaltimer_ns() - t0 > 10'000'000'000ull) __trap();
    }
    __threadfence();
  }
  __syncthreads();
}
__device__ void grid_depart(int* counts) {
  if (threadIdx.x == 0 && atomicAdd(counts + 1, 1) == int(gridDim.x) - 1) counts[0] = 0, counts[1] = 0;
}

// Per channel c (one warp each, lanes over the blocks' partials): the library's finish, into
// coef[c], coef[C + c]; block 0 also writes the running and saved statistics.
__device__ void finish_channels(const double* partial, const uint16_t* x, int64_t R, int C, const float* gamma,
                                const float* beta, float* rm, float* rv, double momentum, double eps, float* save_mean,
                                float* save_invstd, float* coef) {
  const int lane = threadIdx.x % 32;
  for (int c = int(threadIdx.x) / 32; c < C; c += kThreads / 32) {
    double a = 0, b = 0;
    for (int i = lane; i < int(gridDim.x); i += 32)  // past L1: other SMs wrote them
      a += __ldcg(partial + (size_t(i) * 2) * C + c), b += __ldcg(partial + (size_t(i) * 2 + 1) * C + c);
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane != 0) continue;
    const double M = double(R), dm = a / M, mean = double(bf16_to_float(x[c])) + dm;
    const double var = fmax(b / M - dm * dm, 0.0), unbiased = M > 1 ? var * M / (M - 1) : var;
    const float mf = float(mean), is = float(1.0 / sqrt(var + eps));
    const BnAffine af = kernels::bn_affine(gamma[c], beta[c], mf, is);
    coef[c] = af.scale;
    coef[C + c] = af.shift;
    if (blockIdx.x == 0) {
      rm[c] = float((1 - momentum) * rm[c] + momentum * mean);
      rv[c] = float((1 - momentum) * rv[c] + momentum * unbiased);
      save_mean[c] = mf;
      save_invstd[c] = is;
    }
  }
}

struct Args {
  const uint16_t* x;
  uint16_t* y;
  int64_t R, chunk;
  int C;
  const float *gamma, *beta;
  float *rm, *rv, *save_mean, *save_invstd;
  double momentum, eps;
  double* partial;
  int* counts;
  bool leaky;
  float slope;
};

// 8 channels per thread (C a multiple of 8), U = C / 8 threads per row, P rows at a time. Shared:
// the block's rows [chunk][U] as uint4, then [2][P][C] float sums, then [2][C] float coefficients.
__global__ void __launch_bounds__(kThreads) single_forward(Args a) {
  extern __shared__ uint4 tile[];
  const int C = a.C, U = C / 8, P = kThreads / U, u = int(threadIdx.x) % U, j = int(threadIdx.x) / U;
  float* sums = reinterpret_cast<float*>(tile + a.chunk * U);
  float* coef = sums + 2 * P * C;
  const uint4* x4 = reinterpret_cast<const uint4*>(a.x);
  const int64_t r0 = blockIdx.x * a.chunk, r1 = min(a.R, r0 + a.chunk);
  float k[8], s[8] = {}, q[8] = {}, v[8];
  unpack8(x4[u], k);  // row 0: the shift, as the library's sums
  if (j < P) {
#pragma unroll 4
    for (int64_t r = r0 + j; r < r1; r += P) {
      const uint4 w = x4[r * U + u];
      tile[(r - r0) * U + u] = w;
      unpack8(w, v);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float d = v[e] - k[e];
        s[e] += d;
        q[e] = fmaf(d, d, q[e]);
      }
    }
    for (int e = 0; e < 8; ++e) sums[j * C + u * 8 + e] = s[e], sums[(P + j) * C + u * 8 + e] = q[e];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    double sa = 0, sb = 0;
    for (int i = 0; i < P; ++i) sa += sums[i * C + c], sb += sums[(P + i) * C + c];
    a.partial[(size_t(blockIdx.x) * 2) * C + c] = sa;
    a.partial[(size_t(blockIdx.x) * 2 + 1) * C + c] = sb;
  }
  grid_arrive_and_wait(a.counts);
  finish_channels(a.partial, a.x, a.R, C, a.gamma, a.beta, a.rm, a.rv, a.momentum, a.eps, a.save_mean,
                  a.save_invstd, coef);
  __syncthreads();
  grid_depart(a.counts);
  uint4* y4 = reinterpret_cast<uint4*>(a.y);
  if (j < P) {
#pragma unroll 4
    for (int64_t r = r0 + j; r < r1; r += P) {
      unpack8(tile[(r - r0) * U + u], v);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int c = u * 8 + e;
        v[e] = kernels::bn_act(kernels::bn_pre(v[e], BnAffine{coef[c], coef[C + c]}), a.leaky, a.slope);
      }
      y4[r * U + u] = pack8(v);
    }
  }
}

// One shape's tensors on both sides; the CPU twin's results to check against.
struct Bufs {
  Shape s;
  Tensor x, gamma, beta, rm, rv, y, mean, invstd;
  Tensor y_ref, mean_ref, invstd_ref;
  BnActivation act{true, 0.2};
};

Bufs make_bufs(const Shape& s) {
  Bufs b;
  b.s = s;
  const int64_t C = s[3];
  Generator g(13);
  auto random = [&](const Shape& sh, double lo, double hi) {
    std::vector<float> v(size_t(shape_numel(sh)));
    for (auto& e : v) e = float(lo + (hi - lo) * g.uniform());
    return Tensor::from_vector(v, sh);
  };
  const Tensor x = random(s, 2.0, 4.0).to(DType::BF16), gamma = random({C}, 0.5, 1.5), beta = random({C}, -0.5, 0.5);
  Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0);
  b.y_ref = Tensor::empty(s, DType::BF16), b.mean_ref = Tensor::empty({C}), b.invstd_ref = Tensor::empty({C});
  kernels::batchnorm_nhwc_forward_train(x, gamma, beta, rm, rv, 0.1, 1e-5, b.act, b.y_ref, b.mean_ref, b.invstd_ref);
  auto dev = [](const Tensor& t) { return t.to(Device::CUDA); };
  b.x = dev(x), b.gamma = dev(gamma), b.beta = dev(beta);
  b.rm = Tensor::zeros({C}, DType::F32, Device::CUDA), b.rv = Tensor::full({C}, 1.0, DType::F32, Device::CUDA);
  b.y = Tensor::empty(s, DType::BF16, Device::CUDA);
  b.mean = Tensor::empty({C}, DType::F32, Device::CUDA), b.invstd = Tensor::empty({C}, DType::F32, Device::CUDA);
  return b;
}

// The candidate at this shape: blocks per SM from 4 down to 1, the most whose rows fit in shared
// memory together; false where none fits or C is not a multiple of 8.
bool single(Bufs& b, int* per_sm_used) {
  const int64_t C = b.s[3], R = shape_numel(b.s) / C;
  if (C % 8 != 0 || C / 8 > kThreads) return false;
  const int U = int(C / 8), P = kThreads / U;
  static int* counts = [] {
    int* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, 2 * sizeof(int)));
    CUDA_CHECK(cudaMemset(p, 0, 2 * sizeof(int)));
    return p;
  }();
  for (int per_sm = 4; per_sm >= 1; --per_sm) {
    const int blocks = cac::cuda::sm_count() * per_sm;
    const int64_t chunk = (R + blocks - 1) / blocks;
    const size_t smem = size_t(chunk) * U * 16 + (size_t(2) * P * C + 2 * C) * sizeof(float);
    if (resident_blocks(single_forward, smem) < blocks) continue;
    Tensor partial = Tensor::empty({blocks, 2, C}, DType::F64, Device::CUDA);
    Args a{reinterpret_cast<const uint16_t*>(b.x.data<bf16>()), reinterpret_cast<uint16_t*>(b.y.data<bf16>()), R, chunk,
           int(C), b.gamma.data<float>(), b.beta.data<float>(), b.rm.data<float>(), b.rv.data<float>(),
           b.mean.data<float>(), b.invstd.data<float>(), 0.1, 1e-5, partial.data<double>(), counts, b.act.leaky,
           float(b.act.slope)};
    launch_cooperative(single_forward, blocks, smem, a);
    *per_sm_used = per_sm;
    return true;
  }
  return false;
}

bool library(Bufs& b) {
  kernels::batchnorm_nhwc_forward_train(b.x, b.gamma, b.beta, b.rm, b.rv, 0.1, 1e-5, b.act, b.y, b.mean, b.invstd);
  return true;
}

// y within one bf16 step of the twin's (2^-7 relative, plus 2^-12 of the largest: the float
// statistics may move a value across a rounding boundary); mean and invstd within 1e-5 relative.
bool agrees(const Bufs& b) {
  const std::vector<float> y = b.y.to(DType::F32).to_vector<float>(), r = b.y_ref.to(DType::F32).to_vector<float>();
  double largest = 0;
  for (float v : r) largest = std::max(largest, double(std::fabs(v)));
  for (size_t i = 0; i < r.size(); ++i)
    if (!(std::fabs(double(y[i]) - r[i]) <= std::ldexp(std::fabs(double(r[i])), -7) + std::ldexp(largest, -12)))
      return false;
  for (const auto& [got, want] : {std::make_pair(b.mean, b.mean_ref), std::make_pair(b.invstd, b.invstd_ref)}) {
    const std::vector<float> g = got.to_vector<float>(), w = want.to_vector<float>();
    for (size_t i = 0; i < w.size(); ++i)
      if (!(std::fabs(double(g[i]) - w[i]) <= 1e-5 * std::fabs(double(w[i])) + 1e-6)) return false;
  }
  return true;
}

// Runs, checks and times both at one shape; returns how many disagreed with the twin.
int compare(const Shape& s, int iters, double copy_gbs) {
  Bufs b = make_bufs(s);
  const double bytes = 2.0 * double(shape_numel(s)) * 2;  // x read once, y written once, bf16
  std::printf("%lldx%lldx%lldx%lld (bf16 NHWC BN + LeakyReLU forward, median of %d):\n", (long long)s[0],
              (long long)s[1], (long long)s[2], (long long)s[3], iters);
  int wrong = 0, per_sm = 0;
  auto row = [&](const std::string& label, const std::function<bool()>& run) {
    if (!run()) return std::printf("  %-32s cannot run here\n", label.c_str()), void();
    if (!agrees(b)) return ++wrong, std::printf("  %-32s WRONG RESULT (a kernel bug)\n", label.c_str()), void();
    const double t = cac::cuda::time_ms([&] { run(); }, 3, iters, false);
    std::printf("  %-32s %9.2f us %7.0f GB/s %5.0f%% of copy\n", label.c_str(), t * 1e3, bytes / (t * 1e-3) / 1e9,
                100.0 * bytes / (t * 1e-3) / 1e9 / copy_gbs);
  };
  row("library (sums, finish, normalise)", [&] { return library(b); });
  row("single launch, rows in shared", [&] { return single(b, &per_sm); });
  if (per_sm > 0) std::printf("  (single launch: %d blocks per SM)\n", per_sm);
  return wrong;
}

}  // namespace
}  // namespace cac::lab

int main(int argc, char** argv) {
  using namespace cac;
  try {
    lab::LabArgs args;
    if (!lab::parse_lab_args(argc, argv, "bn_nhwc_lab", "NxHxWxC", &args)) return 2;
    if (args.shapes.empty())  // classifier32's and ResNet-18's batch-norm inputs at batch 128, channels last
      args.shapes = {{128, 32, 32, 64}, {128, 16, 16, 128}, {128, 8, 8, 128}, {128, 4, 4, 128}, {128, 8, 8, 256}, {128, 4, 4, 512}};
    if (!lab::start_lab("bn_nhwc_lab")) return 2;
    const double copy_gbs = cac::cuda::copy_bandwidth_gbs(size_t(1) << 30);
    int wrong = 0;
    for (const Shape& s : args.shapes) wrong += lab::compare(s, args.iters, copy_gbs);
    std::printf("bf16 NHWC batch-norm candidates that disagreed with the CPU twin: %d\n", wrong);
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bn_nhwc_lab: %s\n", e.what());
    return 1;
  }
}
