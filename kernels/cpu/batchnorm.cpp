// CPU twins of kernels/batchnorm.h. Forward statistics accumulate in double (two passes: mean, then
// centred squares), the reference the GPU's Welford reduction is checked against. Backward sums
// accumulate each (n, c) row (at most H*W terms) in the data type and the rows in double, which
// keeps the loops vectorisable at a relative error of about H*W*eps in the worst case.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "kernels/batchnorm.h"
#include "kernels/cpu/blas.h"

namespace cac::kernels::cpu {

namespace {
struct Layout {
  int64_t N, C, HW;
  explicit Layout(const Tensor& x) : N(x.dim(0)), C(x.dim(1)), HW(x.numel() / (x.dim(0) * x.dim(1))) {}
  int64_t at(int64_t n, int64_t c) const { return (n * C + c) * HW; }
};

// The affine form of BN, y = x * scale + shift, in the data type: forward and backward evaluate it
// with the same expressions so the fused activation's mask is rebuilt exactly.
template <class T>
T affine_scale(T gamma, T invstd) { return gamma * invstd; }
template <class T>
T affine_shift(T beta, T mean, T scale) { return beta - mean * scale; }

// y = act(x * scale + shift) over channel c.
template <class T>
void normalise(const T* x, T* y, const Layout& L, int64_t c, T sc, T sh, BnActivation act) {
  const T slope = T(act.slope);
  for (int64_t n = 0; n < L.N; ++n) {
    const T* in = x + L.at(n, c);
    T* out = y + L.at(n, c);
    if (act.leaky) {
      for (int64_t i = 0; i < L.HW; ++i) {
        const T v = in[i] * sc + sh;
        out[i] = std::max(v, T(0)) + slope * std::min(v, T(0));
      }
    } else {
      for (int64_t i = 0; i < L.HW; ++i) out[i] = in[i] * sc + sh;
    }
  }
}

}  // namespace

void batchnorm_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                             Tensor& running_mean, Tensor& running_var, double momentum, double eps,
                             BnActivation act, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
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
      for (int64_t n = 0; n < L.N; ++n) {
        const T* row = xp + L.at(n, c);
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < L.HW; ++i) sum += double(row[i]);
      }
      const double mean = sum / M;
      double sq = 0;
      for (int64_t n = 0; n < L.N; ++n) {
        const T* row = xp + L.at(n, c);
#pragma omp simd reduction(+ : sq)
        for (int64_t i = 0; i < L.HW; ++i) {
          const double dx = double(row[i]) - mean;
          sq += dx * dx;
        }
      }
      const double var = sq / M;
      const double invstd = 1.0 / std::sqrt(var + eps);
      const double unbiased = M > 1 ? sq / (M - 1) : var;
      rm[c] = T((1 - momentum) * rm[c] + momentum * mean);
      rv[c] = T((1 - momentum) * rv[c] + momentum * unbiased);
      sm[c] = T(mean);
      si[c] = T(invstd);
      normalise(xp, yp, L, c, affine_scale(g[c], si[c]), affine_shift(b[c], sm[c], affine_scale(g[c], si[c])), act);
    }
  });
}

void batchnorm_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            const Tensor& running_mean, const Tensor& running_var, double eps,
                            BnActivation act, Tensor& y) {
  dispatch_floating("batch_norm2d", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Layout L(x);
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const T *g = gamma.data<T>(), *b = beta.data<T>();
    const T *rm = running_mean.data<T>(), *rv = running_var.data<T>();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < L.C; ++c) {
      const T is = T(1.0 / std::sqrt(double(rv[c]) + eps));
      normalise(xp, yp, L, c, affine_scale(g[c], is), affine_shift(b[c], rm[c], affine_scale(g[c], is)), act);
    }
  });
}

namespace {
// Gradient at the BN output for one element: through the fused activation when kLeaky (its mask
// comes from the output's sign), else gy itself. Written as a select so loops stay branch-free.
template <class T, bool kLeaky>
inline T grad_pre(T gy, T x, T scale, T shift, T slope) {
  if constexpr (kLeaky) return x * scale + shift > T(0) ? gy : gy * slope;
  return gy;
}

// Both passes stream through memory in storage order, (n, c) row after row: walking one channel
// across the batch instead touches a new 4 KiB page every row and measured 3x slower.
template <class T, bool kLeaky>
void backward_impl(const T* xp, const T* gyp, const Layout& L, const T* mean, const T* invstd,
                   const T* gamma, const T* beta, T slope, bool training, T* gxp, T* ggamma,
                   T* gbeta) {
  // Pass 1: per-channel sums of g and g*(x - mean); each (n, c) row in T (<= H*W terms), rows in
  // double, one partial array per thread, combined in a fixed order (deterministic).
  std::vector<double> sums(size_t(2 * L.C), 0.0);
#pragma omp parallel
  {
    std::vector<double> local(size_t(2 * L.C), 0.0);
#pragma omp for schedule(static) nowait
    for (int64_t n = 0; n < L.N; ++n)
      for (int64_t c = 0; c < L.C; ++c) {
        const T* __restrict x = xp + L.at(n, c);
        const T* __restrict g = gyp + L.at(n, c);
        const T mu = mean[c];
        const T sc = kLeaky ? affine_scale(gamma[c], invstd[c]) : T(0);
        const T sh = kLeaky ? affine_shift(beta[c], mu, sc) : T(0);
        T row_g = 0, row_gx = 0;
#pragma omp simd reduction(+ : row_g, row_gx)  // lets the FP sums vectorise (reassociation)
        for (int64_t i = 0; i < L.HW; ++i) {
          const T gk = grad_pre<T, kLeaky>(g[i], x[i], sc, sh, slope);
          row_g += gk;
          row_gx += gk * (x[i] - mu);
        }
        local[size_t(2 * c)] += row_g;
        local[size_t(2 * c + 1)] += row_gx;
      }
#pragma omp for ordered schedule(static)
    for (int t = 0; t < omp_get_num_threads(); ++t) {
#pragma omp ordered
      for (size_t k = 0; k < sums.size(); ++k) sums[k] += local[k];
    }
  }
  for (int64_t c = 0; c < L.C; ++c) {
    gbeta[c] = T(sums[size_t(2 * c)]);
    ggamma[c] = T(sums[size_t(2 * c + 1)] * invstd[c]);
  }
  if (!gxp) return;
  // Pass 2: dx = gamma*invstd * (g - mean(g) - xhat * mean(g*xhat)) in training, gamma*invstd*g in eval.
  const double M = double(L.N * L.HW);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < L.N * L.C; ++r) {
    const int64_t c = r % L.C;
    const T* __restrict x = xp + r * L.HW;
    const T* __restrict g = gyp + r * L.HW;
    T* __restrict out = gxp + r * L.HW;
    const T mu = mean[c], is = invstd[c], k1 = gamma[c] * is;
    const T sc = kLeaky ? affine_scale(gamma[c], is) : T(0);
    const T sh = kLeaky ? affine_shift(beta[c], mu, sc) : T(0);
    const T mean_g = training ? T(sums[size_t(2 * c)] / M) : T(0);
    const T mean_gx = training ? T(sums[size_t(2 * c + 1)] * is / M) : T(0);
#pragma omp simd
    for (int64_t i = 0; i < L.HW; ++i)
      out[i] = k1 * (grad_pre<T, kLeaky>(g[i], x[i], sc, sh, slope) - mean_g - (x[i] - mu) * is * mean_gx);
  }
}
}  // namespace

void batchnorm_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                        const Tensor& invstd, const Tensor& gy, BnActivation act, bool training,
                        Tensor* gx, Tensor& ggamma, Tensor& gbeta) {
  dispatch_floating("batch_norm2d_backward", x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Layout L(x);
    T* gxp = gx ? gx->data<T>() : nullptr;
    auto run = [&](auto leaky) {
      backward_impl<T, decltype(leaky)::value>(x.data<T>(), gy.data<T>(), L, mean.data<T>(),
                                               invstd.data<T>(), gamma.data<T>(), beta.data<T>(),
                                               T(act.slope), training, gxp, ggamma.data<T>(),
                                               gbeta.data<T>());
    };
    if (act.leaky) run(std::true_type{});
    else run(std::false_type{});
  });
}

}  // namespace cac::kernels::cpu
