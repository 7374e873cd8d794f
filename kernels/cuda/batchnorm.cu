// CUDA versions of kernels/batchnorm.h (f32, LeakyReLU optionally fused): which of the kernels in
// batchnorm_kernels.cuh runs at a shape (the rule of kernels/batchnorm_paths.h, from what this GPU
// can run), and their launches. The choice is a pure function of the shape and the GPU: no timing,
// no host wait, nothing kept between calls but the occupancy answers, so every call can be
// captured in a CUDA graph and the first step costs what every later one does.
#include <cstdint>

#include "kernels/cuda/batchnorm_kernels.cuh"

namespace cac::kernels::cuda {

namespace {
// The shipped configurations (what measured best on an H100, docs/performance.md; dev/bn_lab
// sweeps the alternatives). Reread: 12 float4s per thread held in shared memory (48 KiB per block,
// 4 blocks per SM). Cluster: 8 float4s per thread before the cluster grows. Backward single
// launch: 4 float4s per thread in registers. Two passes: 8 (forward) and 4 (backward).
constexpr int kRereadHeld = 12;
constexpr int kClusterUnits = 8;
constexpr int kBackwardUnits = 4;
constexpr int kTwoPassForwardUnits = 8;
constexpr int kTwoPassBackwardUnits = 4;

// The training forward's tensors and scalars, as the launchers take them.
struct ForwardArgs {
  const Tensor& x;
  const Tensor& gamma;
  const Tensor& beta;
  Tensor& running_mean;
  Tensor& running_var;
  float momentum, eps;
  BnActivation act;
  Tensor& y;
  Tensor& save_mean;
  Tensor& save_invstd;
};
struct BackwardArgs {
  const Tensor& x;
  const Tensor& gamma;
  const Tensor& beta;
  const Tensor& mean;
  const Tensor& invstd;
  const Tensor& gy;
  BnActivation act;
  bool training;
  Tensor* gx;
  Tensor& ggamma;
  Tensor& gbeta;
};

size_t reread_smem() { return size_t(kRereadHeld) * kThreads * sizeof(float4); }

BnSlicePlan reread_plan(const Shape4& s, int64_t units) {
  return batchnorm_reread_plan(units, s.C, resident_blocks(bn_forward_reread<true>, reread_smem()), kThreads);
}

// Shared memory of all SMs together: whether an activation fits on chip in one wave.
int64_t on_chip_bytes() {
  static const int64_t bytes = [] {
    int device = 0, per_sm = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
    return int64_t(per_sm) * cac::cuda::sm_count();
  }();
  return bytes;
}

BnPath forward_rule(const Shape4& s, int64_t units) {
  BnForwardFacts f;
  f.units = units;
  if (units > 0) {
    f.activation_bytes = s.total * int64_t(sizeof(float));
    f.on_chip_bytes = on_chip_bytes();
    f.cluster_fits = cluster_geometry(units, kClusterUnits, 0).plan.fits;
    f.reread_fits = reread_plan(s, units).fits;
  }
  return batchnorm_forward_rule(f);
}

bool launch_reread(const Shape4& s, int64_t units, const ForwardArgs& a) {
  const BnSlicePlan p = reread_plan(s, units);
  if (!p.fits) return false;
  Tensor partial = Tensor::empty({s.C, p.splits, 3}, DType::F32, Device::CUDA);
  launch_cooperative(bn_forward_reread<true>, p.splits * p.groups, reread_smem(), a.x.data<float>(), a.y.data<float>(),
                     a.gamma.data<float>(), a.beta.data<float>(), s.N, s.C, s.HW / 4, p.splits, p.groups,
                     p.per_thread, kRereadHeld, partial.data<float>(), channel_counters(), a.momentum, a.eps,
                     a.running_mean.data<float>(), a.running_var.data<float>(), a.save_mean.data<float>(),
                     a.save_invstd.data<float>(), a.act.leaky, float(a.act.slope));
  return true;
}

bool launch_cluster(const Shape4& s, int64_t units, const ForwardArgs& a) {
  const ClusterGeometry g = cluster_geometry(units, kClusterUnits, 0);
  if (!g.plan.fits) return false;
  cudaLaunchConfig_t cfg;
  cudaLaunchAttribute attr;
  cluster_config(cfg, attr, s.C * g.plan.cluster, g.plan.cluster, g.smem);
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, bn_forward_cluster, a.x.data<float>(), a.y.data<float>(), a.gamma.data<float>(),
                                a.beta.data<float>(), s.N, s.C, s.HW / 4, g.plan.per_thread, g.plan.held, a.momentum,
                                a.eps, a.running_mean.data<float>(), a.running_var.data<float>(),
                                a.save_mean.data<float>(), a.save_invstd.data<float>(), a.act.leaky,
                                float(a.act.slope)));
  CUDA_CHECK_LAUNCH();
  return true;
}

void launch_forward_two_pass(const Shape4& s, int64_t units, const ForwardArgs& a) {
  constexpr int kU = kTwoPassForwardUnits;
  const int splits = splits_of(units, kU), blocks = s.C * splits, upr = s.HW / 4;
  Tensor partial = Tensor::empty({s.C, splits, 3}, DType::F32, Device::CUDA);
  bn_stats_sliced<kU><<<blocks, kThreads, 0, stream()>>>(
      a.x.data<float>(), s.N, s.C, upr, splits, partial.data<float>(), channel_counters(), a.momentum, a.eps,
      a.running_mean.data<float>(), a.running_var.data<float>(), a.save_mean.data<float>(),
      a.save_invstd.data<float>());
  CUDA_CHECK_LAUNCH();
  bn_apply_sliced<kU><<<blocks, kThreads, 0, stream()>>>(a.x.data<float>(), a.y.data<float>(), a.gamma.data<float>(),
                                                         a.beta.data<float>(), a.save_mean.data<float>(),
                                                         a.save_invstd.data<float>(), s.N, s.C, upr, splits,
                                                         a.act.leaky, float(a.act.slope));
  CUDA_CHECK_LAUNCH();
}

void launch_forward_flat(const Shape4& s, bool vec4, const ForwardArgs& a) {
  const int splits = splits_for(s.N, s.C);
  Tensor partial = Tensor::empty({s.C, splits, 3}, DType::F32, Device::CUDA);
  auto stats = vec4 ? bn_stats<4> : bn_stats<1>;
  stats<<<dim3(splits, s.C), kThreads, 0, stream()>>>(
      a.x.data<float>(), s.N, s.C, s.HW, splits, partial.data<float>(), channel_counters(), a.momentum, a.eps,
      a.running_mean.data<float>(), a.running_var.data<float>(), a.save_mean.data<float>(),
      a.save_invstd.data<float>());
  CUDA_CHECK_LAUNCH();
  elementwise_pass<ApplyTrain>(vec4, s, a.x.data<float>(), a.y.data<float>(), a.gamma.data<float>(),
                               a.beta.data<float>(), a.save_mean.data<float>(), a.save_invstd.data<float>(), a.eps,
                               a.act.leaky, float(a.act.slope));
}

// The training forward by `want` (Rule: the rule's choice); a path that cannot run here falls
// back to two passes, and everything without 16-byte units to the flat kernels.
BnPath run_forward(BnPath want, const ForwardArgs& a) {
  CAC_CHECK(want != BnPath::SingleLaunch, "batch_norm2d (CUDA): the single launch is a backward path; the "
            "forward's are reread, cluster, two-pass and flat");
  require_f32("batch_norm2d", a.x);
  const Shape4 s = shape_of(a.x);
  if (s.total == 0) return BnPath::Flat;
  const bool vec4 = vec4_ok(s.HW, {a.x.raw(), a.y.raw()});
  const int64_t units = channel_units(s, vec4);
  BnPath path = units == 0 ? BnPath::Flat : want == BnPath::Rule ? forward_rule(s, units) : want;
  if (path == BnPath::Reread && !launch_reread(s, units, a)) path = BnPath::TwoPass;
  if (path == BnPath::Cluster && !launch_cluster(s, units, a)) path = BnPath::TwoPass;
  if (path == BnPath::TwoPass) launch_forward_two_pass(s, units, a);
  if (path == BnPath::Flat) launch_forward_flat(s, vec4, a);
  return path;
}

bool launch_backward_single(const Shape4& s, int64_t units, const BackwardArgs& a) {
  constexpr int kU = kBackwardUnits;
  const BnSlicePlan p = batchnorm_single_plan(units, s.C, resident_blocks(bn_backward_single<kU>), kThreads, kU);
  if (!p.fits) return false;
  Tensor partial = Tensor::empty({s.C, p.splits, 2}, DType::F64, Device::CUDA);
  launch_cooperative(bn_backward_single<kU>, p.splits * p.groups, 0, a.x.data<float>(), a.gy.data<float>(),
                     a.gamma.data<float>(), a.beta.data<float>(), a.mean.data<float>(), a.invstd.data<float>(),
                     a.act.leaky, float(a.act.slope), a.training, s.N, s.C, s.HW / 4, p.splits, p.groups,
                     partial.data<double>(), channel_counters(), a.ggamma.data<float>(), a.gbeta.data<float>(),
                     a.gx ? a.gx->data<float>() : nullptr);
  return true;
}

void launch_backward_two_pass(const Shape4& s, int64_t units, const BackwardArgs& a) {
  constexpr int kU = kTwoPassBackwardUnits;
  const int splits = splits_of(units, kU), blocks = s.C * splits, upr = s.HW / 4;
  const float slope = float(a.act.slope);
  Tensor coef = Tensor::empty({s.C, 2}, DType::F32, Device::CUDA);
  Tensor partial = Tensor::empty({s.C, splits, 2}, DType::F64, Device::CUDA);
  bn_bwd_sums_sliced<kU><<<blocks, kThreads, 0, stream()>>>(
      a.x.data<float>(), a.gy.data<float>(), a.gamma.data<float>(), a.beta.data<float>(), a.mean.data<float>(),
      a.invstd.data<float>(), a.act.leaky, slope, a.training, s.N, s.C, upr, splits, partial.data<double>(),
      channel_counters(), a.ggamma.data<float>(), a.gbeta.data<float>(), coef.data<float>());
  CUDA_CHECK_LAUNCH();
  if (!a.gx) return;
  bn_bwd_dx_sliced<kU><<<blocks, kThreads, 0, stream()>>>(
      a.x.data<float>(), a.gy.data<float>(), a.gamma.data<float>(), a.beta.data<float>(), a.mean.data<float>(),
      a.invstd.data<float>(), coef.data<float>(), a.act.leaky, slope, s.N, s.C, upr, splits, a.gx->data<float>());
  CUDA_CHECK_LAUNCH();
}

void launch_backward_flat(const Shape4& s, bool vec4, const BackwardArgs& a) {
  const int splits = splits_for(s.N, s.C);
  const float slope = float(a.act.slope);
  Tensor coef = Tensor::empty({s.C, 2}, DType::F32, Device::CUDA);
  Tensor partial = Tensor::empty({s.C, splits, 2}, DType::F64, Device::CUDA);
  auto reduce = vec4 ? bn_bwd_reduce<4> : bn_bwd_reduce<1>;
  reduce<<<dim3(splits, s.C), kThreads, 0, stream()>>>(
      a.x.data<float>(), a.gy.data<float>(), a.gamma.data<float>(), a.beta.data<float>(), a.mean.data<float>(),
      a.invstd.data<float>(), a.act.leaky, slope, a.training, s.N, s.C, s.HW, splits, partial.data<double>(),
      channel_counters(), a.ggamma.data<float>(), a.gbeta.data<float>(), coef.data<float>());
  CUDA_CHECK_LAUNCH();
  if (a.gx)
    elementwise_pass<BackwardDx>(vec4, s, a.x.data<float>(), a.gy.data<float>(), a.gamma.data<float>(),
                                 a.beta.data<float>(), a.mean.data<float>(), a.invstd.data<float>(),
                                 coef.data<float>(), a.act.leaky, slope, a.gx->data<float>());
}

// The training backward by `want` (Rule: single launch where it fits, else two passes; flat
// without 16-byte units).
BnPath run_backward(BnPath want, const BackwardArgs& a) {
  CAC_CHECK(want == BnPath::Rule || want == BnPath::SingleLaunch || want == BnPath::TwoPass || want == BnPath::Flat,
            "batch_norm2d_backward (CUDA): {} is a forward path; the backward's are single, two-pass and flat",
            bn_path_name(want));
  require_f32("batch_norm2d_backward", a.x);
  const Shape4 s = shape_of(a.x);
  if (s.total == 0) return BnPath::Flat;
  const bool vec4 = vec4_ok(s.HW, {a.x.raw(), a.gy.raw(), a.gx ? a.gx->raw() : nullptr});
  const int64_t units = channel_units(s, vec4);
  BnPath path = units == 0 ? BnPath::Flat : want == BnPath::Rule ? BnPath::SingleLaunch : want;
  if (path == BnPath::SingleLaunch && !launch_backward_single(s, units, a)) path = BnPath::TwoPass;
  if (path == BnPath::TwoPass) launch_backward_two_pass(s, units, a);
  if (path == BnPath::Flat) launch_backward_flat(s, vec4, a);
  return path;
}
}  // namespace

BnPath batchnorm_forward_train_via(BnPath want, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                                   BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  return run_forward(want, {x, gamma, beta, running_mean, running_var, float(momentum), float(eps), act, y, save_mean,
                            save_invstd});
}

BnPath batchnorm_backward_via(BnPath want, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& mean, const Tensor& invstd, const Tensor& gy, BnActivation act,
                              bool training, Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  return run_backward(want, {x, gamma, beta, mean, invstd, gy, act, training, gx, ggamma, gbeta});
}

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                             BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  run_forward(BnPath::Rule, {x, gamma, beta, running_mean, running_var, float(momentum), float(eps), act, y,
                             save_mean, save_invstd});
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, double eps,
                            BnActivation act, Tensor& y) {
  require_f32("batch_norm2d", x);
  const Shape4 s = shape_of(x);
  if (s.total == 0) return;
  const bool vec4 = vec4_ok(s.HW, {x.raw(), y.raw()});
  elementwise_pass<ApplyEval>(vec4, s, x.data<float>(), y.data<float>(), gamma.data<float>(),
                              beta.data<float>(), running_mean.data<float>(),
                              running_var.data<float>(), float(eps), act.leaky, float(act.slope));
}

void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                        const Tensor& invstd, const Tensor& gy, BnActivation act, bool training,
                        Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  run_backward(BnPath::Rule, {x, gamma, beta, mean, invstd, gy, act, training, gx, ggamma, gbeta});
}

}  // namespace cac::kernels::cuda
