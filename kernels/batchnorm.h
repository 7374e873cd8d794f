#pragma once
// BatchNorm2d with PyTorch's semantics: batch statistics with the biased variance for normalising,
// running statistics updated with the unbiased variance and `momentum`; eval uses the running ones.
// Which CUDA kernel runs is the library's choice by shape (kernels/batchnorm_paths.h).
#include "kernels/dispatch.h"

namespace cac::kernels {

// An optional LeakyReLU fused after the normalisation (slope 0 = ReLU). Fusing saves a full pass
// over the activation in each direction; backward recomputes the pre-activation
// x * gamma*invstd + (beta - mean*gamma*invstd) with the forward's expression to get the mask, so
// it reads neither the output nor a saved mask.
struct BnActivation {
  bool leaky = false;
  double slope = 0.0;
};

// save_mean / save_invstd: [C], what backward needs (invstd = 1/sqrt(var_biased + eps)).
CAC_DECLARE_KERNEL(void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                Tensor& running_mean, Tensor& running_var,
                                                double momentum, double eps, BnActivation act, Tensor& y,
                                                Tensor& save_mean, Tensor& save_invstd))
CAC_DECLARE_KERNEL(void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                               const Tensor& running_mean, const Tensor& running_var,
                                               double eps, BnActivation act, Tensor& y))
// training: mean/invstd are the saved batch statistics and the batch-statistics gradient is used;
// otherwise they are the running statistics (constants) and gx = gy * gamma * invstd.
// beta is read only when act.leaky (to rebuild the activation's mask).
CAC_DECLARE_KERNEL(void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                           const Tensor& mean, const Tensor& invstd, const Tensor& gy,
                                           BnActivation act, bool training, Tensor* gx,
                                           Tensor& ggamma, Tensor& gbeta))

}  // namespace cac::kernels
