// Metrics on hand-computed cases (ties, all-equal scores, perfect and inverted separations) and
// against values scikit-learn 1.x gives for the same inputs (computed offline, stored as numbers).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/scores.h"

namespace cac::eval {
namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}


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

TEST(Metrics, CcrAtFprThresholdConventionAtTies) {
  // Knowns 1 (correct), 2 (correct), 3 (wrong); ten unknowns, two of them tied with the known at 2.
  // A threshold accepts every score <= t, so the known at 2 is only accepted together with both
  // unknowns at 2 (FPR 0.2): at FPR 0.1 only the threshold t = 1 qualifies.
  const std::vector<double> unknown = {2, 2, 5, 6, 7, 8, 9, 10, 11, 12};
  auto c = oscr_curve({1, 2, 3}, {true, true, false}, unknown);
  EXPECT_DOUBLE_EQ(*ccr_at_fpr(c, 0.1, unknown.size()), 1.0 / 3);
  EXPECT_DOUBLE_EQ(*ccr_at_fpr(c, 0.2, unknown.size()), 2.0 / 3);
  EXPECT_DOUBLE_EQ(*ccr_at_fpr(c, 1.0, unknown.size()), 2.0 / 3);  // the wrong known never counts
  EXPECT_FALSE(ccr_at_fpr(c, 0.01, unknown.size()).has_value());  // 10 unknowns: 1e-2 is n/a
  // With all scores equal every image enters at once: nothing is accepted below FPR 1.
  auto flat = oscr_curve({5, 5}, {true, true}, {5, 5, 5, 5, 5, 5, 5, 5, 5, 5});
  EXPECT_DOUBLE_EQ(*ccr_at_fpr(flat, 0.5, 10), 0.0);
  EXPECT_DOUBLE_EQ(*ccr_at_fpr(flat, 1.0, 10), 1.0);
}

// Rows: true class (0, 1, then unknown); columns: predicted class, or unknown above the threshold.
TEST(Metrics, OpenSetConfusionHandCase) {
  // Knowns: (label, prediction, score) = (0,0,.1) (0,1,.5: accepted, at the threshold) (1,1,.9: rejected) (1,1,.2).
  // Unknowns: (prediction, score) = (0,.7: rejected) (1,.3: accepted as 1) (1,.5: accepted as 1).
  const Confusion m = open_set_confusion(2, {0, 0, 1, 1}, {0, 1, 1, 1}, {0.1, 0.5, 0.9, 0.2}, {0, 1, 1}, {0.7, 0.3, 0.5}, 0.5);
  EXPECT_EQ(m, (Confusion{{1, 1, 0}, {0, 1, 1}, {0, 2, 1}}));
  EXPECT_THROW(open_set_confusion(2, {0, 2}, {0, 0}, {0.1, 0.1}, {}, {}, 0.5), Error);  // label out of range
  EXPECT_THROW(open_set_confusion(2, {0}, {3}, {0.1}, {}, {}, 0.5), Error);             // prediction out of range
  EXPECT_THROW(open_set_confusion(2, {0}, {0, 1}, {0.1}, {}, {}, 0.5), Error);          // lengths differ
}

// Unknown class 7: scores .2 (accepted as 1) and .9 (rejected); class 3: .05 (accepted as 0), .3
// (accepted as 1), .4 (accepted as 1). Knowns .1 and .5, threshold .5 (accepted: score <= .5).
// AUROC(knowns, class 7) = P(unknown > known) = (0.5 [.2 vs .1: 1, vs .5: 0] + 1 [.9 beats both]) / 2
// = 0.75; class 3: .05 beats none, .3 beats .1, .4 beats .1 -> 2 of 6 = 1/3.
TEST(Metrics, UnknownClassBreakdownHandCase) {
  const auto b = unknown_class_breakdown(2, {0.1, 0.5}, {7, 3, 7, 3, 3}, {1, 0, 0, 1, 1}, {0.2, 0.05, 0.9, 0.3, 0.4}, 0.5);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].label, 3);  // ascending labels
  EXPECT_EQ(b[0].images, 3);
  EXPECT_EQ(b[0].accepted, 3);
  EXPECT_EQ(b[0].accepted_as, (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(b[0].auroc, 1.0 / 3.0, 1e-12);
  EXPECT_EQ(b[1].label, 7);
  EXPECT_EQ(b[1].images, 2);
  EXPECT_EQ(b[1].accepted, 1);
  EXPECT_EQ(b[1].accepted_as, (std::vector<int64_t>{0, 1}));
  EXPECT_NEAR(b[1].auroc, 0.75, 1e-12);
  // A rejected image's prediction is not used, so it need not be valid; an accepted one must be.
  EXPECT_NO_THROW(unknown_class_breakdown(2, {0.1}, {0}, {9}, {0.9}, 0.5));
  EXPECT_THROW(unknown_class_breakdown(2, {0.1}, {0}, {9}, {0.2}, 0.5), Error);
  EXPECT_THROW(unknown_class_breakdown(2, {0.1}, {0, 1}, {0}, {0.2}, 0.5), Error);  // lengths differ
  EXPECT_TRUE(unknown_class_breakdown(2, {0.1}, {}, {}, {}, 0.5).empty());
}

// The table lists the hardest class first, with names where known (escaped) and numbers where
// not, the share accepted and the known classes that accept them; the report has one section.
TEST(Report, UnknownClassesHardestFirst) {
  ReportEntry e;
  e.run = "r";
  e.class_names = {"cat", "dog"};
  e.unknown_label_names = {"<zero>", "one"};  // label 5 has no name: shown as 5
  e.unknown_classes = {{0, 10, 4, 0.9, {1, 3}}, {1, 4, 0, 0.99, {0, 0}}, {5, 2, 2, 0.4, {2, 0}}};
  const std::string h = html_unknown_classes(e);
  const size_t at5 = h.find("<td>5</td>"), at0 = h.find("&lt;zero&gt;"), at1 = h.find("<td>one</td>");
  ASSERT_NE(at5, std::string::npos) << h;
  ASSERT_NE(at0, std::string::npos) << h;
  ASSERT_NE(at1, std::string::npos) << h;
  EXPECT_LT(at5, at0);  // AUROC 0.4, then 0.9, then 0.99
  EXPECT_LT(at0, at1);
  EXPECT_NE(h.find("4 (40.0%)"), std::string::npos) << h;
  EXPECT_NE(h.find("dog 3, cat 1"), std::string::npos) << h;  // most often first
  EXPECT_NE(h.find("0 (0.0%)</td><td style=\"text-align:left\">-</td>"), std::string::npos) << h;
  e.known_scores = {0.1}, e.unknown_scores = {0.7}, e.known_correct = {true};
  ReportEntry f = e;
  f.unknown_classes.clear();
  const std::string r = html_report("t", {e, f}, {}, "cmd");
  EXPECT_EQ(count(r, "<h2>Unknown classes</h2>"), 1u);
  EXPECT_NE(r.find("r · 3 classes"), std::string::npos);
}

TEST(Report, LogitSpaceDrawsKnownsUnknownsAndAnchors) {
  ReportEntry e;
  e.run = "runs/t0";
  e.num_classes = 3;
  e.class_names = {"cat", "<dog>", "eel"};
  for (int i = 0; i < 30; ++i) {  // ten knowns per class near their anchor 5 e_k
    e.known_labels.push_back(i % 3);
    for (int k = 0; k < 3; ++k) e.known_logits.push_back(k == i % 3 ? 5.f + 0.1f * float(i % 7) : 0.2f * float(i % 5));
  }
  for (int i = 0; i < 12; ++i)
    for (int k = 0; k < 3; ++k) e.unknown_logits.push_back(1.f + 0.1f * float((i + k) % 4));
  e.anchors = {5, 0, 0, 0, 5, 0, 0, 0, 5};
  const std::string s = svg_logit_space(e);
  EXPECT_EQ(s.rfind("<svg", 0), 0u);
  EXPECT_EQ(count(s, "<circle") - 3 - 1, 30u + 12u);  // every point, plus 3 + 1 legend marks
  EXPECT_EQ(count(s, "stroke-width=\"2\"/>"), 3u + 1u);  // an anchor cross per class, and the legend's
  EXPECT_NE(s.find("&lt;dog&gt;"), std::string::npos);
  const PrincipalPlane pl = principal_plane(e.known_logits, 3);  // fitted to the knowns
  const int share = int(std::lround(100 * (pl.variance1 + pl.variance2) / pl.total_variance));
  EXPECT_GT(share, 50);
  EXPECT_NE(s.find(std::to_string(share) + "% of the variance"), std::string::npos) << s.substr(0, 2000);
  // At most max_points of each set: every 3rd known, every 2nd unknown.
  EXPECT_EQ(count(svg_logit_space(e, 10), "<circle") - 4, 10u + 6u);
  // CE runs have no anchors: no crosses, no anchor legend.
  e.anchors.clear();
  EXPECT_EQ(count(svg_logit_space(e), "<path"), 0u);
  e.known_labels.pop_back();
  EXPECT_THROW(svg_logit_space(e), Error);
}

TEST(Report, ConfusionTableNamesClassesAndShadesRightAndWrong) {
  ReportEntry e;
  e.run = "r";
  e.class_names = {"cat", "<dog>"};
  e.threshold = 0.5;
  e.deploy_score = "mls";
  e.confusion = {{8, 1, 1}, {0, 0, 0}, {3, 0, 7}};
  const std::string h = html_confusion(e);
  EXPECT_NE(h.find("&lt;dog&gt;"), std::string::npos);  // names escaped
  EXPECT_EQ(count(h, "<i>unknown</i>"), 2u);            // a row and a column
  EXPECT_NE(h.find("rgba(31,119,180,0.720)"), std::string::npos);  // 8 of 10 right: blue, 0.08 + 0.8 * 0.8
  EXPECT_NE(h.find("rgba(214,39,40,0.320)"), std::string::npos);   // 3 of 10 unknowns taken for cat: red
  EXPECT_NE(h.find("<td>10</td>"), std::string::npos);             // row totals
  EXPECT_NE(h.find("<td>0</td></tr>"), std::string::npos);         // an empty row, no division by zero
  e.confusion.pop_back();
  EXPECT_THROW(html_confusion(e), Error);
  // In the whole report: a section with one table per entry that has a matrix.
  e.confusion = {{8, 1, 1}, {0, 0, 0}, {3, 0, 7}};
  e.known_scores = {0.1, 0.6}, e.unknown_scores = {0.7}, e.known_correct = {true, false};
  ReportEntry f = e;
  f.confusion.clear();
  const std::string r = html_report("t", {e, f}, {}, "cmd");
  EXPECT_EQ(count(r, "Open-set confusion"), 1u);
  EXPECT_EQ(count(r, "<table class=\"cm\">"), 1u);
  EXPECT_NE(r.find("mls score above 0.5"), std::string::npos);  // the deployed score and its threshold
}

// Points m + a u + b v in 4-D with orthonormal u, v and var(a) > var(b): the plane recovers u and v
// (up to the sign convention), their variances, and coordinates that reproduce a and b.
TEST(Metrics, PrincipalPlaneFindsTheAxesOfPlanarData) {
  const double r = 1 / std::sqrt(2.0);
  const std::vector<double> m = {1, -2, 3, 0.5}, u = {r, r, 0, 0}, v = {0, 0, -0.6, 0.8};
  std::vector<float> pts;
  std::vector<std::pair<double, double>> ab;
  for (int i = 0; i < 10; ++i)  // every sign combination of (a, b): a and b are exactly uncorrelated
    for (double sa : {1.0, -1.0})
      for (double sb : {1.0, -1.0}) {
        const double a = sa * 3 * (1 + std::sin(0.7 * i)), b = sb * (0.5 + std::cos(1.3 * i) / 4);
        ab.push_back({a, b});
        for (int k = 0; k < 4; ++k) pts.push_back(float(m[k] + a * u[k] + b * v[k]));
      }
  const PrincipalPlane pl = principal_plane(pts, 4);
  double du = 0, dv = 0;
  for (int k = 0; k < 4; ++k) du += pl.axis1[k] * u[k], dv += pl.axis2[k] * v[k];
  // Both keep their sign: the largest-magnitude component of u (r, the first of two equal ones)
  // and of v (0.8) is positive.
  EXPECT_NEAR(du, 1.0, 1e-5);
  EXPECT_NEAR(dv, 1.0, 1e-5);
  EXPECT_GT(pl.variance1, pl.variance2);
  EXPECT_NEAR(pl.variance1 + pl.variance2, pl.total_variance, 1e-5 * pl.total_variance);
  // The coordinates are a and b, centred.
  double mean_a = 0, mean_b = 0;
  for (auto [a, b] : ab) mean_a += a / 40, mean_b += b / 40;
  for (size_t i = 0; i < ab.size(); ++i) {
    auto [x, y] = pl.project(&pts[i * 4]);
    EXPECT_NEAR(x, ab[i].first - mean_a, 1e-5);
    EXPECT_NEAR(y, ab[i].second - mean_b, 1e-5);
  }
  EXPECT_THROW(principal_plane({1, 2, 3}, 2), Error);  // not whole rows
  const PrincipalPlane line = principal_plane({1, 2, 4}, 1);  // one dimension: no second axis
  EXPECT_EQ(line.axis1, std::vector<double>{1.0});
  EXPECT_EQ(line.axis2, std::vector<double>{0.0});
}

TEST(Metrics, RocCurveEnds) {
  auto r = roc_curve({1, 2}, {3});
  EXPECT_DOUBLE_EQ(r.front().tpr, 0.0);
  EXPECT_DOUBLE_EQ(r.back().tpr, 1.0);
  EXPECT_DOUBLE_EQ(r.back().fpr, 1.0);
}


// --- The HTML report -------------------------------------------------------------------------

TEST(Report, PlotSkipsSubPixelSteps) {
  // 100000 points on a 388-pixel-wide line: at most one point per half pixel of path survives.
  Series s{"many", {}, {}};
  for (int i = 0; i <= 100000; ++i) s.x.push_back(i / 100000.0), s.y.push_back(i / 100000.0);
  const std::string svg = svg_line_plot(PlotSpec{"t", "x", "y"}, {s});
  const size_t points = count(svg.substr(svg.find("points=")), ",") ;
  EXPECT_GT(points, 300u);
  EXPECT_LT(points, 1500u);  // the diagonal is ~550 px long: <= 2 points per pixel
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
}

TEST(Report, SummariesPerMethodAndSet) {
  ReportEntry a{"r0", "unknown", "cac", "CIFAR10", {{"auroc", 0.8}, {"oscr", NAN}}, {}, {}, {}, ""};
  ReportEntry b{"r1", "unknown", "cac", "CIFAR10", {{"auroc", 0.6}, {"oscr", 0.5}}, {}, {}, {}, ""};
  ReportEntry c{"r2", "SVHN test", "ce", "CIFAR10-FP", {{"auroc", 0.9}}, {}, {}, {}, ""};
  ReportEntry s{"r3", "unknown", "cac", "SVHN", {{"auroc", 0.1}}, {}, {}, {}, ""};  // never mixed with CIFAR10
  const auto g = summarise({a, b, c, s}, {"auroc", "oscr"});
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g[2].dataset, "SVHN");
  EXPECT_EQ(g[2].runs, 1);
  EXPECT_EQ(g[0].runs, 2);
  EXPECT_NEAR(g[0].mean[0], 0.7, 1e-12);
  EXPECT_NEAR(g[0].stdev[0], 0.1, 1e-12);  // population std of {0.8, 0.6}
  EXPECT_DOUBLE_EQ(g[0].mean[1], 0.5);     // the NaN is left out, not averaged in
  EXPECT_EQ(g[1].unknown_set, "SVHN test");
  EXPECT_TRUE(std::isnan(g[1].mean[1]));   // no value at all: n/a
  EXPECT_EQ(entry_name(a), "r0");
  EXPECT_EQ(entry_name(c), "r2 · SVHN test");
}

TEST(Report, WholeReportIsSelfContained) {
  ReportEntry e{"runs/<x>", "unknown", "cac", "MNIST", {{"accuracy", 0.9}, {"ccr_at_fpr_0.0001", NAN}},
                {0.1, 0.2, 0.3, 0.4}, {0.35, 0.5, 0.9}, {true, true, false, true},
                "epoch,lr,train_loss,train_tuplet,train_anchor,train_acc,val_loss,val_tuplet,val_anchor,val_acc,seconds\n"
                "1,0.01,2.0,1.5,0.5,0.5,1.8,1.4,0.4,0.6,3.0\n2,0.01,1.0,0.8,0.2,0.8,1.1,0.9,0.2,0.75,3.1\n"};
  ReportEntry f = e;
  f.run = "runs/y";
  const std::string h = html_report("T & co", {e, f}, {"accuracy", "ccr_at_fpr_0.0001"}, "cac_eval --run x");
  EXPECT_EQ(h.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(h.find("T &amp; co"), std::string::npos);      // escaped
  EXPECT_NE(h.find("runs/&lt;x&gt;"), std::string::npos);  // run names escaped too
  EXPECT_EQ(h.find("runs/<x>"), std::string::npos);
  EXPECT_NE(h.find("<td>n/a</td>"), std::string::npos);    // NaN shows as n/a, never a number
  EXPECT_NE(h.find("mean ± std over 2 runs"), std::string::npos);
  // ROC, OSCR, OSCR log, two histograms, loss and accuracy curves.
  EXPECT_EQ(count(h, "<svg"), 7u);
  EXPECT_EQ(count(h, "</svg>"), 7u);
  // Self-contained: nothing fetched from elsewhere.
  EXPECT_EQ(h.find("http://www.w3.org/2000/svg") != std::string::npos, true);
  EXPECT_EQ(count(h, "src="), 0u);
  EXPECT_EQ(count(h, "href="), 0u);
  EXPECT_EQ(count(h, "<script"), 0u);
}


// ---- Post-hoc open-set scores (eval/scores.h), against values derived by hand ------------------

// Softmax of (0, ln 3) is (1/4, 3/4): msp 1/4; the energy is -ln(1 + 3); at T = 2 with (0, 2 ln 3)
// it is -2 ln 4. Three equal logits: msp 2/3. mls is minus the top logit.
TEST(Scores, LogitScoresByHand) {
  const float l3 = float(std::log(3.0));
  const std::vector<double> msp = eval::msp_scores({0.f, l3, 2.f, 2.f}, 2);
  EXPECT_NEAR(msp[0], 0.25, 1e-7);
  EXPECT_NEAR(msp[1], 0.5, 1e-12);
  EXPECT_NEAR(eval::msp_scores({2.f, 2.f, 2.f}, 3)[0], 2.0 / 3, 1e-12);
  EXPECT_EQ(eval::mls_scores({1.f, -2.f, 0.5f, -4.f, -3.f, -5.f}, 3), (std::vector<double>{-1.0, 3.0}));
  EXPECT_NEAR(eval::energy_scores({0.f, l3}, 2)[0], -std::log(4.0), 1e-7);
  EXPECT_NEAR(eval::energy_scores({0.f, 2 * l3}, 2, 2.0)[0], -2 * std::log(4.0), 1e-6);
  // Large logits do not overflow (logsumexp about the maximum).
  EXPECT_NEAR(eval::energy_scores({1000.f, 1000.f}, 2)[0], -(1000 + std::log(2.0)), 1e-9);
  EXPECT_THROW(eval::msp_scores({1.f, 2.f, 3.f}, 2), Error);
}

// Bank (1,0), (0,2), (-3,0) normalises to (1,0), (0,1), (-1,0). From (2,0), i.e. (1,0): distances
// 0, sqrt 2, 2. From (1,1), i.e. (1,1)/sqrt 2: sqrt(2 - sqrt 2) twice, then sqrt(2 + sqrt 2).
TEST(Scores, KnnByHand) {
  const std::vector<float> bank = {1, 0, 0, 2, -3, 0};
  const std::vector<float> q = {2, 0, 1, 1};
  const double r2 = std::sqrt(2.0);
  EXPECT_NEAR(eval::KnnScorer(bank, 2, 1).score(q)[0], 0, 1e-12);
  EXPECT_NEAR(eval::KnnScorer(bank, 2, 2).score(q)[0], r2, 1e-12);
  EXPECT_NEAR(eval::KnnScorer(bank, 2, 3).score(q)[0], 2, 1e-12);
  EXPECT_NEAR(eval::KnnScorer(bank, 2, 1).score(q)[1], std::sqrt(2 - r2), 1e-7);
  EXPECT_NEAR(eval::KnnScorer(bank, 2, 2).score(q)[1], std::sqrt(2 - r2), 1e-7);
  EXPECT_NEAR(eval::KnnScorer(bank, 2, 3).score(q)[1], std::sqrt(2 + r2), 1e-7);
  EXPECT_THROW(eval::KnnScorer(bank, 2, 4), Error);  // k beyond the bank
}

// Two classes: (1,0), (3,0) about (2,0) and (0,1), (0,-1) about (0,0): the shared covariance is
// diag(1/2, 1/2), so the distance is 2 |x - mean|^2: (2,1) is 2 from class 0 (10 from class 1),
// the origin 0. One class: (1,1), (-1,-1), (1,0), (-1,0) about the origin: covariance
// [[1, 1/2], [1/2, 1/2]], inverse [[2, -2], [-2, 4]]: (1,0) -> 2, (0,1) -> 4, (1,1) -> 2.
TEST(Scores, MahalanobisByHand) {
  const eval::MahalanobisScorer two({1, 0, 3, 0, 0, 1, 0, -1}, {0, 0, 1, 1}, 2, 2);
  const std::vector<double> s = two.score({2, 1, 0, 0});
  EXPECT_NEAR(s[0], 2, 1e-12);
  EXPECT_NEAR(s[1], 0, 1e-12);
  const eval::MahalanobisScorer one({1, 1, -1, -1, 1, 0, -1, 0}, {0, 0, 0, 0}, 1, 2);
  const std::vector<double> t = one.score({1, 0, 0, 1, 1, 1});
  EXPECT_NEAR(t[0], 2, 1e-12);
  EXPECT_NEAR(t[1], 4, 1e-12);
  EXPECT_NEAR(t[2], 2, 1e-12);
  // A covariance of rank 1 (all spread along x): the ridge (1e-6 x the mean variance 1/2) makes it
  // invertible, and a step across it is very far.
  const eval::MahalanobisScorer flat({1, 0, -1, 0}, {0, 0}, 1, 2);
  const std::vector<double> u = flat.score({1, 0, 0, 1});
  EXPECT_NEAR(u[0], 1 / (1 + 5e-7), 1e-9);
  EXPECT_NEAR(u[1], 1 / 5e-7, 1e-3);
  EXPECT_THROW(eval::MahalanobisScorer({1, 0}, {1}, 1, 2), Error);  // label outside the classes
}

// Five bins of 0.2: 0.9 twice (one right) in (0.8, 1]: |0.5 - 0.9| x 2/5; 0.6 twice (both right)
// in (0.4, 0.6] (0.6 on the edge): |1 - 0.6| x 2/5; 0.2 (wrong) in (0, 0.2]: 0.2 x 1/5. Sum 0.36.
TEST(Scores, ExpectedCalibrationErrorByHand) {
  EXPECT_NEAR(eval::expected_calibration_error({0.9, 0.9, 0.6, 0.6, 0.2}, {true, false, true, true, false}, 5), 0.36,
              1e-12);
  EXPECT_NEAR(eval::expected_calibration_error({1.0, 1.0}, {true, true}), 0, 1e-12);  // perfectly calibrated
  EXPECT_NEAR(eval::expected_calibration_error({0.0, 1.0}, {true, false}), 1, 1e-12);
}

}  // namespace
}  // namespace cac::eval
