#pragma once
// The CAC loss, cross-entropy and the open-set score. Loss values stay on the tensor's device
// (a [3] or [1] tensor) so a training step needs no host synchronisation to produce them.
#include "kernels/dispatch.h"

namespace cac::kernels {

// The CAC loss on distances d [B, K] (CPU only: the reference the fused head's CPU twin composes;
// on the GPU the loss exists only fused into the head):
// out[0] = mean_b(tuplet_b + lambda*anchor_b), out[1] = mean tuplet, out[2] = mean anchor, with
// tuplet_b = log(1 + sum_{j != y} exp(d_y - d_j)) = d_y + logsumexp_j(-d_j) and anchor_b = d_y.
namespace cpu {
void cac_loss_forward(const Tensor& d, const Tensor& labels, double lambda, Tensor& out);
// gd = gloss/B * ((1 + lambda) * onehot(y) - softmax(-d)); gloss is a 1-element tensor.
void cac_loss_backward(const Tensor& d, const Tensor& labels, double lambda, const Tensor& gloss, Tensor& gd);
}  // namespace cpu
// The training head fused: distances d = ||z - c|| and the CAC loss parts in one launch on the GPU,
// and in backward the gradients to z and c straight from the loss (one launch), so a step spends
// two launches on distance + loss instead of four. The CPU twin composes the distance twins and
// the CAC loss above.
CAC_DECLARE_KERNEL(void cac_head_forward(const Tensor& z, const Tensor& centres, const Tensor& labels,
                                         double lambda, Tensor& d, Tensor& out))
CAC_DECLARE_KERNEL(void cac_head_backward(const Tensor& z, const Tensor& centres, const Tensor& d,
                                          const Tensor& labels, double lambda, const Tensor& gloss,
                                          Tensor* gz, Tensor* gc))
// out[0] = mean_b(logsumexp(z_b) - (1 - eps) z_b,y - eps mean_k z_b,k): cross-entropy against the
// target (1 - eps) onehot(y) + eps / K (label smoothing, as PyTorch's label_smoothing; eps = 0: plain).
// Backward: glogits = gloss / B * (softmax(z) - (1 - eps) onehot(y) - eps / K).
CAC_DECLARE_KERNEL(void cross_entropy_forward(const Tensor& logits, const Tensor& labels, double eps, Tensor& out))
CAC_DECLARE_KERNEL(void cross_entropy_backward(const Tensor& logits, const Tensor& labels, double eps,
                                               const Tensor& gloss, Tensor& glogits))
// gamma = d * (1 - softmin(d)) per row: a score, values only (nothing trains through it).
CAC_DECLARE_KERNEL(void open_set_score_forward(const Tensor& d, Tensor& gamma))
// Row-wise argmin/argmax as i64 [B].
CAC_DECLARE_KERNEL(void argmin_rows(const Tensor& x, Tensor& index))
CAC_DECLARE_KERNEL(void argmax_rows(const Tensor& x, Tensor& index))
// counter (i64 scalar, on the same device) += number of b with pred[b] == labels[b]; lets a whole
// epoch count accuracy on the device and read it once.
CAC_DECLARE_KERNEL(void count_correct(const Tensor& pred, const Tensor& labels, Tensor& counter))

}  // namespace cac::kernels
