// Dispatch point of the batchnorm kernels (device -> CPU twin or CUDA kernel), and the host side of
// the CUDA path choice: the rule and the launch geometry (kernels/batchnorm_paths.h).
#include "kernels/batchnorm.h"

#include <algorithm>

#include "kernels/batchnorm_paths.h"

namespace cac::kernels {

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var, double momentum, double eps, BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  CAC_DISPATCH(x.device(), batchnorm_forward_train, x, gamma, beta, running_mean, running_var, momentum, eps, act, y, save_mean, save_invstd);
}
void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var, double eps, BnActivation act, Tensor& y) {
  CAC_DISPATCH(x.device(), batchnorm_forward_eval, x, gamma, beta, running_mean, running_var, eps, act, y);
}
void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& invstd, const Tensor& gy, BnActivation act, bool training, Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  CAC_DISPATCH(x.device(), batchnorm_backward, x, gamma, beta, mean, invstd, gy, act, training, gx, ggamma, gbeta);
}

BnSlicePlan batchnorm_single_plan(int64_t units, int channels, int resident, int threads, int per_thread) {
  BnSlicePlan p;
  p.per_thread = per_thread;
  p.splits = int((units + int64_t(threads) * per_thread - 1) / (int64_t(threads) * per_thread));
  p.fits = p.splits >= 1 && p.splits <= resident;
  p.groups = p.fits ? std::min(channels, resident / p.splits) : 0;
  return p;
}

BnSlicePlan batchnorm_reread_plan(int64_t units, int channels, int resident, int threads) {
  BnSlicePlan p;
  if (units <= 0 || channels <= 0 || resident <= 0) return p;
  const int64_t rows = (units + threads - 1) / threads;  // units per thread of a one-slice channel
  const int64_t want = std::clamp<int64_t>(resident / channels, 1, rows);
  p.per_thread = int((rows + want - 1) / want);
  p.splits = int((rows + p.per_thread - 1) / p.per_thread);
  p.groups = std::min(channels, resident / p.splits);
  p.fits = true;
  return p;
}

BnClusterPlan batchnorm_cluster_plan(int64_t units, int threads, int target, int max_cluster, int max_per_thread,
                                     int held) {
  BnClusterPlan p;
  if (units <= 0 || threads <= 0 || target <= 0 || max_cluster <= 0 || held < 0) return p;
  p.cluster = 1;
  while (p.cluster * 2 <= max_cluster && int64_t(p.cluster) * threads * target < units) p.cluster *= 2;
  const int64_t per_block = int64_t(p.cluster) * threads;
  // The kernel indexes a channel's units with int.
  const int64_t per_thread = (units + per_block - 1) / per_block;
  if (per_thread * per_block >= (int64_t(1) << 31)) return BnClusterPlan{};
  p.per_thread = int(per_thread);
  p.held = held > 0 ? std::min(held, p.per_thread) : p.per_thread;
  p.fits = p.held <= max_per_thread;
  return p;
}

const char* bn_path_name(BnPath p) {
  switch (p) {
    case BnPath::Rule: return "rule";
    case BnPath::Reread: return "reread";
    case BnPath::Cluster: return "cluster";
    case BnPath::SingleLaunch: return "single";
    case BnPath::TwoPass: return "two-pass";
    case BnPath::Flat: return "flat";
  }
  return "?";
}

int bn_launches(BnPath ran, bool needs_dx) {
  if (ran == BnPath::Reread || ran == BnPath::Cluster || ran == BnPath::SingleLaunch) return 1;
  return needs_dx ? 2 : 1;
}

BnPath batchnorm_forward_rule(const BnForwardFacts& f) {
  if (f.units == 0) return BnPath::Flat;
  if (f.cluster_fits && f.activation_bytes <= f.on_chip_bytes) return BnPath::Cluster;
  if (f.reread_fits) return BnPath::Reread;
  return f.cluster_fits ? BnPath::Cluster : BnPath::TwoPass;
}

BnPath batchnorm_forward_train_via(BnPath want, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                                   BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  return CAC_CUDA_ONLY(batchnorm_forward_train_via, want, x, gamma, beta, running_mean, running_var, momentum, eps,
                       act, y, save_mean, save_invstd);
}
BnPath batchnorm_backward_via(BnPath want, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                              const Tensor& mean, const Tensor& invstd, const Tensor& gy, BnActivation act,
                              bool training, Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  return CAC_CUDA_ONLY(batchnorm_backward_via, want, x, gamma, beta, mean, invstd, gy, act, training, gx, ggamma,
                       gbeta);
}

}  // namespace cac::kernels
