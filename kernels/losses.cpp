// Dispatch point of the losses kernels: device -> CPU twin or CUDA kernel.
#include "kernels/losses.h"

namespace cac::kernels {

void cac_head_forward(const Tensor& z, const Tensor& centres, const Tensor& labels, double lambda, Tensor& d, Tensor& out) {
  CAC_DISPATCH(z.device(), cac_head_forward, z, centres, labels, lambda, d, out);
}
void cac_head_backward(const Tensor& z, const Tensor& centres, const Tensor& d, const Tensor& labels, double lambda, const Tensor& gloss, Tensor* gz, Tensor* gc) {
  CAC_DISPATCH(z.device(), cac_head_backward, z, centres, d, labels, lambda, gloss, gz, gc);
}
void cross_entropy_forward(const Tensor& logits, const Tensor& labels, double eps, Tensor& out) {
  CAC_DISPATCH(logits.device(), cross_entropy_forward, logits, labels, eps, out);
}
void cross_entropy_backward(const Tensor& logits, const Tensor& labels, double eps, const Tensor& gloss, Tensor& glogits) {
  CAC_DISPATCH(logits.device(), cross_entropy_backward, logits, labels, eps, gloss, glogits);
}
void open_set_score_forward(const Tensor& d, Tensor& gamma) {
  CAC_DISPATCH(d.device(), open_set_score_forward, d, gamma);
}
void argmin_rows(const Tensor& x, Tensor& index) {
  CAC_DISPATCH(x.device(), argmin_rows, x, index);
}
void argmax_rows(const Tensor& x, Tensor& index) {
  CAC_DISPATCH(x.device(), argmax_rows, x, index);
}
void count_correct(const Tensor& pred, const Tensor& labels, Tensor& counter) {
  CAC_DISPATCH(pred.device(), count_correct, pred, labels, counter);
}

}  // namespace cac::kernels
