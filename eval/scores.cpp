#include "eval/scores.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace cac::eval {

namespace {
void check_logits(const std::vector<float>& z, int K, const char* what) {
  CAC_CHECK(K > 0 && z.size() % size_t(K) == 0, "{}: {} logits are not a whole number of rows of {}", what, z.size(), K);
}
double log_sum_exp(const float* z, int K, double T) {
  double m = -INFINITY;
  for (int k = 0; k < K; ++k) m = std::max(m, double(z[k]) / T);
  double s = 0;
  for (int k = 0; k < K; ++k) s += std::exp(double(z[k]) / T - m);
  return m + std::log(s);
}
}  // namespace

std::vector<double> msp_scores(const std::vector<float>& z, int K) {
  check_logits(z, K, "msp");
  std::vector<double> out;
  for (size_t i = 0; i < z.size(); i += size_t(K)) {
    const double top = *std::max_element(z.data() + i, z.data() + i + K);
    out.push_back(1.0 - std::exp(top - log_sum_exp(z.data() + i, K, 1.0)));
  }
  return out;
}

std::vector<double> mls_scores(const std::vector<float>& z, int K) {
  check_logits(z, K, "mls");
  std::vector<double> out;
  for (size_t i = 0; i < z.size(); i += size_t(K)) out.push_back(-double(*std::max_element(z.data() + i, z.data() + i + K)));
  return out;
}

std::vector<double> energy_scores(const std::vector<float>& z, int K, double T) {
  check_logits(z, K, "energy");
  CAC_CHECK(T > 0, "energy: temperature {} must be > 0", T);
  std::vector<double> out;
  for (size_t i = 0; i < z.size(); i += size_t(K)) out.push_back(-T * log_sum_exp(z.data() + i, K, T));
  return out;
}

namespace {
// Rows of x (n x dim) scaled to unit length (a zero row stays zero).
std::vector<double> normalised_rows(const std::vector<float>& x, int dim) {
  std::vector<double> out(x.begin(), x.end());
  for (size_t i = 0; i < out.size(); i += size_t(dim)) {
    double s = 0;
    for (int j = 0; j < dim; ++j) s += out[i + size_t(j)] * out[i + size_t(j)];
    const double inv = s > 0 ? 1 / std::sqrt(s) : 0;
    for (int j = 0; j < dim; ++j) out[i + size_t(j)] *= inv;
  }
  return out;
}
}  // namespace

KnnScorer::KnnScorer(const std::vector<float>& bank, int dim, int k) : dim_(dim), k_(k) {
  CAC_CHECK(dim > 0 && bank.size() % size_t(dim) == 0, "knn: a bank of {} values is not rows of {}", bank.size(), dim);
  n_ = bank.size() / size_t(dim);
  CAC_CHECK(k >= 1 && size_t(k) <= n_, "knn: k = {} needs 1 to {} (the training images)", k, n_);
  bank_ = normalised_rows(bank, dim);
}

std::vector<double> KnnScorer::score(const std::vector<float>& features) const {
  CAC_CHECK(features.size() % size_t(dim_) == 0, "knn: {} feature values are not rows of {}", features.size(), dim_);
  const std::vector<double> q = normalised_rows(features, dim_);
  std::vector<double> out, dist(n_);
  for (size_t i = 0; i < q.size(); i += size_t(dim_)) {
    for (size_t b = 0; b < n_; ++b) {
      double s = 0;
      for (int j = 0; j < dim_; ++j) {
        const double d = q[i + size_t(j)] - bank_[b * size_t(dim_) + size_t(j)];
        s += d * d;
      }
      dist[b] = s;
    }
    std::nth_element(dist.begin(), dist.begin() + (k_ - 1), dist.end());
    out.push_back(std::sqrt(dist[size_t(k_ - 1)]));
  }
  return out;
}

namespace {
// Lower-triangular L with a = L L^T (a: n x n, symmetric positive definite), or false.
bool cholesky(std::vector<double> a, int n, std::vector<double>& L) {
  L.assign(size_t(n) * n, 0);
  for (int j = 0; j < n; ++j) {
    double d = a[size_t(j) * n + j];
    for (int k = 0; k < j; ++k) d -= L[size_t(j) * n + k] * L[size_t(j) * n + k];
    if (!(d > 0)) return false;
    L[size_t(j) * n + j] = std::sqrt(d);
    for (int i = j + 1; i < n; ++i) {
      double s = a[size_t(i) * n + j];
      for (int k = 0; k < j; ++k) s -= L[size_t(i) * n + k] * L[size_t(j) * n + k];
      L[size_t(i) * n + j] = s / L[size_t(j) * n + j];
    }
  }
  return true;
}
// L^-1 of a lower-triangular L (forward substitution, column by column).
std::vector<double> lower_inverse(const std::vector<double>& L, int n) {
  std::vector<double> inv(size_t(n) * n, 0);
  for (int c = 0; c < n; ++c)
    for (int i = c; i < n; ++i) {
      double s = i == c ? 1.0 : 0.0;
      for (int k = c; k < i; ++k) s -= L[size_t(i) * n + k] * inv[size_t(k) * n + c];
      inv[size_t(i) * n + c] = s / L[size_t(i) * n + i];
    }
  return inv;
}
}  // namespace

MahalanobisScorer::MahalanobisScorer(const std::vector<float>& f, const std::vector<int64_t>& labels, int K, int dim)
    : dim_(dim), classes_(K) {
  CAC_CHECK(dim > 0 && K > 0 && f.size() == labels.size() * size_t(dim),
            "mahalanobis: {} feature values for {} labels of dimension {}", f.size(), labels.size(), dim);
  std::vector<double> mean(size_t(K) * dim, 0);
  std::vector<int64_t> count(size_t(K), 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    CAC_CHECK(labels[i] >= 0 && labels[i] < K, "mahalanobis: label {} outside 0..{}", labels[i], K - 1);
    ++count[size_t(labels[i])];
    for (int j = 0; j < dim; ++j) mean[size_t(labels[i]) * dim + size_t(j)] += f[i * size_t(dim) + size_t(j)];
  }
  for (int c = 0; c < K; ++c) {
    CAC_CHECK(count[size_t(c)] > 0, "mahalanobis: class {} has no training image", c);
    for (int j = 0; j < dim; ++j) mean[size_t(c) * dim + size_t(j)] /= double(count[size_t(c)]);
  }
  std::vector<double> cov(size_t(dim) * dim, 0), d(static_cast<size_t>(dim));
  for (size_t i = 0; i < labels.size(); ++i) {
    for (int j = 0; j < dim; ++j) d[size_t(j)] = f[i * size_t(dim) + size_t(j)] - mean[size_t(labels[i]) * dim + size_t(j)];
    for (int a = 0; a < dim; ++a)
      for (int b = 0; b <= a; ++b) cov[size_t(a) * dim + size_t(b)] += d[size_t(a)] * d[size_t(b)];
  }
  for (int a = 0; a < dim; ++a)
    for (int b = 0; b <= a; ++b) {
      cov[size_t(a) * dim + size_t(b)] /= double(labels.size());
      cov[size_t(b) * dim + size_t(a)] = cov[size_t(a) * dim + size_t(b)];
    }
  fit(mean, std::move(cov));
}

MahalanobisScorer MahalanobisScorer::from_moments(const std::vector<double>& class_means,
                                                  std::vector<double> covariance, int K, int dim) {
  CAC_CHECK(dim > 0 && K > 0 && class_means.size() == size_t(K) * dim && covariance.size() == size_t(dim) * dim,
            "mahalanobis: {} class-mean values and {} covariance values for {} classes of dimension {}",
            class_means.size(), covariance.size(), K, dim);
  MahalanobisScorer m(K, dim);
  m.fit(class_means, std::move(covariance));
  return m;
}

void MahalanobisScorer::fit(const std::vector<double>& mean, std::vector<double> cov) {
  const int dim = dim_, K = classes_;
  double trace = 0;
  for (int a = 0; a < dim; ++a) trace += cov[size_t(a) * dim + size_t(a)];
  // A singular covariance (fewer images than dimensions, or a feature that never varies) gets the
  // smallest ridge of 1e-6, 1e-5, ... times the mean variance with which it factors.
  std::vector<double> L;
  const double unit = std::max(trace / dim, 1e-12);
  double added = 0;
  for (double ridge = 1e-6; !cholesky(cov, dim, L); ridge *= 10) {
    CAC_CHECK(ridge <= 1, "mahalanobis: the training features' covariance cannot be inverted");
    for (int a = 0; a < dim; ++a) cov[size_t(a) * dim + size_t(a)] += ridge * unit - added;
    added = ridge * unit;
  }
  whiten_ = lower_inverse(L, dim);
  means_.assign(size_t(K) * dim, 0);
  for (int c = 0; c < K; ++c)
    for (int a = 0; a < dim; ++a)
      for (int b = 0; b <= a; ++b)
        means_[size_t(c) * dim + size_t(a)] += whiten_[size_t(a) * dim + size_t(b)] * mean[size_t(c) * dim + size_t(b)];
}

std::vector<double> MahalanobisScorer::score(const std::vector<float>& f) const {
  CAC_CHECK(f.size() % size_t(dim_) == 0, "mahalanobis: {} feature values are not rows of {}", f.size(), dim_);
  std::vector<double> out, g(static_cast<size_t>(dim_));
  for (size_t i = 0; i < f.size(); i += size_t(dim_)) {
    for (int a = 0; a < dim_; ++a) {
      double s = 0;
      for (int b = 0; b <= a; ++b) s += whiten_[size_t(a) * dim_ + size_t(b)] * f[i + size_t(b)];
      g[size_t(a)] = s;
    }
    double best = INFINITY;
    for (int c = 0; c < classes_; ++c) {
      double s = 0;
      for (int a = 0; a < dim_; ++a) {
        const double e = g[size_t(a)] - means_[size_t(c) * dim_ + size_t(a)];
        s += e * e;
      }
      best = std::min(best, s);
    }
    out.push_back(best);
  }
  return out;
}

double expected_calibration_error(const std::vector<double>& confidence, const std::vector<bool>& correct, int bins) {
  CAC_CHECK(confidence.size() == correct.size() && !confidence.empty() && bins > 0,
            "ece: {} confidences for {} outcomes in {} bins", confidence.size(), correct.size(), bins);
  std::vector<double> conf(size_t(bins), 0), right(size_t(bins), 0), n(size_t(bins), 0);
  for (size_t i = 0; i < confidence.size(); ++i) {
    const double c = std::clamp(confidence[i], 0.0, 1.0);
    int b = std::clamp(int(std::ceil(c * bins)) - 1, 0, bins - 1);  // (lo, hi]; 0 in the first
    if (b > 0 && c <= double(b) / bins) --b;  // c * bins rounded up past an edge (0.6 * 5)
    conf[size_t(b)] += c;
    right[size_t(b)] += correct[i] ? 1 : 0;
    n[size_t(b)] += 1;
  }
  double ece = 0;
  for (int b = 0; b < bins; ++b)
    if (n[size_t(b)] > 0) ece += std::abs(right[size_t(b)] - conf[size_t(b)]) / double(confidence.size());
  return ece;
}

}  // namespace cac::eval
