#pragma once
// 2-D convolution (NCHW, OIHW weights, square stride/padding) and the linear layer.
// The convolutions also take bf16 channels-last tensors (issue 25's mixed precision): x [N, H, W, C],
// w [O, KH, KW, C], y [N, HO, WO, O], all bf16, no bias; each output is the float32 result
// (float32 accumulation, as cuDNN's bf16 convolutions with float compute) rounded to bf16 once.
#include "kernels/dispatch.h"

namespace cac::kernels {

struct ConvGeometry {
  int stride = 1, pad = 0;
};

// bias may be undefined.
CAC_DECLARE_KERNEL(void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias,
                                       ConvGeometry g, Tensor& y))
// Any of gx/gw/gbias may be null (not needed). gw and gbias are overwritten, not accumulated.
CAC_DECLARE_KERNEL(void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy,
                                        ConvGeometry g, Tensor* gx, Tensor* gw, Tensor* gbias))
// y = x w^T + b with x [B, in], w [out, in], b [out] (may be undefined).
CAC_DECLARE_KERNEL(void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y))
CAC_DECLARE_KERNEL(void linear_backward(const Tensor& x, const Tensor& w, const Tensor& gy, Tensor* gx,
                                        Tensor* gw, Tensor* gbias))

}  // namespace cac::kernels
