// The lab's host-side judgement of candidates (dev/bn_lab/choice.h), on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "dev/bn_lab/choice.h"

namespace cac {
namespace {

// The lab's choice: the first candidate (the list is in order of preference) within the
// slack of the fastest, so noise between equally fast candidates does not flip it; candidates that
// could not run (non-finite times) are never chosen.
TEST(BnLab, PicksTheFirstCandidateWithinSlackOfTheFastest) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(lab::pick_measured({1.00, 0.99}, 0.03), 0);  // 1% apart: keep the preferred one
  EXPECT_EQ(lab::pick_measured({1.00, 0.90}, 0.03), 1);  // 10% faster wins
  EXPECT_EQ(lab::pick_measured({1.00, 0.90, 0.91}, 0.03), 1);
  EXPECT_EQ(lab::pick_measured({inf, 2.0, 1.0}, 0.0), 2);
  EXPECT_EQ(lab::pick_measured({nan, 1.0}, 0.03), 1);
  EXPECT_EQ(lab::pick_measured({inf, inf}, 0.03), -1);
  EXPECT_EQ(lab::pick_measured({}, 0.03), -1);
}

// The lab's check of a candidate against the CPU twin's result: rounding-level differences pass,
// anything of the order of the data (a wrong index, a race), a NaN or a wrong size does not.
TEST(BnLab, CandidatesMustAgreeWithTheReference) {
  const std::vector<float> ref = {1.0f, -2.0f, 3.0f, 0.0f};
  EXPECT_TRUE(lab::agrees_with_reference(ref, ref));
  EXPECT_TRUE(lab::agrees_with_reference(ref, {1.000004f, -2.000003f, 2.999998f, 1e-6f}));  // float rounding
  EXPECT_TRUE(lab::agrees_with_reference(ref, {1.0f, -2.0f, 3.0f, 0.0039f}));  // 1e-3 * (1 + max|ref| = 3)
  EXPECT_FALSE(lab::agrees_with_reference(ref, {1.0f, -2.0f, 3.0f, 0.0041f}));
  EXPECT_FALSE(lab::agrees_with_reference(ref, {3.0f, -2.0f, 1.0f, 0.0f}));  // elements swapped
  EXPECT_FALSE(lab::agrees_with_reference(ref, {1.0f, -2.0f, std::nanf(""), 0.0f}));
  EXPECT_FALSE(lab::agrees_with_reference(ref, {1.0f, -2.0f, 3.0f}));
  EXPECT_TRUE(lab::agrees_with_reference({}, {}));
}

}  // namespace
}  // namespace cac
