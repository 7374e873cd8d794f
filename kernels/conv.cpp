// Dispatch point of the conv kernels: device -> CPU twin or CUDA kernel.
#include "kernels/conv.h"

namespace cac::kernels {

namespace {
// bf16 convolutions are channels-last throughout and have no bias.
void check_bf16_conv(const char* op, const Tensor& x, const Tensor& w, const Tensor* bias,
                     std::initializer_list<const Tensor*> others) {
  if (x.dtype() != DType::BF16) return;
  CAC_CHECK(x.ndim() == 4 && w.ndim() == 4 && w.dtype() == DType::BF16 && w.dim(3) == x.dim(3),
            "{}: a bf16 convolution takes x [N, H, W, C] and w [O, KH, KW, C], both bf16; got {} and {}", op, x.str(),
            w.str());
  CAC_CHECK(!bias || !bias->defined(), "{}: bf16 convolutions have no bias", op);
  for (const Tensor* t : others)
    CAC_CHECK(!t || t->dtype() == DType::BF16, "{}: {} must be bf16 like the input {}", op, t ? t->str() : "", x.str());
}
}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, ConvGeometry g, Tensor& y) {
  check_bf16_conv("conv2d", x, w, &bias, {&y});
  CAC_DISPATCH(x.device(), conv2d_forward, x, w, bias, g, y);
}
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, ConvGeometry g, Tensor* gx, Tensor* gw, Tensor* gbias) {
  check_bf16_conv("conv2d_backward", x, w, gbias, {&gy, gx, gw});
  CAC_DISPATCH(x.device(), conv2d_backward, x, w, gy, g, gx, gw, gbias);
}
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  CAC_DISPATCH(x.device(), linear_forward, x, w, bias, y);
}
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& gy, Tensor* gx, Tensor* gw, Tensor* gbias) {
  CAC_DISPATCH(x.device(), linear_backward, x, w, gy, gx, gw, gbias);
}

}  // namespace cac::kernels
