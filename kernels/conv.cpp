// Dispatch point of the conv kernels: device -> CPU twin or CUDA kernel.
#include "kernels/conv.h"

namespace cac::kernels {

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, ConvGeometry g, Tensor& y) {
  CAC_DISPATCH(x.device(), conv2d_forward, x, w, bias, g, y);
}
void conv2d_backward(const Tensor& x, const Tensor& w, const Tensor& gy, ConvGeometry g, Tensor* gx, Tensor* gw, Tensor* gbias) {
  CAC_DISPATCH(x.device(), conv2d_backward, x, w, gy, g, gx, gw, gbias);
}
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
  CAC_DISPATCH(x.device(), linear_forward, x, w, bias, y);
}
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& gy, Tensor* gx, Tensor* gw, Tensor* gbias) {
  CAC_DISPATCH(x.device(), linear_backward, x, w, gy, gx, gw, gbias);
}

}  // namespace cac::kernels
