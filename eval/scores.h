#pragma once
// Post-hoc open-set scores of a trained network (issue 24): each maps an image's logits or
// penultimate features to a number that is higher for "more likely unknown" (eval/metrics.h's
// convention), so every metric and threshold applies to any of them unchanged.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cac::eval {

// msp: 1 - the maximum softmax probability (Hendrycks & Gimpel 2017).
std::vector<double> msp_scores(const std::vector<float>& logits, int K);
// mls: minus the maximum logit (Vaze et al. 2022).
std::vector<double> mls_scores(const std::vector<float>& logits, int K);
// energy: -T logsumexp(z / T) (Liu et al. 2020), T = 1 by default.
std::vector<double> energy_scores(const std::vector<float>& logits, int K, double T = 1);

// k-NN (Sun et al. 2022): the Euclidean distance of an image's L2-normalised feature to the k-th
// nearest of the L2-normalised training features (the bank), k = 50 in the paper.
class KnnScorer {
 public:
  // bank: n x dim, row-major (normalised here); k must be 1..n.
  KnnScorer(const std::vector<float>& bank, int dim, int k);
  std::vector<double> score(const std::vector<float>& features) const;  // m x dim
  int k() const { return k_; }

 private:
  std::vector<double> bank_;  // normalised rows
  int dim_, k_;
  size_t n_;
};

// Mahalanobis (Lee et al. 2018): per-class means of the training features and one covariance shared
// by the classes (the mean of each feature's outer product about its class mean); the score is the
// smallest squared Mahalanobis distance to a class mean. A covariance of lower rank than dim gets
// the smallest ridge of 1e-6, 1e-5, ... times its mean variance that makes it factor.
class MahalanobisScorer {
 public:
  MahalanobisScorer(const std::vector<float>& features, const std::vector<int64_t>& labels, int num_classes, int dim);
  // From the class means (num_classes x dim) and the shared covariance (dim x dim) computed elsewhere
  // (cac_eval's GEMM pass over the training features).
  static MahalanobisScorer from_moments(const std::vector<double>& class_means, std::vector<double> covariance,
                                        int num_classes, int dim);
  std::vector<double> score(const std::vector<float>& features) const;
  // The score as ||W f - W mu_c||^2: W (dim x dim, lower triangular) and the rows W mu_c, for a
  // scorer that applies them with a matrix product.
  const std::vector<double>& whitening() const { return whiten_; }
  const std::vector<double>& whitened_means() const { return means_; }

 private:
  MahalanobisScorer(int num_classes, int dim) : dim_(dim), classes_(num_classes) {}
  void fit(const std::vector<double>& class_means, std::vector<double> covariance);
  int dim_, classes_;
  std::vector<double> whiten_;  // L^-1 where covariance = L L^T (dim x dim, lower triangular)
  std::vector<double> means_;   // whitened class means, classes x dim
};

// Expected calibration error over `bins` equal-width confidence bins (Guo et al. 2017; 15 bins):
// sum over bins of |accuracy - mean confidence| weighted by the bin's share of the images. A
// confidence of exactly 0 falls in the first bin; bins are (lo, hi] otherwise.
double expected_calibration_error(const std::vector<double>& confidence, const std::vector<bool>& correct, int bins = 15);

}  // namespace cac::eval
