// Dispatch point of the layout changes (kernels/layout.h), with the shape checks both sides share.
#include "kernels/layout.h"

namespace cac::kernels {

void nchw_to_nhwc_bf16(const Tensor& x, Tensor& y) {
  CAC_CHECK(x.dtype() == DType::F32 && x.ndim() == 4 && y.dtype() == DType::BF16 && y.device() == x.device() &&
                y.shape() == Shape({x.dim(0), x.dim(2), x.dim(3), x.dim(1)}),
            "nchw_to_nhwc_bf16: {} into {}: expected f32 [N, C, H, W] into bf16 [N, H, W, C]", x.str(), y.str());
  CAC_DISPATCH(x.device(), nchw_to_nhwc_bf16, x, y);
}
void nhwc_bf16_to_nchw(const Tensor& x, Tensor& y) {
  CAC_CHECK(x.dtype() == DType::BF16 && x.ndim() == 4 && y.dtype() == DType::F32 && y.device() == x.device() &&
                y.shape() == Shape({x.dim(0), x.dim(3), x.dim(1), x.dim(2)}),
            "nhwc_bf16_to_nchw: {} into {}: expected bf16 [N, H, W, C] into f32 [N, C, H, W]", x.str(), y.str());
  CAC_DISPATCH(x.device(), nhwc_bf16_to_nchw, x, y);
}

}  // namespace cac::kernels
