// Mode 1 of the op-case table: every backward against central finite differences in double.
#include <gtest/gtest.h>

#include "core/autograd.h"
#include "tests/op_cases.h"

namespace cac::testing {
namespace {

double projected(const OpCase& c, const std::vector<Tensor>& inputs, const Tensor& r) {
  NoGradGuard no_grad;
  Tensor y = c.run(inputs);
  const double* yp = y.data<double>();
  const double* rp = r.data<double>();
  double s = 0;
  for (int64_t i = 0; i < y.numel(); ++i) s += yp[i] * rp[i];
  return s;
}

class GradCheck : public ::testing::TestWithParam<OpCase> {};

TEST_P(GradCheck, MatchesFiniteDifferencesInDouble) {
  const OpCase& c = GetParam();
  std::vector<Tensor> inputs = make_inputs(c, DType::F64, 2024);
  Tensor y = c.run(inputs);
  Tensor r = projection_like(y, 7);
  y.backward(r);
  // Central differences in double with step 1e-6: truncation error ~eps^2 * f''' ~ 1e-12 and
  // rounding ~1e-16/eps ~ 1e-10 relative to the projected sum, so 1e-6 abs + 1e-5 rel is a margin
  // of three orders of magnitude while any wrong formula is off by O(1).
  const double atol = 1e-6, rtol = 1e-5;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!c.inputs[i].needs_grad) continue;
    Tensor g = inputs[i].grad();
    ASSERT_TRUE(g.defined()) << c.name << ": no gradient for input " << i;
    ASSERT_EQ(g.shape(), inputs[i].shape());
    double* x = inputs[i].data<double>();
    const double* ga = g.data<double>();
    for (int64_t k = 0; k < inputs[i].numel(); ++k) {
      const double saved = x[k];
      x[k] = saved + c.fd_eps;
      const double fp = projected(c, inputs, r);
      x[k] = saved - c.fd_eps;
      const double fm = projected(c, inputs, r);
      x[k] = saved;
      const double numeric = (fp - fm) / (2 * c.fd_eps);
      ASSERT_NEAR(ga[k], numeric, atol + rtol * std::abs(numeric))
          << c.name << ": input " << i << " element " << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, GradCheck, ::testing::ValuesIn(op_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace cac::testing
