#include "eval/metrics.h"

#include <algorithm>
#include <map>
#include <cmath>

#include "core/error.h"

namespace cac::eval {

namespace {
void check(const std::vector<double>& known, const std::vector<double>& unknown, const char* what) {
  CAC_CHECK(!known.empty() && !unknown.empty(), "{}: needs known and unknown scores (got {} and {})", what,
            known.size(), unknown.size());
  for (double v : known) CAC_CHECK(!std::isnan(v), "{}: NaN score among the knowns", what);
  for (double v : unknown) CAC_CHECK(!std::isnan(v), "{}: NaN score among the unknowns", what);
}

// Average precision of `pos` against `neg`, ranking by descending score.
double average_precision(const std::vector<double>& pos, const std::vector<double>& neg) {
  std::vector<std::pair<double, bool>> all;
  for (double v : pos) all.push_back({v, true});
  for (double v : neg) all.push_back({v, false});
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first; });
  double ap = 0, tp = 0, fp = 0, prev_recall = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;  // one threshold per distinct score: ties enter together
    for (; j < all.size() && all[j].first == all[i].first; ++j) (all[j].second ? tp : fp) += 1;
    const double recall = tp / double(pos.size()), precision = tp / (tp + fp);
    ap += (recall - prev_recall) * precision;
    prev_recall = recall;
    i = j;
  }
  return ap;
}
}  // namespace

double auroc(const std::vector<double>& known, const std::vector<double>& unknown) {
  check(known, unknown, "auroc");
  std::vector<std::pair<double, bool>> all;
  for (double v : known) all.push_back({v, false});
  for (double v : unknown) all.push_back({v, true});
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first < b.first; });
  double rank_sum = 0;  // of the unknowns, with tied scores sharing their average rank
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double avg_rank = (double(i + 1) + double(j)) / 2.0;
    for (size_t k = i; k < j; ++k)
      if (all[k].second) rank_sum += avg_rank;
    i = j;
  }
  const double nu = double(unknown.size()), nk = double(known.size());
  return (rank_sum - nu * (nu + 1) / 2) / (nu * nk);
}

double aupr_out(const std::vector<double>& known, const std::vector<double>& unknown) {
  check(known, unknown, "aupr_out");
  return average_precision(unknown, known);
}

double aupr_in(const std::vector<double>& known, const std::vector<double>& unknown) {
  check(known, unknown, "aupr_in");
  std::vector<double> k, u;
  for (double v : known) k.push_back(-v);
  for (double v : unknown) u.push_back(-v);
  return average_precision(k, u);
}

double accept_threshold(std::vector<double> known, double fraction) {
  CAC_CHECK(!known.empty(), "accept_threshold: no known scores");
  std::sort(known.begin(), known.end());
  const size_t need = size_t(std::ceil(fraction * double(known.size())));
  return known[std::min(std::max<size_t>(need, 1), known.size()) - 1];
}

double fpr_at_95_tpr(const std::vector<double>& known, const std::vector<double>& unknown) {
  check(known, unknown, "fpr_at_95_tpr");
  const double t = accept_threshold(known, 0.95);  // smallest threshold accepting >= 95%
  size_t accepted = 0;
  for (double v : unknown) accepted += v <= t;
  return double(accepted) / double(unknown.size());
}

std::vector<OscrPoint> oscr_curve(const std::vector<double>& known, const std::vector<bool>& correct,
                                  const std::vector<double>& unknown) {
  check(known, unknown, "oscr");
  CAC_CHECK(correct.size() == known.size(), "oscr: {} correctness flags for {} knowns", correct.size(), known.size());
  std::vector<std::pair<double, int>> all;  // kind: 0 known wrong, 1 known correct, 2 unknown
  for (size_t i = 0; i < known.size(); ++i) all.push_back({known[i], correct[i] ? 1 : 0});
  for (double v : unknown) all.push_back({v, 2});
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<OscrPoint> curve{{0.0, 0.0}};
  double cc = 0, fp = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    for (; j < all.size() && all[j].first == all[i].first; ++j) {
      if (all[j].second == 1) cc += 1;
      if (all[j].second == 2) fp += 1;
    }
    curve.push_back({fp / double(unknown.size()), cc / double(known.size())});
    i = j;
  }
  return curve;
}

double oscr_area(const std::vector<OscrPoint>& c) {
  double a = 0;
  for (size_t i = 1; i < c.size(); ++i) a += (c[i].fpr - c[i - 1].fpr) * (c[i].ccr + c[i - 1].ccr) / 2;
  return a;
}

std::optional<double> ccr_at_fpr(const std::vector<OscrPoint>& c, double target, size_t num_unknown) {
  if (double(num_unknown) * target < 1.0) return std::nullopt;  // that FPR is below one image
  double best = 0;
  for (const auto& p : c)
    if (p.fpr <= target + 1e-15) best = std::max(best, p.ccr);
  return best;
}

Confusion open_set_confusion(int num_known, const std::vector<int64_t>& known_labels,
                             const std::vector<int64_t>& known_pred, const std::vector<double>& known_scores,
                             const std::vector<int64_t>& unknown_pred, const std::vector<double>& unknown_scores,
                             double threshold) {
  CAC_CHECK(num_known > 0, "open_set_confusion: no known classes");
  CAC_CHECK(known_labels.size() == known_pred.size() && known_pred.size() == known_scores.size() &&
                unknown_pred.size() == unknown_scores.size(),
            "open_set_confusion: {} labels, {} predictions and {} scores of knowns; {} predictions and {} scores "
            "of unknowns", known_labels.size(), known_pred.size(), known_scores.size(), unknown_pred.size(),
            unknown_scores.size());
  const int64_t K = num_known;
  Confusion m(size_t(K + 1), std::vector<int64_t>(size_t(K + 1), 0));
  auto column = [&](int64_t pred, double score) {
    CAC_CHECK(pred >= 0 && pred < K, "open_set_confusion: predicted class {} of {}", pred, K);
    return score > threshold ? K : pred;
  };
  for (size_t i = 0; i < known_labels.size(); ++i) {
    CAC_CHECK(known_labels[i] >= 0 && known_labels[i] < K, "open_set_confusion: label {} of {}", known_labels[i], K);
    ++m[size_t(known_labels[i])][size_t(column(known_pred[i], known_scores[i]))];
  }
  for (size_t i = 0; i < unknown_pred.size(); ++i) ++m[size_t(K)][size_t(column(unknown_pred[i], unknown_scores[i]))];
  return m;
}

std::vector<UnknownClassBreakdown> unknown_class_breakdown(int num_known, const std::vector<double>& known_scores,
                                                           const std::vector<int64_t>& unknown_labels,
                                                           const std::vector<int64_t>& unknown_pred,
                                                           const std::vector<double>& unknown_scores, double threshold) {
  CAC_CHECK(num_known > 0, "unknown_class_breakdown: no known classes");
  CAC_CHECK(unknown_labels.size() == unknown_pred.size() && unknown_pred.size() == unknown_scores.size(),
            "unknown_class_breakdown: {} labels, {} predictions and {} scores of unknowns", unknown_labels.size(),
            unknown_pred.size(), unknown_scores.size());
  std::map<int64_t, std::vector<size_t>> members;  // label -> its images, labels in ascending order
  for (size_t i = 0; i < unknown_labels.size(); ++i) members[unknown_labels[i]].push_back(i);
  std::vector<UnknownClassBreakdown> out;
  for (const auto& [label, idx] : members) {
    UnknownClassBreakdown b;
    b.label = label;
    b.images = int64_t(idx.size());
    b.accepted_as.assign(size_t(num_known), 0);
    std::vector<double> scores;
    for (size_t i : idx) {
      scores.push_back(unknown_scores[i]);
      if (unknown_scores[i] > threshold) continue;
      CAC_CHECK(unknown_pred[i] >= 0 && unknown_pred[i] < num_known, "unknown_class_breakdown: predicted class {} of {}",
                unknown_pred[i], num_known);
      ++b.accepted;
      ++b.accepted_as[size_t(unknown_pred[i])];
    }
    b.auroc = known_scores.empty() ? NAN : auroc(known_scores, scores);
    out.push_back(std::move(b));
  }
  return out;
}

namespace {
// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations (the logit spaces here have
// at most a few hundred dimensions). On return the diagonal of `a` holds the eigenvalues and the
// columns of `v` the eigenvectors.
void jacobi_eigen(std::vector<double>& a, std::vector<double>& v, int n) {
  v.assign(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) v[size_t(i) * n + i] = 1;
  auto A = [&](int r, int c) -> double& { return a[size_t(r) * n + c]; };
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, diag = 0;
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < n; ++c) (r == c ? diag : off) += A(r, c) * A(r, c);
    if (off <= 1e-30 * std::max(diag, 1e-300)) break;
    for (int p = 0; p < n - 1; ++p)
      for (int q = p + 1; q < n; ++q) {
        if (A(p, q) == 0) continue;
        // The rotation that zeroes A(p, q): tan(2 theta) = 2 A(p, q) / (A(q, q) - A(p, p)).
        const double theta = (A(q, q) - A(p, p)) / (2 * A(p, q));
        const double t = (theta >= 0 ? 1 : -1) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p and q
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = c * akp - s * akq;
          A(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p and q
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = c * apk - s * aqk;
          A(q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = v[size_t(k) * n + p], vkq = v[size_t(k) * n + q];
          v[size_t(k) * n + p] = c * vkp - s * vkq;
          v[size_t(k) * n + q] = s * vkp + c * vkq;
        }
      }
  }
}
}  // namespace

std::pair<double, double> PrincipalPlane::project(const float* point) const {
  double x = 0, y = 0;
  for (size_t k = 0; k < mean.size(); ++k) {
    const double d = double(point[k]) - mean[k];
    x += d * axis1[k];
    y += d * axis2[k];
  }
  return {x, y};
}

PrincipalPlane principal_plane(const std::vector<float>& points, int dim) {
  CAC_CHECK(dim > 0 && !points.empty() && points.size() % size_t(dim) == 0,
            "principal_plane: {} values are not rows of {}", points.size(), dim);
  const size_t n = points.size() / size_t(dim), D = size_t(dim);
  PrincipalPlane pl;
  pl.mean.assign(D, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t k = 0; k < D; ++k) pl.mean[k] += double(points[i * D + k]) / double(n);
  std::vector<double> cov(D * D, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t r = 0; r < D; ++r) {
      const double dr = double(points[i * D + r]) - pl.mean[r];
      for (size_t c = r; c < D; ++c) cov[r * D + c] += dr * (double(points[i * D + c]) - pl.mean[c]) / double(n);
    }
  for (size_t r = 0; r < D; ++r)
    for (size_t c = 0; c < r; ++c) cov[r * D + c] = cov[c * D + r];
  for (size_t k = 0; k < D; ++k) pl.total_variance += cov[k * D + k];
  std::vector<double> vec;
  jacobi_eigen(cov, vec, dim);
  std::vector<size_t> order(D);
  for (size_t k = 0; k < D; ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cov[a * D + a] > cov[b * D + b]; });
  auto axis = [&](size_t which, std::vector<double>* out, double* variance) {
    out->assign(D, 0.0);
    if (which >= D) return;
    const size_t col = order[which];
    size_t biggest = 0;
    for (size_t k = 0; k < D; ++k) {
      (*out)[k] = vec[k * D + col];
      if (std::abs((*out)[k]) > std::abs((*out)[biggest])) biggest = k;
    }
    if ((*out)[biggest] < 0)
      for (double& x : *out) x = -x;
    *variance = std::max(0.0, cov[col * D + col]);
  };
  axis(0, &pl.axis1, &pl.variance1);
  axis(1, &pl.axis2, &pl.variance2);
  return pl;
}

std::vector<RocPoint> roc_curve(const std::vector<double>& known, const std::vector<double>& unknown) {
  check(known, unknown, "roc");
  std::vector<std::pair<double, bool>> all;
  for (double v : known) all.push_back({v, false});
  for (double v : unknown) all.push_back({v, true});
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first > b.first; });
  std::vector<RocPoint> r{{0, 0}};
  double tp = 0, fp = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    for (; j < all.size() && all[j].first == all[i].first; ++j) (all[j].second ? tp : fp) += 1;
    r.push_back({fp / double(known.size()), tp / double(unknown.size())});
    i = j;
  }
  return r;
}

}  // namespace cac::eval
