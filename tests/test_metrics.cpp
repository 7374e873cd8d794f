// Metrics on hand-computed cases (ties, all-equal scores, perfect and inverted separations) and
// against values scikit-learn 1.x gives for the same inputs (computed offline, stored as numbers).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "eval/metrics.h"

namespace cac::eval {
namespace {

TEST(Metrics, AurocHandCases) {
  EXPECT_DOUBLE_EQ(auroc({0.1, 0.2}, {0.8, 0.9}), 1.0);     // perfect
  EXPECT_DOUBLE_EQ(auroc({0.8, 0.9}, {0.1, 0.2}), 0.0);     // inverted
  EXPECT_DOUBLE_EQ(auroc({0.5, 0.5}, {0.5, 0.5, 0.5}), 0.5);  // all equal: every pair a tie
  // known {1, 2, 3}, unknown {2, 4}: pairs (u > k): 2>1, 4>1, 4>2, 4>3 = 4; tie 2=2 -> 0.5; of 6.
  EXPECT_DOUBLE_EQ(auroc({1, 2, 3}, {2, 4}), 4.5 / 6);
  EXPECT_THROW(auroc({}, {1}), Error);
  EXPECT_THROW(auroc({std::nan("")}, {1}), Error);
}

TEST(Metrics, MatchScikitLearn) {
  // scikit-learn 1.9.1: roc_auc_score([0]*5+[1]*4, known+unknown) and average_precision_score with
  // the same labels (aupr_out) or flipped labels and negated scores (aupr_in).
  const std::vector<double> known = {0.1, 0.4, 0.35, 0.8, 0.2}, unknown = {0.7, 0.3, 0.9, 0.4};
  EXPECT_NEAR(auroc(known, unknown), 0.725, 1e-12);
  EXPECT_NEAR(aupr_out(known, unknown), 0.7095238095238094, 1e-12);
  EXPECT_NEAR(aupr_in(known, unknown), 0.8083333333333333, 1e-12);
}

TEST(Metrics, FprAt95Tpr) {
  std::vector<double> known;
  for (int i = 1; i <= 20; ++i) known.push_back(i);  // 95% of knowns accepted at t = 19
  EXPECT_DOUBLE_EQ(fpr_at_95_tpr(known, {19, 19.5, 25, 30}), 0.25);
  EXPECT_DOUBLE_EQ(fpr_at_95_tpr({1, 2}, {3}), 0.0);
}

TEST(Metrics, OscrAndCcrAtFpr) {
  // Knowns 1 (correct), 2 (wrong), 3 (correct); unknowns 2.5, 4.
  auto c = oscr_curve({1, 2, 3}, {true, false, true}, {2.5, 4});
  ASSERT_EQ(c.size(), 6u);
  EXPECT_DOUBLE_EQ(c[1].ccr, 1.0 / 3);  // t = 1
  EXPECT_DOUBLE_EQ(c[3].fpr, 0.5);      // t = 2.5
  EXPECT_DOUBLE_EQ(c.back().fpr, 1.0);
  EXPECT_DOUBLE_EQ(c.back().ccr, 2.0 / 3);
  // Area: FPR 0 -> 0.5 at CCR 1/3, then 0.5 -> 1 rising from 1/3 (t=2.5) ... to 2/3 at t = 3
  // before the last unknown: trapezoids (0.5 * 1/3) + (0.5 * (2/3 + 2/3) / 2).
  EXPECT_NEAR(oscr_area(c), 0.5 / 3 + 0.5 * 2 / 3, 1e-12);
  EXPECT_DOUBLE_EQ(*ccr_at_fpr(c, 0.5, 2), 2.0 / 3);  // the threshold at 3 still has FPR 0.5
  EXPECT_FALSE(ccr_at_fpr(c, 1e-3, 2).has_value());   // 2 unknowns cannot resolve 1e-3
  // Ties between a known and an unknown enter together at one threshold.
  auto t = oscr_curve({1}, {true}, {1});
  ASSERT_EQ(t.size(), 2u);
  EXPECT_DOUBLE_EQ(t[1].fpr, 1.0);
  EXPECT_DOUBLE_EQ(t[1].ccr, 1.0);
}

TEST(Metrics, RocCurveEnds) {
  auto r = roc_curve({1, 2}, {3});
  EXPECT_DOUBLE_EQ(r.front().tpr, 0.0);
  EXPECT_DOUBLE_EQ(r.back().tpr, 1.0);
  EXPECT_DOUBLE_EQ(r.back().fpr, 1.0);
}

}  // namespace
}  // namespace cac::eval
