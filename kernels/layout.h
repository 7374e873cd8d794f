#pragma once
// Layout and precision changes at the edges of issue 25's mixed-precision convolution stack: float32
// NCHW tensors (the network's input, PyTorch-layout weights [K, C, R, S]) to bf16 channels-last
// ([N, H, W, C], weights [K, R, S, C]) rounded to nearest-even, and back to float32 NCHW exactly
// (the features entering the float32 head, weight gradients entering the float32 slab).
#include "kernels/dispatch.h"

namespace cac::kernels {

// x f32 [N, C, H, W] -> y bf16 [N, H, W, C].
CAC_DECLARE_KERNEL(void nchw_to_nhwc_bf16(const Tensor& x, Tensor& y))
// x bf16 [N, H, W, C] -> y f32 [N, C, H, W].
CAC_DECLARE_KERNEL(void nhwc_bf16_to_nchw(const Tensor& x, Tensor& y))

}  // namespace cac::kernels
