#pragma once
// Differentiable operations. Each function checks its inputs (the message names the op and the
// shapes), computes its result through the dispatched kernel and, right below, records the backward
// that autograd will run, capturing only what that backward needs.
#include <cstdint>

#include "core/autograd.h"
#include "core/tensor.h"

namespace cac::ops {

// x [B, C, H, W], w [O, C, kh, kw], bias [O] or undefined. Or, mixed precision (issue 25): x bf16
// [B, H, W, C], w bf16 [O, kh, kw, C], no bias (kernels/conv.h).
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int pad);
// Mixed precision's layout changes (kernels/layout.h), differentiable: float32 [N, C, H, W] to bf16
// [N, H, W, C] (a weight [O, C, kh, kw] becomes [O, kh, kw, C]), its gradient back in float32; and
// bf16 channels-last to float32 NCHW, its gradient rounded to bf16.
Tensor to_channels_last_bf16(const Tensor& x);
// What to_channels_last_bf16(w) gives for a float32 weight w [K, C, R, S], taken from `copy`, the
// bf16 [K, R, S, C] the optimizer wrote beside the master weights (SGD::keep_bf16_copy): no
// conversion; the gradient comes back to w as to_channels_last_bf16's does.
Tensor channels_last_bf16_copy(const Tensor& w, const Tensor& copy);
Tensor to_nchw_f32(const Tensor& x);
// x [B, in], w [out, in], bias [out] or undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);
// Training mode normalises with batch statistics and updates the running ones in place. A bf16
// channels-last x [N, H, W, C] (float32 parameters and statistics) runs kernels/batchnorm_nhwc.h.
Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, double momentum = 0.1, double eps = 1e-5);
// leaky_relu(batch_norm2d(x)) in one pass each way; slope >= 0 (0 = ReLU).
Tensor batch_norm2d_leaky_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                               Tensor& running_mean, Tensor& running_var, bool training,
                               double slope, double momentum = 0.1, double eps = 1e-5);
Tensor leaky_relu(const Tensor& x, double slope);
Tensor relu(const Tensor& x);
// Drops whole channels with probability p and scales the rest by 1/(1-p); identity when not
// training. The mask is a pure function of (seed, counter, channel index); with counter_at (an i64
// scalar on x's device) the counter is counter + *counter_at, read by the kernel.
Tensor dropout2d(const Tensor& x, double p, bool training, uint64_t seed, uint64_t counter,
                 const Tensor* counter_at = nullptr);
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x);  // [B, ...] -> [B, prod(...)]
Tensor add(const Tensor& a, const Tensor& b);
Tensor global_avg_pool(const Tensor& x);  // [B, C, H, W] -> [B, C]
// z [B, N], centres [K, N] -> Euclidean distances [B, K].
Tensor pairwise_distance(const Tensor& z, const Tensor& centres);

// The CAC training head: distances of z [B, N] to the centres [K, N] and the CAC loss on them
// (mean(tuplet + lambda * anchor), labels i64 [B] in [0, K)) in one op, two GPU launches for
// forward + backward. `distances` is returned for predictions and carries no gradient.
struct CacHead {
  Tensor distances;  // [B, K], values only
  Tensor loss;       // scalar, differentiable w.r.t. z and centres
  Tensor parts;      // [3] = (loss, tuplet, anchor), values only
};
CacHead cac_head(const Tensor& z, const Tensor& centres, const Tensor& labels, double lambda);
// Scalar, mean over the batch; `smoothing` eps: the target is (1 - eps) onehot + eps / K (Szegedy et al.).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double smoothing = 0);
Tensor open_set_score(const Tensor& distances);  // gamma = d * (1 - softmin(d)); values only, no gradient
Tensor argmin(const Tensor& x);                                     // i64 [B], no gradient
Tensor argmax(const Tensor& x);

}  // namespace cac::ops
