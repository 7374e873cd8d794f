// CPU twins of kernels/distance.h (double accumulation).
#include <cmath>

#include "kernels/cpu/blas.h"
#include "kernels/distance.h"

namespace cac::kernels::cpu {

void distance_forward(const Tensor& z, const Tensor& c, Tensor& d) {
  dispatch_floating("pairwise_distance", z.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = z.dim(0), K = c.dim(0), N = z.dim(1);
    const T *zp = z.data<T>(), *cp = c.data<T>();
    T* dp = d.data<T>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) {
          double diff = double(zp[b * N + n]) - cp[k * N + n];
          s += diff * diff;
        }
        dp[b * K + k] = T(std::sqrt(s));
      }
  });
}

void distance_backward(const Tensor& z, const Tensor& c, const Tensor& d, const Tensor& gd,
                       Tensor* gz, Tensor* gc) {
  dispatch_floating("pairwise_distance_backward", z.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = z.dim(0), K = c.dim(0), N = z.dim(1);
    const T *zp = z.data<T>(), *cp = c.data<T>(), *dp = d.data<T>(), *g = gd.data<T>();
    // w[b,k] = gd/d, 0 where d == 0: the subgradient of ||.|| at 0.
    auto w = [&](int64_t b, int64_t k) {
      const double dist = dp[b * K + k];
      return dist > 0 ? double(g[b * K + k]) / dist : 0.0;
    };
    if (gz) {
      T* o = gz->data<T>();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t n = 0; n < N; ++n) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += w(b, k) * (double(zp[b * N + n]) - cp[k * N + n]);
          o[b * N + n] = T(s);
        }
    }
    if (gc) {
      T* o = gc->data<T>();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) {
          double s = 0;
          for (int64_t b = 0; b < B; ++b) s -= w(b, k) * (double(zp[b * N + n]) - cp[k * N + n]);
          o[k * N + n] = T(s);
        }
    }
  });
}

}  // namespace cac::kernels::cpu
