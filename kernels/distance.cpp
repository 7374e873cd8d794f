// Dispatch point of the distance kernels: device -> CPU twin or CUDA kernel.
#include "kernels/distance.h"

namespace cac::kernels {

void distance_forward(const Tensor& z, const Tensor& c, Tensor& d) {
  CAC_DISPATCH(z.device(), distance_forward, z, c, d);
}
void distance_backward(const Tensor& z, const Tensor& c, const Tensor& d, const Tensor& gd, Tensor* gz, Tensor* gc) {
  CAC_DISPATCH(z.device(), distance_backward, z, c, d, gd, gz, gc);
}

}  // namespace cac::kernels
