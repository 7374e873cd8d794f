#include "tests/op_cases.h"

#include <cmath>
#include <limits>

#include "core/rng.h"
#include "layers/ops.h"

namespace cac::testing {

namespace {
using V = std::vector<Tensor>;
InputSpec in(Shape s, InputSpec::Kind k = InputSpec::Normal, bool grad = true) {
  return InputSpec{std::move(s), k, grad, 0};
}
InputSpec labels(int64_t B, int64_t K) { return InputSpec{{B}, InputSpec::Labels, false, K}; }

OpCase conv_case(const std::string& name, Shape x, Shape w, bool bias, int stride, int pad) {
  OpCase c;
  c.name = name;
  c.inputs = {in(x), in(w)};
  if (bias) c.inputs.push_back(in({w[0]}));
  c.run = [bias, stride, pad](const V& v) {
    return ops::conv2d(v[0], v[1], bias ? v[2] : Tensor(), stride, pad);
  };
  // Longest sum: weight gradient over batch x output positions, or forward over C*k*k.
  c.reduction_length = std::max<int64_t>(x[0] * x[2] * x[3], w[1] * w[2] * w[3]);
  return c;
}

// BN running statistics are state, not inputs: each run starts them afresh.
Tensor bn_train(const V& v) {
  const int64_t C = v[0].dim(1);
  Tensor rm = Tensor::zeros({C}, v[0].dtype(), v[0].device());
  Tensor rv = Tensor::full({C}, 1.0, v[0].dtype(), v[0].device());
  return ops::batch_norm2d(v[0], v[1], v[2], rm, rv, true);
}
Tensor bn_leaky_train_slope(const V& v, double slope) {
  const int64_t C = v[0].dim(1);
  Tensor rm = Tensor::zeros({C}, v[0].dtype(), v[0].device());
  Tensor rv = Tensor::full({C}, 1.0, v[0].dtype(), v[0].device());
  return ops::batch_norm2d_leaky_relu(v[0], v[1], v[2], rm, rv, true, slope);
}
Tensor bn_leaky_train(const V& v) { return bn_leaky_train_slope(v, 0.2); }
Tensor bn_relu_train(const V& v) { return bn_leaky_train_slope(v, 0.0); }  // ResNet-18's BN + ReLU
Tensor bn_leaky_eval(const V& v) {
  Tensor rm = v[3], rv = v[4];
  return ops::batch_norm2d_leaky_relu(v[0], v[1], v[2], rm, rv, false, 0.2);
}
Tensor bn_eval(const V& v) {
  Tensor rm = v[3], rv = v[4];
  return ops::batch_norm2d(v[0], v[1], v[2], rm, rv, false);
}

std::vector<OpCase> build() {
  std::vector<OpCase> cases;
  cases.push_back(conv_case("conv2d_3x3_s1_p1", {2, 3, 6, 6}, {4, 3, 3, 3}, false, 1, 1));
  cases.push_back(conv_case("conv2d_3x3_s2_p1_bias", {2, 3, 7, 7}, {5, 3, 3, 3}, true, 2, 1));
  cases.push_back(conv_case("conv2d_3x3_s1_p0", {3, 2, 5, 5}, {3, 2, 3, 3}, false, 1, 0));
  cases.push_back(conv_case("conv2d_1x1_s2_bias", {2, 4, 6, 6}, {3, 4, 1, 1}, true, 2, 0));
  cases.push_back(conv_case("conv2d_1x1_s1", {2, 4, 5, 5}, {6, 4, 1, 1}, false, 1, 0));
  // Degenerate geometry: a 1-pixel-wide input under a 3x3 kernel with stride 2 (edge columns).
  cases.push_back(conv_case("conv2d_3x3_s2_narrow", {2, 2, 3, 1}, {2, 2, 3, 3}, false, 2, 1));
  {
    OpCase c{"linear", {in({3, 7}), in({5, 7}), in({5})}, [](const V& v) { return ops::linear(v[0], v[1], v[2]); }, 7};
    cases.push_back(c);
  }
  {
    OpCase c{"batch_norm2d_train", {in({4, 3, 3, 3}), in({3}), in({3})}, bn_train, 36};
    cases.push_back(c);
  }
  {
    OpCase c{"batch_norm2d_eval",
             {in({2, 3, 4, 4}), in({3}), in({3}), in({3}, InputSpec::Normal, false),
              in({3}, InputSpec::Positive, false)},
             bn_eval, 32};
    cases.push_back(c);
  }
  {
    OpCase c{"batch_norm2d_leaky_relu_train", {in({4, 3, 3, 3}), in({3}), in({3})}, bn_leaky_train, 36};
    cases.push_back(c);
    cases.push_back({"batch_norm2d_relu_train", {in({4, 3, 3, 3}), in({3}), in({3})}, bn_relu_train, 36});
  }
  {
    OpCase c{"batch_norm2d_leaky_relu_eval",
             {in({2, 3, 4, 4}), in({3}), in({3}), in({3}, InputSpec::Normal, false),
              in({3}, InputSpec::Positive, false)},
             bn_leaky_eval, 32};
    cases.push_back(c);
  }
  cases.push_back({"leaky_relu", {in({3, 4, 5})}, [](const V& v) { return ops::leaky_relu(v[0], 0.2); }});
  cases.push_back({"relu", {in({3, 4, 5})}, [](const V& v) { return ops::relu(v[0]); }});
  cases.push_back({"dropout2d", {in({4, 6, 3, 3})},
                   [](const V& v) { return ops::dropout2d(v[0], 0.3, true, 1234, 7); }});
  cases.push_back({"flatten", {in({2, 3, 2, 2})}, [](const V& v) { return ops::flatten(v[0]); }});
  cases.push_back({"reshape", {in({2, 6})}, [](const V& v) { return ops::reshape(v[0], {3, 4}); }});
  cases.push_back({"add", {in({2, 3, 4}), in({2, 3, 4})}, [](const V& v) { return ops::add(v[0], v[1]); }});
  cases.push_back({"global_avg_pool", {in({2, 3, 4, 5})},
                   [](const V& v) { return ops::global_avg_pool(v[0]); }, 20});
  cases.push_back({"pairwise_distance", {in({5, 4}), in({3, 4})},
                   [](const V& v) { return ops::pairwise_distance(v[0], v[1]); }, 5});
  cases.push_back({"cross_entropy", {in({4, 5}), labels(4, 5)},
                   [](const V& v) { return ops::cross_entropy(v[0], v[1]); }, 20});
  cases.push_back({"cross_entropy_smoothed", {in({4, 5}), labels(4, 5)},
                   [](const V& v) { return ops::cross_entropy(v[0], v[1], 0.1); }, 20});
  cases.push_back({"cac_head", {in({5, 4}), in({4, 4}), labels(5, 4)},
                   [](const V& v) { return ops::cac_head(v[0], v[1], v[2], 0.1).loss; }, 20});
  // The whole open-set head as the training step uses it: linear -> distance + CAC loss.
  cases.push_back({"head_linear_distance_cac",
                   {in({6, 8}), in({4, 8}), in({4}), in({4, 4}, InputSpec::Normal, false), labels(6, 4)},
                   [](const V& v) {
                     Tensor z = ops::linear(v[0], v[1], v[2]);
                     return ops::cac_head(z, v[3], v[4], 0.1).loss;
                   },
                   24});
  return cases;
}
}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = build();
  return cases;
}

std::vector<Tensor> make_inputs(const OpCase& c, DType dtype, uint64_t seed) {
  Generator gen(seed, 77);
  std::vector<Tensor> out;
  for (const InputSpec& s : c.inputs) {
    const int64_t n = shape_numel(s.shape);
    if (s.kind == InputSpec::Labels) {
      std::vector<int64_t> v(size_t(n), 0);
      for (auto& x : v) x = int64_t(gen.below(uint64_t(s.num_classes)));
      out.push_back(Tensor::from_vector(v, s.shape));
      continue;
    }
    std::vector<double> v(size_t(n), 0.0);
    for (auto& x : v) x = s.kind == InputSpec::Positive ? 0.5 + 2.5 * gen.uniform() : gen.normal();
    Tensor t = Tensor::from_vector(v, s.shape).to(dtype);
    t.set_requires_grad(s.needs_grad);
    out.push_back(t);
  }
  return out;
}

Tensor projection_like(const Tensor& y, uint64_t seed) {
  Generator gen(seed, 99);
  std::vector<double> v(size_t(y.numel()), 0.0);
  for (auto& x : v) x = gen.normal();
  return Tensor::from_vector(v, y.shape()).to(y.dtype()).to(y.device());
}

bool Tolerance::close(double a, double ref) const {
  if (std::isnan(a) || std::isnan(ref)) return false;
  return std::abs(a - ref) <= atol + rtol * std::abs(ref);
}

Tolerance f32_tolerance(int64_t reduction_length) {
  // Rounding error of a length-L float32 sum on random data grows like sqrt(L) * eps (random-walk
  // model; the worst case L * eps needs adversarial data), and both twins use orders (pairwise,
  // tree, blocked GEMM) that do no worse. 8x that is the margin; the atol term covers results that
  // cancel to near zero, where a relative error means nothing. Inputs are O(1) by construction.
  const double eps = std::numeric_limits<float>::epsilon();
  const double L = double(std::max<int64_t>(reduction_length, 1));
  const double tol = 8 * eps * (std::sqrt(L) + 1);
  return {tol, tol};
}

}  // namespace cac::testing
