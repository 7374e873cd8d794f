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
void dropout2d_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter, const Tensor* counter_at,
                       Tensor& y, Tensor& mask) {
  if (counter_at)
    CAC_CHECK(counter_at->dtype() == DType::I64 && counter_at->numel() == 1 && counter_at->device() == x.device(),
              "dropout2d: the counter must be an i64 scalar on the input's device, got {}", counter_at->str());
  CAC_DISPATCH(x.device(), dropout2d_forward, x, p, seed, counter, counter_at, y, mask);
}
void dropout2d_nhwc_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter, const Tensor* counter_at,
                            Tensor& y, Tensor& mask) {
  CAC_CHECK(x.dtype() == DType::BF16 && x.ndim() == 4 && y.dtype() == DType::BF16 && y.shape() == x.shape() &&
                mask.dtype() == DType::F32 && mask.shape() == Shape({x.dim(0), x.dim(3)}),
            "dropout2d_nhwc: expected bf16 [B, H, W, C] in and out and an f32 [B, C] mask, got {}, {}, {}", x.str(),
            y.str(), mask.str());
  if (counter_at)
    CAC_CHECK(counter_at->dtype() == DType::I64 && counter_at->numel() == 1 && counter_at->device() == x.device(),
              "dropout2d: the counter must be an i64 scalar on the input's device, got {}", counter_at->str());
  CAC_DISPATCH(x.device(), dropout2d_nhwc_forward, x, p, seed, counter, counter_at, y, mask);
}
void dropout2d_nhwc_backward(const Tensor& gy, const Tensor& mask, Tensor& gx) {
  CAC_DISPATCH(gy.device(), dropout2d_nhwc_backward, gy, mask, gx);
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
void count_up(Tensor& counter) {
  CAC_CHECK(counter.dtype() == DType::I64 && counter.numel() == 1, "count_up: expected an i64 scalar, got {}",
            counter.str());
  CAC_DISPATCH(counter.device(), count_up, counter);
}
namespace {
void check_copy(const char* op, const Tensor& values, const Bf16Copy& c) {
  CAC_CHECK(c.copy.dtype() == DType::BF16 && c.copy.numel() == values.numel() && c.copy.device() == values.device(),
            "{}: the bf16 copy must be bf16 of the slab's length and device, got {} for {}", op, c.copy.str(),
            values.str());
  CAC_CHECK(c.transposes.dtype() == DType::I64 && c.transposes.ndim() == 2 && c.transposes.dim(1) == 4 &&
                c.transposes.device() == values.device(),
            "{}: the transposes table must be i64 [S, 4] on the slab's device, got {}", op, c.transposes.str());
}
}  // namespace

Bf16Copy make_bf16_copy(const Tensor& values, const std::vector<TransposedBlock>& transposes) {
  std::vector<int64_t> table;
  int64_t end = 0;
  for (const TransposedBlock& t : transposes) {
    const int64_t size = t.outer * t.rows * t.cols;
    CAC_CHECK(t.offset >= end && t.outer > 0 && t.rows > 0 && t.cols > 0 && size < (int64_t(1) << 31) &&
                  t.offset + size <= values.numel(),
              "bf16 copy: transposed block at {} of [{}, {}, {}] overlaps the one before (ending at {}), is empty, "
              "has 2^31 elements or more, or leaves the slab of {}",
              t.offset, t.outer, t.rows, t.cols, end, values.numel());
    end = t.offset + size;
    table.insert(table.end(), {t.offset, t.outer, t.rows, t.cols});
  }
  Bf16Copy c;
  c.copy = Tensor::empty({values.numel()}, DType::BF16, values.device());
  c.transposes = Tensor::from_vector(table, {int64_t(transposes.size()), 4}).to(values.device());
  return c;
}

void sgd_step(Tensor& values, const Tensor& grads, Tensor& momentum_buf, const Tensor& lr, double momentum,
              double weight_decay, Bf16Copy* copy) {
  CAC_CHECK(lr.dtype() == DType::F64 && lr.numel() == 1 && lr.device() == values.device(),
            "sgd_step: the learning rate must be an f64 scalar on the parameters' device, got {}", lr.str());
  if (copy) check_copy("sgd_step", values, *copy);
  CAC_DISPATCH(values.device(), sgd_step, values, grads, momentum_buf, lr, momentum, weight_decay, copy);
}
void write_bf16_copy(const Tensor& values, Bf16Copy& copy) {
  check_copy("write_bf16_copy", values, copy);
  CAC_DISPATCH(values.device(), write_bf16_copy, values, copy);
}

}  // namespace cac::kernels

namespace cac::kernels {
void no_cuda_kernels(const char* op) {
  fail("{}: this build has no CUDA kernels (configured with CAC_CUDA=OFF or without nvcc); rebuild "
       "with the CUDA toolkit or use the CPU device", op);
}
}  // namespace cac::kernels
