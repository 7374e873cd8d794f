// CPU twins of the layout changes: index arithmetic and one rounding (to bf16) or none (back).
#include "core/bf16.h"
#include "kernels/layout.h"

namespace cac::kernels::cpu {

void nchw_to_nhwc_bf16(const Tensor& x, Tensor& y) {
  const int64_t N = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
  const float* in = x.data<float>();
  bf16* out = y.data<bf16>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) out[(n * HW + i) * C + c] = bf16(in[(n * C + c) * HW + i]);
}

void nhwc_bf16_to_nchw(const Tensor& x, Tensor& y) {
  const int64_t N = x.dim(0), HW = x.dim(1) * x.dim(2), C = x.dim(3);
  const bf16* in = x.data<bf16>();
  float* out = y.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < HW; ++i)
      for (int64_t c = 0; c < C; ++c) out[(n * C + c) * HW + i] = float(in[(n * HW + i) * C + c]);
}

}  // namespace cac::kernels::cpu
