#include "eval/metrics.h"

#include <algorithm>
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
