// CPU twins of kernels/elementwise.h.
#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "kernels/cpu/blas.h"
#include "core/bf16.h"
#include "kernels/bf16_copy_math.h"
#include "kernels/elementwise.h"

namespace cac::kernels::cpu {

namespace {
// out[i] = bf16(f(float(a[i]), float(b[i]))) over bf16 tensors.
template <class F>
void bf16_map(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const bf16 *ap = a.data<bf16>(), *bp = b.data<bf16>();
  bf16* o = out.data<bf16>();
  for (int64_t i = 0, n = a.numel(); i < n; ++i) o[i] = bf16(f(float(ap[i]), float(bp[i])));
}
}  // namespace

void leaky_relu_forward(const Tensor& x, double slope, Tensor& y) {
  if (x.dtype() == DType::BF16)
    return bf16_map(x, x, y, [s = float(slope)](float v, float) { return v > 0.f ? v : v * s; });
  dispatch_floating("leaky_relu", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T s = T(slope);
    const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
    // Branch-free form: random signs make the branchy one mispredict and it does not vectorise.
    for (int64_t i = 0; i < n; ++i) yp[i] = std::max(xp[i], T(0)) + s * std::min(xp[i], T(0));
  });
}

void leaky_relu_backward(const Tensor& x, const Tensor& gy, double slope, Tensor& gx) {
  if (x.dtype() == DType::BF16)
    return bf16_map(x, gy, gx, [s = float(slope)](float v, float g) { return v > 0.f ? g : g * s; });
  dispatch_floating("leaky_relu_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.data<T>();
    const T* g = gy.data<T>();
    T* o = gx.data<T>();
    const T s = T(slope);
    const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const T pos = T(xp[i] > T(0));
      o[i] = g[i] * (pos + (T(1) - pos) * s);
    }
  });
}

void add_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  if (a.dtype() == DType::BF16) return bf16_map(a, b, y, [](float u, float v) { return u + v; });
  dispatch_floating("add", a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    T* yp = y.data<T>();
    const int64_t n = a.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) yp[i] = ap[i] + bp[i];
  });
}

void dropout2d_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter, const Tensor* counter_at,
                       Tensor& y, Tensor& mask) {
  if (counter_at) counter += uint64_t(counter_at->data<int64_t>()[0]);
  dispatch_floating("dropout2d", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t planes = x.dim(0) * x.dim(1), hw = x.numel() / std::max<int64_t>(planes, 1);
    const T keep_scale = T(1.0 / (1.0 - p));
    T* m = mask.data<T>();
    for (int64_t i = 0; i < planes; ++i) m[i] = dropout_mask_value(seed, counter, uint64_t(i), float(p), keep_scale);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0; i < planes; ++i)
      for (int64_t j = 0; j < hw; ++j) yp[i * hw + j] = xp[i * hw + j] * m[i];
  });
}

void dropout2d_nhwc_forward(const Tensor& x, double p, uint64_t seed, uint64_t counter, const Tensor* counter_at,
                            Tensor& y, Tensor& mask) {
  if (counter_at) counter += uint64_t(counter_at->data<int64_t>()[0]);
  const int64_t B = x.dim(0), C = x.dim(3);
  const float keep_scale = float(1.0 / (1.0 - p));
  float* m = mask.data<float>();
  for (int64_t i = 0; i < B * C; ++i) m[i] = dropout_mask_value(seed, counter, uint64_t(i), float(p), keep_scale);
  cpu::dropout2d_nhwc_backward(x, mask, y);  // the same pass: y = bf16(x * mask)
}

void dropout2d_nhwc_backward(const Tensor& gy, const Tensor& mask, Tensor& gx) {
  const int64_t B = gy.dim(0), HW = gy.dim(1) * gy.dim(2), C = gy.dim(3);
  const float* m = mask.data<float>();
  const bf16* g = gy.data<bf16>();
  bf16* o = gx.data<bf16>();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t i = 0; i < HW; ++i)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t k = (n * HW + i) * C + c;
        o[k] = bf16(float(g[k]) * m[n * C + c]);
      }
}

void dropout2d_backward(const Tensor& gy, const Tensor& mask, Tensor& gx) {
  dispatch_floating("dropout2d_backward", gy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t planes = mask.numel(), hw = gy.numel() / std::max<int64_t>(planes, 1);
    const T* g = gy.data<T>();
    const T* m = mask.data<T>();
    T* o = gx.data<T>();
    for (int64_t i = 0; i < planes; ++i)
      for (int64_t j = 0; j < hw; ++j) o[i * hw + j] = g[i * hw + j] * m[i];
  });
}

void global_avg_pool_forward(const Tensor& x, Tensor& y) {
  dispatch_floating("global_avg_pool", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    for (int64_t i = 0; i < planes; ++i) {
      Acc<T> s = 0;
      for (int64_t j = 0; j < hw; ++j) s += xp[i * hw + j];
      yp[i] = T(s / Acc<T>(hw));
    }
  });
}

void global_avg_pool_backward(const Tensor& gy, Tensor& gx) {
  dispatch_floating("global_avg_pool_backward", gy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t planes = gx.dim(0) * gx.dim(1), hw = gx.dim(2) * gx.dim(3);
    const T* g = gy.data<T>();
    T* o = gx.data<T>();
    for (int64_t i = 0; i < planes; ++i)
      for (int64_t j = 0; j < hw; ++j) o[i * hw + j] = g[i] / T(hw);
  });
}

void count_up(Tensor& counter) { ++counter.data<int64_t>()[0]; }

namespace {
// Element i of `values` (through float32) into the copy at bf16_copy_index (kernels/bf16_copy_math.h).
template <class T>
void write_copy(const T* values, int64_t n, Bf16Copy& c) {
  bf16* out = c.copy.data<bf16>();
  const int64_t* table = c.transposes.data<int64_t>();
  const int rows = int(c.transposes.dim(0));
  for (int64_t i = 0; i < n; ++i) out[bf16_copy_index(i, table, rows)] = bf16(float(values[i]));
}
}  // namespace

void sgd_step(Tensor& values, const Tensor& grads, Tensor& momentum_buf, const Tensor& lr_at, double momentum,
              double weight_decay, Bf16Copy* copy) {
  const double lr = lr_at.data<double>()[0];
  dispatch_floating("sgd_step", values.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* p = values.data<T>();
    const T* g = grads.data<T>();
    T* buf = momentum_buf.data<T>();
    const T lr_t = T(lr), mom = T(momentum), wd = T(weight_decay);
    const int64_t n = values.numel();
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      T d = g[i] + wd * p[i];
      buf[i] = mom * buf[i] + d;
      p[i] -= lr_t * buf[i];
    }
    if (copy) write_copy(p, n, *copy);
  });
}

void write_bf16_copy(const Tensor& values, Bf16Copy& copy) {
  dispatch_floating("write_bf16_copy", values.dtype(), [&](auto tag) {
    using T = decltype(tag);
    write_copy(values.data<T>(), values.numel(), copy);
  });
}

}  // namespace cac::kernels::cpu
