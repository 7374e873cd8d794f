// bn_lab: the batch-norm kernel lab (scratch space, like llm.c's dev/cuda). Every candidate design
// and launch configuration of the training forward and backward, built from the library's device
// blocks (kernels/cuda/batchnorm_kernels.cuh) plus the candidates the library does not ship; each
// is run once, checked against the CPU twin (lab::agrees_with_reference), then timed with CUDA
// events; the table ends with the library's rule on the same shape and whether a candidate beat
// it by more than 3%. Built in CI so it keeps compiling; never linked into the library or programs.
//   bn_lab                      the network shapes of classifier32 and ResNet-18 at batch 128
//   bn_lab --shape 128x64x32x32 one shape (repeatable)      --iters N   timed runs (median)
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/rng.h"
#include "dev/bn_lab/choice.h"
#include "dev/lab_common.h"
#include "kernels/cuda/batchnorm_kernels.cuh"

namespace cac::kernels::cuda {
namespace {
// A candidate the library does not ship (slower than the reread at every measured shape on an
// H100, docs/performance.md): the single-launch forward holding its slice in shared memory, filled
// by cp.async so it takes no registers; kStages = 2 fetches the next channel's slice while the
// current one waits at its barrier.
template <int U, int kStages>
__global__ void __launch_bounds__(kThreads) bn_forward_single(
    const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ gamma,
    const float* __restrict__ beta, int N, int C, int upr, int splits, int groups,
    float* __restrict__ partial, int* __restrict__ counters, float momentum, float eps,
    float* __restrict__ running_mean, float* __restrict__ running_var, float* __restrict__ save_mean,
    float* __restrict__ save_invstd, bool leaky, float slope) {
  extern __shared__ float4 tiles[];  // [kStages][U][kThreads]; a thread reads only the slots it filled
  const int s = int(blockIdx.x) % splits, g = int(blockIdx.x) / splits;
  const int units = N * upr, first = s * (kThreads * U) + int(threadIdx.x);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  float4* y4 = reinterpret_cast<float4*>(y);
  auto slot = [&](int stage, int i) -> float4& { return tiles[(stage * U + i) * kThreads + threadIdx.x]; };
  auto fetch = [&](int stage, int c) {
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int j = first + i * kThreads;
      if (j < units) cp_async16(&slot(stage, i), x4 + unit_offset(j, upr, C, c));
    }
    cp_async_commit();
  };
  if (g < C) fetch(0, g);
  int stage = 0;
  for (int c = g; c < C; c += groups) {
    const int next = c + groups;
    if (kStages == 2 && next < C) {
      fetch(stage ^ 1, next);  // that buffer's last reader was this thread, in the previous channel
      cp_async_wait_group<1>();
    } else {
      cp_async_wait_group<0>();
    }
    SliceSums sums(__ldg(x + int64_t(c) * upr * 4));
#pragma unroll
    for (int i = 0; i < U; ++i)
      if (first + i * kThreads < units) sums.add(slot(stage, i));
    const float2 ss = channel_scale_shift(sums.state(), gamma, beta, c, s, splits, partial, counters, momentum,
                                          eps, running_mean, running_var, save_mean, save_invstd);
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int j = first + i * kThreads;
      if (j < units) y4[unit_offset(j, upr, C, c)] = normalise4(slot(stage, i), ss.x, ss.y, leaky, slope);
    }
    __syncthreads();  // the merge scratch is reused by the next channel
    if (kStages == 1) {
      if (next < C) fetch(0, next);
    } else {
      stage ^= 1;
    }
  }
}
}  // namespace
}  // namespace cac::kernels::cuda

namespace cac::lab {
namespace {
using namespace cac::kernels::cuda;
using cac::kernels::BnActivation;

// One shape's buffers on both sides, and the CPU twin's results to check against.
struct Bufs {
  Shape4 s{};
  int64_t units = 0;
  Tensor x, gy, gamma, beta, rm, rv, y, mean, invstd, gx, ggamma, gbeta;  // CUDA
  Tensor y_ref, mean_ref, invstd_ref, gx_ref, ggamma_ref, gbeta_ref;      // CPU twin
  BnActivation act{true, 0.2};
};

Tensor random(const Shape& sh, Generator& g, double lo, double hi) {
  std::vector<float> v(size_t(shape_numel(sh)));
  for (auto& e : v) e = float(lo + (hi - lo) * g.uniform());
  return Tensor::from_vector(v, sh);
}

Bufs make_bufs(const Shape& sh) {
  Bufs b;
  Generator g(11);
  const int64_t C = sh[1];
  Tensor x = random(sh, g, 2.0, 4.0), gy = random(sh, g, -1.0, 1.0);
  Tensor gamma = random({C}, g, 0.5, 1.5), beta = random({C}, g, -0.5, 0.5);
  Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.0);
  b.y_ref = Tensor::empty(sh), b.mean_ref = Tensor::empty({C}), b.invstd_ref = Tensor::empty({C});
  kernels::cpu::batchnorm_forward_train(x, gamma, beta, rm, rv, 0.1, 1e-5, b.act, b.y_ref, b.mean_ref, b.invstd_ref);
  b.gx_ref = Tensor::empty(sh), b.ggamma_ref = Tensor::empty({C}), b.gbeta_ref = Tensor::empty({C});
  kernels::cpu::batchnorm_backward(x, gamma, beta, b.mean_ref, b.invstd_ref, gy, b.act, true, &b.gx_ref, b.ggamma_ref,
                                   b.gbeta_ref);
  auto dev = [](const Tensor& t) { return t.to(Device::CUDA); };
  b.x = dev(x), b.gy = dev(gy), b.gamma = dev(gamma), b.beta = dev(beta);
  b.rm = Tensor::zeros({C}, DType::F32, Device::CUDA), b.rv = Tensor::full({C}, 1.0, DType::F32, Device::CUDA);
  b.y = Tensor::empty(sh, DType::F32, Device::CUDA), b.gx = Tensor::empty(sh, DType::F32, Device::CUDA);
  b.mean = Tensor::empty({C}, DType::F32, Device::CUDA), b.invstd = Tensor::empty({C}, DType::F32, Device::CUDA);
  b.ggamma = Tensor::empty({C}, DType::F32, Device::CUDA), b.gbeta = Tensor::empty({C}, DType::F32, Device::CUDA);
  b.s = shape_of(b.x);
  b.units = channel_units(b.s, vec4_ok(b.s.HW, {b.x.raw(), b.y.raw()}));
  return b;
}

// A candidate launch: returns false where it cannot run at this shape on this GPU.
struct Candidate {
  std::string label;
  bool forward;
  std::function<bool(Bufs&)> run;
};

template <int U, int kStages>
bool single_forward(Bufs& b) {
  auto kernel = bn_forward_single<U, kStages>;
  const size_t smem = size_t(kStages) * U * kThreads * sizeof(float4);
  const auto p = kernels::batchnorm_single_plan(b.units, b.s.C, resident_blocks(kernel, smem), kThreads, U);
  if (b.units == 0 || !p.fits) return false;
  Tensor partial = Tensor::empty({b.s.C, p.splits, 3}, DType::F32, Device::CUDA);
  launch_cooperative(kernel, p.splits * p.groups, smem, b.x.data<float>(), b.y.data<float>(), b.gamma.data<float>(),
                     b.beta.data<float>(), b.s.N, b.s.C, b.s.HW / 4, p.splits, p.groups, partial.data<float>(),
                     channel_counters(), 0.1f, 1e-5f, b.rm.data<float>(), b.rv.data<float>(), b.mean.data<float>(),
                     b.invstd.data<float>(), b.act.leaky, float(b.act.slope));
  return true;
}

template <bool kHints>
bool reread_forward(Bufs& b, int held) {
  auto kernel = bn_forward_reread<kHints>;
  const size_t smem = size_t(held) * kThreads * sizeof(float4);
  const auto p = kernels::batchnorm_reread_plan(b.units, b.s.C, resident_blocks(kernel, smem), kThreads);
  if (b.units == 0 || !p.fits) return false;
  Tensor partial = Tensor::empty({b.s.C, p.splits, 3}, DType::F32, Device::CUDA);
  launch_cooperative(kernel, p.splits * p.groups, smem, b.x.data<float>(), b.y.data<float>(), b.gamma.data<float>(),
                     b.beta.data<float>(), b.s.N, b.s.C, b.s.HW / 4, p.splits, p.groups, p.per_thread, held,
                     partial.data<float>(), channel_counters(), 0.1f, 1e-5f, b.rm.data<float>(), b.rv.data<float>(),
                     b.mean.data<float>(), b.invstd.data<float>(), b.act.leaky, float(b.act.slope));
  return true;
}

bool cluster_forward(Bufs& b, int target, int held) {
  if (b.units == 0) return false;
  const ClusterGeometry g = cluster_geometry(b.units, target, held);
  if (!g.plan.fits) return false;
  cudaLaunchConfig_t cfg;
  cudaLaunchAttribute attr;
  cluster_config(cfg, attr, b.s.C * g.plan.cluster, g.plan.cluster, g.smem);
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, bn_forward_cluster, b.x.data<float>(), b.y.data<float>(), b.gamma.data<float>(),
                                b.beta.data<float>(), b.s.N, b.s.C, b.s.HW / 4, g.plan.per_thread, g.plan.held, 0.1f,
                                1e-5f, b.rm.data<float>(), b.rv.data<float>(), b.mean.data<float>(),
                                b.invstd.data<float>(), b.act.leaky, float(b.act.slope)));
  CUDA_CHECK_LAUNCH();
  return true;
}

template <int U>
bool two_pass_forward(Bufs& b) {
  if (b.units == 0) return false;
  const int splits = splits_of(b.units, U), blocks = b.s.C * splits, upr = b.s.HW / 4;
  Tensor partial = Tensor::empty({b.s.C, splits, 3}, DType::F32, Device::CUDA);
  bn_stats_sliced<U><<<blocks, kThreads, 0, stream()>>>(b.x.data<float>(), b.s.N, b.s.C, upr, splits,
                                                        partial.data<float>(), channel_counters(), 0.1f, 1e-5f,
                                                        b.rm.data<float>(), b.rv.data<float>(), b.mean.data<float>(),
                                                        b.invstd.data<float>());
  CUDA_CHECK_LAUNCH();
  bn_apply_sliced<U><<<blocks, kThreads, 0, stream()>>>(b.x.data<float>(), b.y.data<float>(), b.gamma.data<float>(),
                                                        b.beta.data<float>(), b.mean.data<float>(),
                                                        b.invstd.data<float>(), b.s.N, b.s.C, upr, splits,
                                                        b.act.leaky, float(b.act.slope));
  CUDA_CHECK_LAUNCH();
  return true;
}

template <int U>
bool single_backward(Bufs& b) {
  const auto p = kernels::batchnorm_single_plan(b.units, b.s.C, resident_blocks(bn_backward_single<U>), kThreads, U);
  if (b.units == 0 || !p.fits) return false;
  Tensor partial = Tensor::empty({b.s.C, p.splits, 2}, DType::F64, Device::CUDA);
  Tensor mean = b.mean_ref.to(Device::CUDA), invstd = b.invstd_ref.to(Device::CUDA);
  launch_cooperative(bn_backward_single<U>, p.splits * p.groups, 0, b.x.data<float>(), b.gy.data<float>(),
                     b.gamma.data<float>(), b.beta.data<float>(), mean.data<float>(), invstd.data<float>(),
                     b.act.leaky, float(b.act.slope), true, b.s.N, b.s.C, b.s.HW / 4, p.splits, p.groups,
                     partial.data<double>(), channel_counters(), b.ggamma.data<float>(), b.gbeta.data<float>(),
                     b.gx.data<float>());
  return true;
}

template <int U>
bool two_pass_backward(Bufs& b) {
  if (b.units == 0) return false;
  const int splits = splits_of(b.units, U), blocks = b.s.C * splits, upr = b.s.HW / 4;
  Tensor mean = b.mean_ref.to(Device::CUDA), invstd = b.invstd_ref.to(Device::CUDA);
  Tensor coef = Tensor::empty({b.s.C, 2}, DType::F32, Device::CUDA);
  Tensor partial = Tensor::empty({b.s.C, splits, 2}, DType::F64, Device::CUDA);
  const float slope = float(b.act.slope);
  bn_bwd_sums_sliced<U><<<blocks, kThreads, 0, stream()>>>(
      b.x.data<float>(), b.gy.data<float>(), b.gamma.data<float>(), b.beta.data<float>(), mean.data<float>(),
      invstd.data<float>(), b.act.leaky, slope, true, b.s.N, b.s.C, upr, splits, partial.data<double>(),
      channel_counters(), b.ggamma.data<float>(), b.gbeta.data<float>(), coef.data<float>());
  CUDA_CHECK_LAUNCH();
  bn_bwd_dx_sliced<U><<<blocks, kThreads, 0, stream()>>>(
      b.x.data<float>(), b.gy.data<float>(), b.gamma.data<float>(), b.beta.data<float>(), mean.data<float>(),
      invstd.data<float>(), coef.data<float>(), b.act.leaky, slope, b.s.N, b.s.C, upr, splits, b.gx.data<float>());
  CUDA_CHECK_LAUNCH();
  return true;
}

bool library_forward(Bufs& b, kernels::BnPath path) {
  return kernels::batchnorm_forward_train_via(path, b.x, b.gamma, b.beta, b.rm, b.rv, 0.1, 1e-5, b.act, b.y, b.mean,
                                              b.invstd) == path || path == kernels::BnPath::Rule;
}
bool library_backward(Bufs& b, kernels::BnPath path) {
  Tensor mean = b.mean_ref.to(Device::CUDA), invstd = b.invstd_ref.to(Device::CUDA);
  return kernels::batchnorm_backward_via(path, b.x, b.gamma, b.beta, mean, invstd, b.gy, b.act, true, &b.gx,
                                         b.ggamma, b.gbeta) == path || path == kernels::BnPath::Rule;
}

std::vector<Candidate> candidates() {
  using kernels::BnPath;
  std::vector<Candidate> c = {
      {"library rule", true, [](Bufs& b) { return library_forward(b, BnPath::Rule); }},
      {"single u=2", true, single_forward<2, 1>},
      {"single u=4", true, single_forward<4, 1>},
      {"single u=8", true, single_forward<8, 1>},
      {"single u=4 prefetch", true, single_forward<4, 2>},
      {"single u=8 prefetch", true, single_forward<8, 2>},
      {"two-pass u=2", true, two_pass_forward<2>},
      {"two-pass u=4", true, two_pass_forward<4>},
      {"two-pass u=8", true, two_pass_forward<8>},
      {"flat", true, [](Bufs& b) { return library_forward(b, BnPath::Flat); }},
      {"library rule", false, [](Bufs& b) { return library_backward(b, BnPath::Rule); }},
      {"single u=2", false, single_backward<2>},
      {"single u=4", false, single_backward<4>},
      {"single u=8", false, single_backward<8>},
      {"two-pass u=2", false, two_pass_backward<2>},
      {"two-pass u=4", false, two_pass_backward<4>},
      {"two-pass u=8", false, two_pass_backward<8>},
      {"flat", false, [](Bufs& b) { return library_backward(b, BnPath::Flat); }}};
  for (int held : {4, 8, 12}) {
    c.push_back({fmt::format("reread held={}", held), true, [held](Bufs& b) { return reread_forward<false>(b, held); }});
    c.push_back({fmt::format("reread held={} L2 hints", held), true,
                 [held](Bufs& b) { return reread_forward<true>(b, held); }});
  }
  for (int target : {4, 8, 16})
    c.push_back({fmt::format("cluster u={}", target), true, [target](Bufs& b) { return cluster_forward(b, target, 0); }});
  for (int held : {4, 8, 12})
    c.push_back({fmt::format("cluster u=16 held={}", held), true,
                 [held](Bufs& b) { return cluster_forward(b, 16, held); }});
  return c;
}

// The candidate's outputs against the CPU twin's (the forward's y, mean, invstd; the backward's dx,
// dgamma, dbeta).
bool agrees(const Bufs& b, bool forward) {
  auto same = [](const Tensor& ref, const Tensor& got) {
    return agrees_with_reference(ref.to_vector<float>(), got.to_vector<float>());
  };
  if (forward) return same(b.y_ref, b.y) && same(b.mean_ref, b.mean) && same(b.invstd_ref, b.invstd);
  return same(b.gx_ref, b.gx) && same(b.ggamma_ref, b.ggamma) && same(b.gbeta_ref, b.gbeta);
}

// Runs, checks and times every candidate of one direction at one shape; returns the number that
// disagreed with the CPU twin.
int sweep(Bufs& b, bool forward, int iters, double copy_gbs) {
  const double bytes = double(b.s.total) * 4 * (forward ? 2 : 3);
  std::vector<std::string> labels;
  std::vector<double> ms;
  int wrong = 0;
  for (const Candidate& c : candidates()) {
    if (c.forward != forward) continue;
    double t = INFINITY;
    std::string note;
    if (!c.run(b)) {
      note = "cannot run here";
    } else if (!agrees(b, forward)) {
      note = "WRONG RESULT (a kernel bug)";
      ++wrong;
    } else {
      t = cac::cuda::time_ms([&] { c.run(b); }, 3, iters, false);
    }
    labels.push_back(c.label);
    ms.push_back(t);
    if (std::isfinite(t))
      std::printf("  %-8s %-26s %9.2f us %7.0f GB/s %5.0f%% of copy\n", forward ? "forward" : "backward", c.label.c_str(),
                  t * 1e3, bytes / (t * 1e-3) / 1e9, 100.0 * bytes / (t * 1e-3) / 1e9 / copy_gbs);
    else
      std::printf("  %-8s %-26s %s\n", forward ? "forward" : "backward", c.label.c_str(), note.c_str());
  }
  // The rule is the first row: `pick_measured` keeps it unless another is more than 3% faster.
  const int best = pick_measured(ms, 0.03);
  if (best > 0)
    std::printf("  -> %s: '%s' is faster than the library's rule (%.2f vs %.2f us)\n", forward ? "forward" : "backward",
                labels[size_t(best)].c_str(), ms[size_t(best)] * 1e3, ms[0] * 1e3);
  else if (best == 0)
    std::printf("  -> %s: the library's rule is within 3%% of the fastest candidate\n", forward ? "forward" : "backward");
  return wrong;
}

}  // namespace
}  // namespace cac::lab

int main(int argc, char** argv) {
  using namespace cac;
  try {
    lab::LabArgs args;
    if (!lab::parse_lab_args(argc, argv, "bn_lab", "NxCxHxW", &args)) return 2;
    if (args.shapes.empty())  // classifier32's and ResNet-18's batch-norm inputs at batch 128
      args.shapes = {{128, 64, 32, 32}, {128, 128, 16, 16}, {128, 128, 8, 8}, {128, 128, 4, 4}, {128, 256, 8, 8}, {128, 512, 4, 4}};
    if (!lab::start_lab("bn_lab")) return 2;
    const double copy_gbs = cac::cuda::copy_bandwidth_gbs(size_t(1) << 30);
    int wrong = 0;
    for (const Shape& s : args.shapes) {
      std::printf("%lldx%lldx%lldx%lld (BN + LeakyReLU, median of %d):\n", (long long)s[0], (long long)s[1],
                  (long long)s[2], (long long)s[3], args.iters);
      lab::Bufs b = lab::make_bufs(s);
      wrong += lab::sweep(b, true, args.iters, copy_gbs) + lab::sweep(b, false, args.iters, copy_gbs);
    }
    std::printf("candidates that disagreed with the CPU twin: %d\n", wrong);
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bn_lab: %s\n", e.what());
    return 1;
  }
}
