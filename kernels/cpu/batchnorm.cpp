// CPU twins of kernels/batchnorm.h. Per-channel statistics accumulate in double (two passes:
// mean, then centred squares), which is the reference the GPU's Welford reduction is checked against.
#include <cmath>

#include "kernels/batchnorm.h"
#include "kernels/cpu/blas.h"

namespace cac::kernels::cpu {

namespace {
struct Layout {
  int64_t N, C, HW;
  explicit Layout(const Tensor& x) : N(x.dim(0)), C(x.dim(1)), HW(x.numel() / (x.dim(0) * x.dim(1))) {}
  int64_t at(int64_t n, int64_t c) const { return (n * C + c) * HW; }
};
}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                             Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  dispatch_floating("batch_norm2d", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Layout L(x);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T *g = gamma.data<T>(), *b = beta.data<T>();
    T *rm = running_mean.data<T>(), *rv = running_var.data<T>();
    T *sm = save_mean.data<T>(), *si = save_invstd.data<T>();
    const double M = double(L.N * L.HW);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < L.C; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < L.N; ++n)
        for (int64_t i = 0; i < L.HW; ++i) sum += xp[L.at(n, c) + i];
      const double mean = sum / M;
      double sq = 0;
      for (int64_t n = 0; n < L.N; ++n)
        for (int64_t i = 0; i < L.HW; ++i) {
          double dx = xp[L.at(n, c) + i] - mean;
          sq += dx * dx;
        }
      const double var = sq / M;
      const double invstd = 1.0 / std::sqrt(var + eps);
      const double unbiased = M > 1 ? sq / (M - 1) : var;
      rm[c] = T((1 - momentum) * rm[c] + momentum * mean);
      rv[c] = T((1 - momentum) * rv[c] + momentum * unbiased);
      sm[c] = T(mean);
      si[c] = T(invstd);
      const double scale = g[c] * invstd, shift = b[c] - mean * scale;
      for (int64_t n = 0; n < L.N; ++n)
        for (int64_t i = 0; i < L.HW; ++i) yp[L.at(n, c) + i] = T(xp[L.at(n, c) + i] * scale + shift);
    }
  });
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, double eps,
                            Tensor& y) {
  dispatch_floating("batch_norm2d", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Layout L(x);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T *g = gamma.data<T>(), *b = beta.data<T>();
    const T *rm = running_mean.data<T>(), *rv = running_var.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < L.C; ++c) {
      const double scale = g[c] / std::sqrt(double(rv[c]) + eps), shift = b[c] - rm[c] * scale;
      for (int64_t n = 0; n < L.N; ++n)
        for (int64_t i = 0; i < L.HW; ++i) yp[L.at(n, c) + i] = T(xp[L.at(n, c) + i] * scale + shift);
    }
  });
}

void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean,
                        const Tensor& invstd, const Tensor& gy, bool training, Tensor* gx,
                        Tensor& ggamma, Tensor& gbeta) {
  dispatch_floating("batch_norm2d_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Layout L(x);
    const T *xp = x.data<T>(), *gyp = gy.data<T>(), *g = gamma.data<T>();
    const T *mp = mean.data<T>(), *ip = invstd.data<T>();
    T *gg = ggamma.data<T>(), *gb = gbeta.data<T>();
    T* gxp = gx ? gx->data<T>() : nullptr;
    const double M = double(L.N * L.HW);
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < L.C; ++c) {
      const double mu = mp[c], is = ip[c];
      double sum_gy = 0, sum_gy_xhat = 0;
      for (int64_t n = 0; n < L.N; ++n)
        for (int64_t i = 0; i < L.HW; ++i) {
          const int64_t k = L.at(n, c) + i;
          sum_gy += gyp[k];
          sum_gy_xhat += gyp[k] * (xp[k] - mu) * is;
        }
      gb[c] = T(sum_gy);
      gg[c] = T(sum_gy_xhat);
      if (!gxp) continue;
      const double k1 = g[c] * is;
      for (int64_t n = 0; n < L.N; ++n)
        for (int64_t i = 0; i < L.HW; ++i) {
          const int64_t k = L.at(n, c) + i;
          if (training) {
            // dx = gamma*invstd/M * (M*gy - sum(gy) - xhat*sum(gy*xhat))
            const double xhat = (xp[k] - mu) * is;
            gxp[k] = T(k1 * (gyp[k] - sum_gy / M - xhat * sum_gy_xhat / M));
          } else {
            gxp[k] = T(k1 * gyp[k]);
          }
        }
    }
  });
}

}  // namespace cac::kernels::cpu
