// Dispatch point of the batchnorm kernels: device -> CPU twin or CUDA kernel.
#include "kernels/batchnorm.h"

namespace cac::kernels {

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var, double momentum, double eps, BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  CAC_DISPATCH(x.device(), batchnorm_forward_train, x, gamma, beta, running_mean, running_var, momentum, eps, act, y, save_mean, save_invstd);
}
void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean, const Tensor& running_var, double eps, BnActivation act, Tensor& y) {
  CAC_DISPATCH(x.device(), batchnorm_forward_eval, x, gamma, beta, running_mean, running_var, eps, act, y);
}
void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& invstd, const Tensor& gy, BnActivation act, bool training, Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  CAC_DISPATCH(x.device(), batchnorm_backward, x, gamma, beta, mean, invstd, gy, act, training, gx, ggamma, gbeta);
}

namespace {
int g_splits = 0;  // read by the CUDA launches (kernels/cuda/batchnorm.cu)
}
void set_batchnorm_splits(int splits) {
  CAC_CHECK(splits >= 0, "set_batchnorm_splits: {} is negative", splits);
  g_splits = splits;
}
int batchnorm_splits() { return g_splits; }

}  // namespace cac::kernels
