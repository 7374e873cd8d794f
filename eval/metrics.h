#pragma once
// Open-set metrics from per-image scores. Convention: a higher score means "more likely unknown";
// an image is accepted as known at threshold t when score <= t.
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace cac::eval {

// Area under the ROC curve with unknowns as positives: P(unknown scores higher than known), ties
// counting one half (exact, via average ranks).
double auroc(const std::vector<double>& known, const std::vector<double>& unknown);
// Average precision (the step-wise sum of sklearn's average_precision_score) with positives =
// unknowns scored by score (AUPR-out) or positives = knowns scored by -score (AUPR-in).
double aupr_out(const std::vector<double>& known, const std::vector<double>& unknown);
double aupr_in(const std::vector<double>& known, const std::vector<double>& unknown);
// The smallest threshold t (a score of `known`) with at least `fraction` of the knowns <= t.
double accept_threshold(std::vector<double> known, double fraction);
// Fraction of unknowns accepted at the smallest threshold that accepts >= 95% of the knowns.
double fpr_at_95_tpr(const std::vector<double>& known, const std::vector<double>& unknown);

// Open-set classification rate curve: for each threshold, CCR = fraction of knowns accepted AND
// correctly classified, FPR = fraction of unknowns accepted. Points run from (0, 0) to (1, CCR_max).
struct OscrPoint {
  double fpr, ccr;
};
std::vector<OscrPoint> oscr_curve(const std::vector<double>& known, const std::vector<bool>& correct,
                                  const std::vector<double>& unknown);
double oscr_area(const std::vector<OscrPoint>& curve);  // trapezoids over FPR in [0, 1]
// The best CCR over thresholds whose FPR <= target; empty when the unknown set is too small to
// resolve that rate (fewer than 1/target images): never extrapolated.
std::optional<double> ccr_at_fpr(const std::vector<OscrPoint>& curve, double target, size_t num_unknown);

// Open-set confusion matrix, (K+1) x (K+1) counts: row = true class (0..K-1 the known classes,
// K the unknown set), column = the predicted known class, or K where the score is above
// `threshold` (rejected as unknown; score <= threshold is accepted, as everywhere here).
using Confusion = std::vector<std::vector<int64_t>>;
Confusion open_set_confusion(int num_known, const std::vector<int64_t>& known_labels,
                             const std::vector<int64_t>& known_pred, const std::vector<double>& known_scores,
                             const std::vector<int64_t>& unknown_pred, const std::vector<double>& unknown_scores,
                             double threshold);

// The unknown set class by class (by its images' labels, ascending): how well each unknown class is
// told from the knowns (AUROC of the knowns against that class alone) and what a deployment at
// `threshold` does with it: how many of its images it accepts (score <= threshold) and, per known
// class, how many it accepts as that class. Shows which unknown classes the open-set errors come
// from and which known classes absorb them.
struct UnknownClassBreakdown {
  int64_t label = 0, images = 0, accepted = 0;
  double auroc = 0;
  std::vector<int64_t> accepted_as;  // num_known counts, summing to accepted
};
std::vector<UnknownClassBreakdown> unknown_class_breakdown(int num_known, const std::vector<double>& known_scores,
                                                           const std::vector<int64_t>& unknown_labels,
                                                           const std::vector<int64_t>& unknown_pred,
                                                           const std::vector<double>& unknown_scores, double threshold);

// The plane through the mean of the rows of `points` (n x dim, row-major) spanned by their two
// principal axes: the best 2-D view of the logit space. Axes are unit vectors, the first of the
// larger variance; each is signed so that its largest-magnitude component is positive, so the
// picture does not flip between runs. dim 1 gives a zero second axis.
struct PrincipalPlane {
  std::vector<double> mean, axis1, axis2;
  double variance1 = 0, variance2 = 0, total_variance = 0;  // along the axes, and in all dims
  // Coordinates of one dim-long point in the plane.
  std::pair<double, double> project(const float* point) const;
};
PrincipalPlane principal_plane(const std::vector<float>& points, int dim);

struct RocPoint {
  double fpr, tpr;  // unknowns as positives
};
std::vector<RocPoint> roc_curve(const std::vector<double>& known, const std::vector<double>& unknown);

}  // namespace cac::eval
