// CPU twins of kernels/losses.h. Everything goes through the row minimum (or maximum) before exp,
// so distances of 100+ or logits of 1000 neither overflow nor lose the loss to rounding.
#include <cmath>
#include <limits>

#include "kernels/cpu/blas.h"
#include "kernels/distance.h"
#include "kernels/losses.h"

namespace cac::kernels::cpu {

namespace {
// logsumexp(sign * row) for sign = +1 (logits) or -1 (distances), computed stably in double.
template <class T>
double logsumexp(const T* row, int64_t K, double sign) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < K; ++k) m = std::max(m, sign * row[k]);
  double s = 0;
  for (int64_t k = 0; k < K; ++k) s += std::exp(sign * row[k] - m);
  return m + std::log(s);
}

int64_t label_at(const int64_t* y, int64_t b, int64_t K, const char* op) {
  const int64_t l = y[b];
  CAC_CHECK(l >= 0 && l < K, "{}: label {} of sample {} is outside [0, {})", op, l, b, K);
  return l;
}
}  // namespace

void cac_loss_forward(const Tensor& d, const Tensor& labels, double lambda, Tensor& out) {
  dispatch_floating("cac_loss", d.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = d.dim(0), K = d.dim(1);
    const T* dp = d.data<T>();
    const int64_t* y = labels.data<int64_t>();
    double tuplet = 0, anchor = 0;
    for (int64_t b = 0; b < B; ++b) {
      const T* row = dp + b * K;
      const double dy = row[label_at(y, b, K, "cac_loss")];
      tuplet += dy + logsumexp(row, K, -1.0);
      anchor += dy;
    }
    T* o = out.data<T>();
    o[1] = T(tuplet / double(B));
    o[2] = T(anchor / double(B));
    o[0] = T((tuplet + lambda * anchor) / double(B));
  });
}

void cac_loss_backward(const Tensor& d, const Tensor& labels, double lambda, const Tensor& gloss,
                       Tensor& gd) {
  dispatch_floating("cac_loss_backward", d.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = d.dim(0), K = d.dim(1);
    const T* dp = d.data<T>();
    const int64_t* y = labels.data<int64_t>();
    const double scale = double(gloss.data<T>()[0]) / double(B);
    T* o = gd.data<T>();
    for (int64_t b = 0; b < B; ++b) {
      const T* row = dp + b * K;
      const double lse = logsumexp(row, K, -1.0);
      const int64_t l = label_at(y, b, K, "cac_loss_backward");
      for (int64_t k = 0; k < K; ++k) {
        const double softmin = std::exp(-double(row[k]) - lse);
        o[b * K + k] = T(scale * ((k == l ? 1.0 + lambda : 0.0) - softmin));
      }
    }
  });
}

void cac_head_forward(const Tensor& z, const Tensor& centres, const Tensor& labels, double lambda,
                      Tensor& d, Tensor& out) {
  distance_forward(z, centres, d);
  cac_loss_forward(d, labels, lambda, out);
}

void cac_head_backward(const Tensor& z, const Tensor& centres, const Tensor& d, const Tensor& labels,
                       double lambda, const Tensor& gloss, Tensor* gz, Tensor* gc) {
  Tensor gd = Tensor::empty(d.shape(), d.dtype(), d.device());
  cac_loss_backward(d, labels, lambda, gloss, gd);
  distance_backward(z, centres, d, gd, gz, gc);
}

void cross_entropy_forward(const Tensor& logits, const Tensor& labels, double eps, Tensor& out) {
  dispatch_floating("cross_entropy", logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = logits.dim(0), K = logits.dim(1);
    const T* zp = logits.data<T>();
    const int64_t* y = labels.data<int64_t>();
    double s = 0;
    for (int64_t b = 0; b < B; ++b) {
      double row = 0;
      for (int64_t k = 0; k < K; ++k) row += double(zp[b * K + k]);
      s += logsumexp(zp + b * K, K, 1.0) - (1 - eps) * double(zp[b * K + label_at(y, b, K, "cross_entropy")]) -
           eps * row / double(K);
    }
    out.data<T>()[0] = T(s / double(B));
  });
}

void cross_entropy_backward(const Tensor& logits, const Tensor& labels, double eps, const Tensor& gloss,
                            Tensor& glogits) {
  dispatch_floating("cross_entropy_backward", logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = logits.dim(0), K = logits.dim(1);
    const T* zp = logits.data<T>();
    const int64_t* y = labels.data<int64_t>();
    const double scale = double(gloss.data<T>()[0]) / double(B);
    T* o = glogits.data<T>();
    for (int64_t b = 0; b < B; ++b) {
      const double lse = logsumexp(zp + b * K, K, 1.0);
      const int64_t l = label_at(y, b, K, "cross_entropy_backward");
      for (int64_t k = 0; k < K; ++k)
        o[b * K + k] = T(scale * (std::exp(double(zp[b * K + k]) - lse) - (k == l ? 1.0 - eps : 0.0) - eps / double(K)));
    }
  });
}

void open_set_score_forward(const Tensor& d, Tensor& gamma) {
  dispatch_floating("open_set_score", d.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = d.dim(0), K = d.dim(1);
    const T* dp = d.data<T>();
    T* o = gamma.data<T>();
    for (int64_t b = 0; b < B; ++b) {
      const double lse = logsumexp(dp + b * K, K, -1.0);
      for (int64_t k = 0; k < K; ++k) {
        const double s = std::exp(-double(dp[b * K + k]) - lse);
        o[b * K + k] = T(dp[b * K + k] * (1.0 - s));
      }
    }
  });
}

namespace {
template <bool kMin>
void arg_rows(const Tensor& x, Tensor& index, const char* op) {
  dispatch_floating(op, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t B = x.dim(0), K = x.dim(1);
    const T* xp = x.data<T>();
    int64_t* o = index.data<int64_t>();
    for (int64_t b = 0; b < B; ++b) {
      int64_t best = 0;  // first index wins ties (PyTorch's convention); NaN never wins
      for (int64_t k = 1; k < K; ++k)
        if (kMin ? xp[b * K + k] < xp[b * K + best] : xp[b * K + k] > xp[b * K + best]) best = k;
      o[b] = best;
    }
  });
}
}  // namespace

void argmin_rows(const Tensor& x, Tensor& index) { arg_rows<true>(x, index, "argmin"); }
void argmax_rows(const Tensor& x, Tensor& index) { arg_rows<false>(x, index, "argmax"); }

void count_correct(const Tensor& pred, const Tensor& labels, Tensor& counter) {
  const int64_t* p = pred.data<int64_t>();
  const int64_t* y = labels.data<int64_t>();
  int64_t n = 0;
  for (int64_t b = 0; b < pred.numel(); ++b) n += p[b] == y[b];
  *counter.data<int64_t>() += n;
}

}  // namespace cac::kernels::cpu
