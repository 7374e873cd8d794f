#pragma once
// Elementwise, pooling and optimizer kernels. Outputs are preallocated by the caller.
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "kernels/dispatch.h"

namespace cac::kernels {

// leaky_relu_forward/backward and add_forward also take bf16 tensors (issue 25): computed in float32
// from the bf16 values, each result rounded to bf16 once.
CAC_DECLARE_KERNEL(void leaky_relu_forward(const Tensor& x, double slope, Tensor& y))
CAC_DECLARE_KERNEL(void leaky_relu_backward(const Tensor& x, const Tensor& gy, double slope, Tensor& gx))
CAC_DECLARE_KERNEL(void add_forward(const Tensor& a, const Tensor& b, Tensor& y))
// mask: [B, C], each 0 or 1/(1-p); channel (b, c) is dropped when
// uniform_from_bits(hash3(seed, c', b*C + c)) < p, identically on CPU and GPU, where c' = counter,
// plus the i64 scalar *counter_at (on x's device) when given: a counter the device keeps, so a step
// recorded into a CUDA graph draws fresh masks at every replay.
// Dropout's mask value for channel plane `plane` (b * C + c) of the draw (seed, counter): 0 where
// dropped, else keep_scale = 1/(1-p). One expression for the CPU twins and every CUDA kernel.
template <class T>
CAC_HD T dropout_mask_value(uint64_t seed, uint64_t counter, uint64_t plane, float p, T keep_scale) {
  return uniform_from_bits(hash3(seed, counter, plane)) < p ? T(0) : keep_scale;
}
CAC_DECLARE_KERNEL(void dropout2d_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter,
                                          const Tensor* counter_at, Tensor& y, Tensor& mask))
CAC_DECLARE_KERNEL(void dropout2d_backward(const Tensor& gy, const Tensor& mask, Tensor& gx))
// The same on bf16 channels-last activations (issue 25): x, y, gy, gx bf16 [B, H, W, C], mask f32
// [B, C] drawn exactly as above, so a bf16 run drops the channels a float32 run drops; y = bf16(x * m).
CAC_DECLARE_KERNEL(void dropout2d_nhwc_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter,
                                               const Tensor* counter_at, Tensor& y, Tensor& mask))
CAC_DECLARE_KERNEL(void dropout2d_nhwc_backward(const Tensor& gy, const Tensor& mask, Tensor& gx))
CAC_DECLARE_KERNEL(void global_avg_pool_forward(const Tensor& x, Tensor& y))
CAC_DECLARE_KERNEL(void global_avg_pool_backward(const Tensor& gy, Tensor& gx))
// An i64 scalar += 1 where it lives (a device-side counter, e.g. dropout's, advanced in stream order).
CAC_DECLARE_KERNEL(void count_up(Tensor& counter))
// Mixed precision's bf16 weights (issue 25): the float32 slab rounded to nearest-even, element i at
// copy[i] except inside the blocks of `transposes`, i64 [S, 4] rows (offset, outer, rows, cols)
// sorted by offset, not overlapping, each under 2^31 elements: there the [outer, rows, cols]
// elements from `offset` are written as [outer, cols, rows] (a convolution's weight [K, C, R, S] as
// the channels-last [K, R, S, C] that the bf16 convolutions read). Both on the slab's device.
struct Bf16Copy {
  Tensor copy;        // bf16, the slab's length
  Tensor transposes;  // i64 [S, 4]; S may be 0
};
struct TransposedBlock {
  int64_t offset, outer, rows, cols;
};
// An (unwritten) copy for `values` with these blocks, checked here: sorted, apart, inside the slab.
Bf16Copy make_bf16_copy(const Tensor& values, const std::vector<TransposedBlock>& transposes);
// PyTorch's SGD over flat slabs: g = grad + wd*p; buf = momentum*buf + g; p -= lr*buf.
// (PyTorch's first step sets buf = g, which is the same as starting from a zero buffer.)
// lr: an f64 scalar on the slab's device, read by the kernel, so a recorded step follows the schedule.
// With `copy`, each updated value is also written there (Bf16Copy) in the same pass.
CAC_DECLARE_KERNEL(void sgd_step(Tensor& values, const Tensor& grads, Tensor& momentum_buf, const Tensor& lr,
                                 double momentum, double weight_decay, Bf16Copy* copy))
// The same copy of `values` (f32, or f64 through float32) without an update: after weights are
// loaded, and as the conversion a test checks the optimizer's copy against.
CAC_DECLARE_KERNEL(void write_bf16_copy(const Tensor& values, Bf16Copy& copy))

}  // namespace cac::kernels
