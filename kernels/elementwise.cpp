// Dispatch point of the elementwise kernels: device -> CPU twin or CUDA kernel.
#include "kernels/elementwise.h"

namespace cac::kernels {

void leaky_relu_forward(const Tensor& x, double slope, Tensor& y) {
  CAC_DISPATCH(x.device(), leaky_relu_forward, x, slope, y);
}
void leaky_relu_backward(const Tensor& x, const Tensor& gy, double slope, Tensor& gx) {
  CAC_DISPATCH(x.device(), leaky_relu_backward, x, gy, slope, gx);
}
void add_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  CAC_DISPATCH(a.device(), add_forward, a, b, y);
}
void dropout2d_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter, Tensor& y, Tensor& mask) {
  CAC_DISPATCH(x.device(), dropout2d_forward, x, p, seed, counter, y, mask);
}
void dropout2d_backward(const Tensor& gy, const Tensor& mask, Tensor& gx) {
  CAC_DISPATCH(gy.device(), dropout2d_backward, gy, mask, gx);
}
void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  CAC_DISPATCH(x.device(), global_avg_pool_forward, x, y);
}
void global_avg_pool_backward(const Tensor& gy, Tensor& gx) {
  CAC_DISPATCH(gy.device(), global_avg_pool_backward, gy, gx);
}
void sgd_step(Tensor& values, const Tensor& grads, Tensor& momentum_buf, double lr, double momentum, double weight_decay) {
  CAC_DISPATCH(values.device(), sgd_step, values, grads, momentum_buf, lr, momentum, weight_decay);
}

}  // namespace cac::kernels

namespace cac::kernels {
void no_cuda_kernels(const char* op) {
  fail("{}: this build has no CUDA kernels (configured with CAC_CUDA=OFF or without nvcc); rebuild "
       "with the CUDA toolkit or use the CPU device", op);
}
}  // namespace cac::kernels
