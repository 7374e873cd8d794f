// Dispatch point of the channels-last bf16 batch norm (kernels/batchnorm_nhwc.h), with the shape
// and dtype checks both sides share.
#include "kernels/batchnorm_nhwc.h"

namespace cac::kernels {

namespace {
void check_nhwc(const char* op, const Tensor& x, std::initializer_list<const Tensor*> same,
                std::initializer_list<const Tensor*> per_channel) {
  CAC_CHECK(x.dtype() == DType::BF16 && x.ndim() == 4, "{}: expected a bf16 [N, H, W, C] activation, got {}", op,
            x.str());
  const int64_t C = x.dim(3);
  for (const Tensor* t : same)
    CAC_CHECK(t->dtype() == DType::BF16 && t->shape() == x.shape() && t->device() == x.device(),
              "{}: {} must be bf16 like the input {}", op, t->str(), x.str());
  for (const Tensor* t : per_channel)
    CAC_CHECK(t->dtype() == DType::F32 && t->numel() == C && t->device() == x.device(),
              "{}: {} must be f32 [{}] (one per channel of {})", op, t->str(), C, x.str());
}
}  // namespace

void batchnorm_nhwc_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                  Tensor& running_var, double momentum, double eps, BnActivation act, Tensor& y,
                                  Tensor& save_mean, Tensor& save_invstd) {
  check_nhwc("batchnorm_nhwc_forward_train", x, {&y},
             {&gamma, &beta, &running_mean, &running_var, &save_mean, &save_invstd});
  CAC_CHECK(x.numel() > 0, "batchnorm_nhwc_forward_train: an empty batch {} has no statistics", x.str());
  CAC_DISPATCH(x.device(), batchnorm_nhwc_forward_train, x, gamma, beta, running_mean, running_var, momentum, eps,
               act, y, save_mean, save_invstd);
}

void batchnorm_nhwc_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                                 const Tensor& running_var, double eps, BnActivation act, Tensor& y) {
  check_nhwc("batchnorm_nhwc_forward_eval", x, {&y}, {&gamma, &beta, &running_mean, &running_var});
  CAC_DISPATCH(x.device(), batchnorm_nhwc_forward_eval, x, gamma, beta, running_mean, running_var, eps, act, y);
}

void batchnorm_nhwc_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                             const Tensor& invstd, const Tensor& gy, BnActivation act, Tensor& gx, Tensor& ggamma,
                             Tensor& gbeta) {
  check_nhwc("batchnorm_nhwc_backward", x, {&gy, &gx}, {&gamma, &beta, &mean, &invstd, &ggamma, &gbeta});
  CAC_DISPATCH(x.device(), batchnorm_nhwc_backward, x, gamma, beta, mean, invstd, gy, act, gx, ggamma, gbeta);
}

}  // namespace cac::kernels
