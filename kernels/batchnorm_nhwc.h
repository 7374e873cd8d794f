#pragma once
// Batch norm over channels-last bfloat16 activations (issue 25's mixed precision): x, y, gy, gx are
// bf16 [N, H, W, C] with C contiguous; gamma, beta, the running statistics and the saved mean and
// invstd are f32 [C]. PyTorch's BatchNorm2d semantics, as kernels/batchnorm.h. Everything is
// computed in float32 from the bf16 values (statistics summed in float64 across a channel) and each
// output is rounded to bf16 once, at the end: y = bf16(act(x * scale + shift)) with scale =
// gamma * invstd and shift = beta - mean * scale in float32, the expressions the backward uses to
// rebuild the activation's mask. The CPU twin rounds at the same points. The CUDA kernels take C
// up to 512 (every ResNet-18 and classifier32 layer), 8 values per thread access where C is a multiple
// of 8.
#include "kernels/batchnorm.h"

namespace cac::kernels {

CAC_DECLARE_KERNEL(void batchnorm_nhwc_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                     Tensor& running_mean, Tensor& running_var, double momentum,
                                                     double eps, BnActivation act, Tensor& y, Tensor& save_mean,
                                                     Tensor& save_invstd))
// Eval mode: the running statistics normalise (invstd = 1/sqrt(running_var + eps) in float64,
// rounded to float32), y = bf16(act(x * scale + shift)) as in training.
CAC_DECLARE_KERNEL(void batchnorm_nhwc_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                    const Tensor& running_mean, const Tensor& running_var, double eps,
                                                    BnActivation act, Tensor& y))
// The training backward (batch statistics): gx = bf16(gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)))
// with g = gy through the activation's mask; ggamma = sum(g * xhat), gbeta = sum(g) in f32.
CAC_DECLARE_KERNEL(void batchnorm_nhwc_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                                const Tensor& mean, const Tensor& invstd, const Tensor& gy,
                                                BnActivation act, Tensor& gx, Tensor& ggamma, Tensor& gbeta))

}  // namespace cac::kernels
