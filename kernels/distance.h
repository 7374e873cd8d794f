#pragma once
// Pairwise Euclidean distance between a batch z [B, N] and centres c [K, N]: d [B, K].
#include "kernels/dispatch.h"

namespace cac::kernels {

CAC_DECLARE_KERNEL(void distance_forward(const Tensor& z, const Tensor& c, Tensor& d))
// dd/dz = (z - c)/d, taken as 0 where d == 0 (a subgradient) so gradients stay finite.
CAC_DECLARE_KERNEL(void distance_backward(const Tensor& z, const Tensor& c, const Tensor& d,
                                          const Tensor& gd, Tensor* gz, Tensor* gc))

}  // namespace cac::kernels
