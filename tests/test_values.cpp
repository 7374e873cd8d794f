// Forward values against independently computed numbers, optimizer and schedule rules, BN running
// statistics, and the error messages of bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>
#include <thread>
#include <vector>
#include <string>

#include "core/autograd.h"
#include "core/block_cache.h"
#include "core/bf16.h"
#include "core/cuda_runtime.h"
#include "core/progress.h"
#include "core/rng.h"
#include "core/parameter_store.h"
#include "kernels/batchnorm.h"
#include "kernels/bf16_copy_math.h"
#include "kernels/batchnorm_nhwc.h"
#include "kernels/batchnorm_paths.h"
#include "kernels/conv.h"
#include "kernels/elementwise.h"
#include "kernels/layout.h"
#include "kernels/losses.h"
#include "layers/module.h"
#include "layers/ops.h"
#include "layers/optim.h"

namespace cac {
namespace {

Tensor f64(std::vector<double> v, Shape s) { return Tensor::from_vector(v, s); }
Tensor i64(std::vector<int64_t> v) {
  Shape s{int64_t(v.size())};
  return Tensor::from_vector(v, s);
}

TEST(Distance, HandComputed) {
  // z = (3, 4) and (0, 0); centres (0, 0) and (3, 0): distances 5, 4 and 0, 3.
  Tensor d = ops::pairwise_distance(f64({3, 4, 0, 0}, {2, 2}), f64({0, 0, 3, 0}, {2, 2}));
  EXPECT_EQ(d.to_vector<double>(), (std::vector<double>{5, 4, 0, 3}));
}

TEST(Distance, GradientIsFiniteAtZeroDistance) {
  Tensor z = f64({1, 2}, {1, 2});
  z.set_requires_grad(true);
  Tensor c = f64({1, 2, 0, 0}, {2, 2});
  ops::pairwise_distance(z, c).backward(f64({1, 1}, {1, 2}));
  for (double g : z.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
  // Only the second centre contributes: (z - c)/|z - c| = (1, 2)/sqrt(5).
  EXPECT_NEAR(z.grad().to_vector<double>()[0], 1 / std::sqrt(5.0), 1e-15);
}

// The CAC loss's CPU twin (the reference of the fused head) on distances given by hand.
std::vector<double> cac_loss_parts(const Tensor& d, const Tensor& labels, double lambda) {
  Tensor out = Tensor::empty({3}, d.dtype());
  kernels::cpu::cac_loss_forward(d, labels, lambda, out);
  return out.to(DType::F64).to_vector<double>();
}

TEST(CacLoss, TwoByThreeByHand) {
  // Row 0: d = (1, 2, 3), y = 0: tuplet = log(1 + e^{-1} + e^{-2}), anchor = 1.
  // Row 1: d = (4, 0.5, 2), y = 2: tuplet = log(1 + e^{2-4} + e^{2-0.5}), anchor = 2.
  const double t0 = std::log(1 + std::exp(-1.0) + std::exp(-2.0));
  const double t1 = std::log(1 + std::exp(-2.0) + std::exp(1.5));
  const std::vector<double> p = cac_loss_parts(f64({1, 2, 3, 4, 0.5, 2}, {2, 3}), i64({0, 2}), 0.1);
  EXPECT_NEAR(p[1], (t0 + t1) / 2, 1e-14);
  EXPECT_NEAR(p[2], 1.5, 1e-14);
  EXPECT_NEAR(p[0], (t0 + t1) / 2 + 0.1 * 1.5, 1e-14);
}

TEST(CacHead, FusedEqualsDistanceThenLoss) {
  Tensor z = f64({3, 4, 0, 0, 1, -2}, {3, 2}), c = f64({0, 0, 3, 0}, {2, 2});
  Tensor y = i64({1, 0, 1});
  auto fused = ops::cac_head(z, c, y, 0.1);
  EXPECT_EQ(fused.parts.to_vector<double>(), cac_loss_parts(ops::pairwise_distance(z, c), y, 0.1));
  EXPECT_EQ(fused.distances.to_vector<double>(), ops::pairwise_distance(z, c).to_vector<double>());
  EXPECT_EQ(fused.loss.item(), fused.parts.to_vector<double>()[0]);
}

TEST(CacLoss, StableAtLargeDistances) {
  Tensor d = f64({100, 250, 400, 1000, 3000, 5000}, {2, 3}), y = i64({1, 0});
  // Row 0: tuplet = log(1 + e^{150} + e^{-150}) ~ 150; row 1: log(1 + e^{-2000} + e^{-4000}) ~ 0.
  EXPECT_NEAR(cac_loss_parts(d, y, 0.1)[1], 75.0, 1e-9);
  Tensor gd = Tensor::empty({2, 3}, DType::F64);
  kernels::cpu::cac_loss_backward(d, y, 0.1, Tensor::full({}, 1.0, DType::F64), gd);
  for (double g : gd.to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
}

TEST(CacLoss, Float32DoesNotOverflow) {
  Tensor d = Tensor::from_vector(std::vector<float>{150, 90, 200, 120}, {2, 2});
  const std::vector<double> p = cac_loss_parts(d, i64({0, 1}), 0.1);
  for (double v : p) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(p[1], 30.0, 1e-4);  // (60 + 0) / 2
}

TEST(CacHead, RejectsBadLabels) {
  Tensor z = f64({1, 2, 3, 4}, {2, 2}), c = f64({0, 0, 1, 1}, {2, 2});
  try {
    ops::cac_head(z, c, i64({0, 5}), 0.1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("label 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::cac_head(z, c, i64({0}), 0.1), Error);
}

// bf16 rounding (issue 25), bit patterns by hand: the kept 16 bits, the dropped 16 deciding.
TEST(Bf16, RoundsToNearestEvenAndKeepsSpecialValues) {
  auto bits = [](uint32_t u) { return bf16_bits(float_of_bits(u)); };
  EXPECT_EQ(bits(0x3f800000u), 0x3f80);  // 1.0
  EXPECT_EQ(bits(0x3f808000u), 0x3f80);  // 1 + 2^-8: half way, the even neighbour (0x3f80)
  EXPECT_EQ(bits(0x3f818000u), 0x3f82);  // half way between 0x3f81 and 0x3f82: the even one
  EXPECT_EQ(bits(0x3f808001u), 0x3f81);  // just above half way: up
  EXPECT_EQ(bits(0x3f807fffu), 0x3f80);  // just below: down
  EXPECT_EQ(bits(0xbf818000u), 0xbf82);  // negative values alike (the sign bit is kept)
  EXPECT_EQ(bits(0x80000000u), 0x8000);  // -0
  EXPECT_EQ(bits(0x7f800000u), 0x7f80);  // +inf
  EXPECT_EQ(bits(0xff800000u), 0xff80);  // -inf
  EXPECT_EQ(bits(0x7f7fffffu), 0x7f80);  // the largest float rounds past the largest bf16: inf
  EXPECT_EQ(bits(0x7f7f7fffu), 0x7f7f);  // below half way to it: the largest bf16, 3.3895e38
  EXPECT_EQ(bits(0x7fc00000u), 0x7fc0);  // a quiet NaN
  EXPECT_EQ(bits(0x7f800001u), 0x7fc0);  // a signalling NaN whose payload sits in the dropped bits:
                                         // still NaN (quiet), never inf
  EXPECT_EQ(bits(0xffc12345u), 0xffc1);  // a negative NaN keeps its sign and top payload
  EXPECT_EQ(bits(0x00010000u), 0x0001);  // the smallest bf16 subnormal
  EXPECT_EQ(bits(0x00008000u), 0x0000);  // half of it: ties to even (0)
  EXPECT_EQ(bits(0x00018000u), 0x0002);  // one and a half: ties to even (2)
  EXPECT_EQ(bits(0x007fffffu), 0x0080);  // the largest float subnormal rounds up to the smallest normal
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(round_bf16(3.14159265f), 3.140625f);  // 0x40490fdb -> 0x4049
  EXPECT_TRUE(std::isnan(round_bf16(std::nanf(""))));
}

TEST(CrossEntropy, HandComputed) {
  // logits (0, ln 3): softmax (1/4, 3/4); label 1 -> -ln(3/4).
  Tensor l = ops::cross_entropy(f64({0, std::log(3.0)}, {1, 2}), i64({1}));
  EXPECT_NEAR(l.item(), -std::log(0.75), 1e-15);
}

TEST(CrossEntropy, LabelSmoothingHandComputed) {
  // eps = 0.1, K = 2: target (0.05, 0.95); loss = -0.05 ln(1/4) - 0.95 ln(3/4).
  Tensor z = f64({0, std::log(3.0)}, {1, 2});
  z.set_requires_grad(true);
  Tensor l = ops::cross_entropy(z, i64({1}), 0.1);
  EXPECT_NEAR(l.item(), -0.05 * std::log(0.25) - 0.95 * std::log(0.75), 1e-15);
  // Gradient: softmax - target = (1/4 - 0.05, 3/4 - 0.95).
  l.backward();
  const std::vector<double> g = z.grad().to_vector<double>();
  EXPECT_NEAR(g[0], 0.20, 1e-15);
  EXPECT_NEAR(g[1], -0.20, 1e-15);
  EXPECT_THROW(ops::cross_entropy(z, i64({1}), 1.0), Error);
}

TEST(OpenSetScore, HandComputed) {
  // d = (1, 2): softmin = (e^-1, e^-2)/(e^-1 + e^-2); gamma_j = d_j (1 - softmin_j).
  Tensor g = ops::open_set_score(f64({1, 2}, {1, 2}));
  const double s0 = std::exp(-1.0) / (std::exp(-1.0) + std::exp(-2.0));
  std::vector<double> v = g.to_vector<double>();
  EXPECT_NEAR(v[0], 1 * (1 - s0), 1e-15);
  EXPECT_NEAR(v[1], 2 * s0, 1e-15);
}

TEST(ArgMinMax, FirstIndexWinsTies) {
  Tensor x = f64({3, 1, 1, 5, 5, 2}, {2, 3});
  EXPECT_EQ(ops::argmin(x).to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(ops::argmax(x).to_vector<int64_t>(), (std::vector<int64_t>{0, 0}));
}

TEST(BatchNorm, RunningStatisticsFollowPyTorch) {
  // One channel, values 1..4 then 2, 4, 6, 8 (as [4,1,1,1]).
  BatchNorm2d bn(1);
  bn.to(DType::F64);
  double rm = 0, rv = 1;
  const std::vector<std::vector<double>> batches = {{1, 2, 3, 4}, {2, 4, 6, 8}, {-1, 0, 1, 5}};
  for (const auto& b : batches) {
    Tensor y = bn.forward(f64(b, {4, 1, 1, 1}));
    double mean = 0, sq = 0;
    for (double v : b) mean += v / 4;
    for (double v : b) sq += (v - mean) * (v - mean);
    rm = 0.9 * rm + 0.1 * mean;
    rv = 0.9 * rv + 0.1 * sq / 3;  // unbiased for the running variance
    // ... and the biased variance for normalising.
    EXPECT_NEAR(y.to_vector<double>()[0], (b[0] - mean) / std::sqrt(sq / 4 + 1e-5), 1e-12);
  }
  EXPECT_NEAR(bn.running_mean.item(), rm, 1e-14);
  EXPECT_NEAR(bn.running_var.item(), rv, 1e-14);
  EXPECT_EQ(bn.num_batches_tracked.item(), 3);
  bn.eval();
  Tensor y = bn.forward(f64({1, 2, 3, 4}, {4, 1, 1, 1}));
  EXPECT_NEAR(y.to_vector<double>()[0], (1 - rm) / std::sqrt(rv + 1e-5), 1e-12);
  EXPECT_EQ(bn.num_batches_tracked.item(), 3);
}

TEST(BatchNorm, FusedLeakyReluMatchesTheUnfusedPair) {
  Generator gen(3);
  std::vector<double> xv(4 * 3 * 5 * 5), gv(xv.size());
  for (auto& v : xv) v = gen.normal();
  for (auto& v : gv) v = gen.normal();
  for (bool training : {true, false}) {
    Tensor x1 = f64(xv, {4, 3, 5, 5}), x2 = f64(xv, {4, 3, 5, 5});
    x1.set_requires_grad(true);
    x2.set_requires_grad(true);
    BatchNorm2d a(3), b(3);
    a.to(DType::F64);
    b.to(DType::F64);
    a.train(training);
    b.train(training);
    Tensor y1 = ops::leaky_relu(a.forward(x1), 0.2);
    Tensor y2 = b.forward_leaky_relu(x2, 0.2);
    y1.backward(f64(gv, {4, 3, 5, 5}));
    y2.backward(f64(gv, {4, 3, 5, 5}));
    auto v1 = y1.to_vector<double>(), v2 = y2.to_vector<double>();
    auto g1 = x1.grad().to_vector<double>(), g2 = x2.grad().to_vector<double>();
    for (size_t i = 0; i < v1.size(); ++i) {
      EXPECT_NEAR(v1[i], v2[i], 1e-14);
      EXPECT_NEAR(g1[i], g2[i], 1e-13);
    }
    auto gw1 = a.weight.grad().to_vector<double>(), gw2 = b.weight.grad().to_vector<double>();
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(gw1[i], gw2[i], 1e-12);
    EXPECT_EQ(a.running_var.to_vector<double>(), b.running_var.to_vector<double>());
  }
}

// The channels-last bf16 batch norm's CPU twin (issue 25) against the float32 NCHW twin (itself
// checked against PyTorch's rule and by finite differences): on the same bf16-valued inputs, its
// statistics are the float32 twin's (both sum in double) and each output is the float32 output
// rounded to bf16 once: within one bf16 step of it (2^-7 relative; the two evaluate the affine with
// and without a fused multiply-add, which can move a value across a rounding boundary), plus, for
// gx, 2^-12 of its largest value where a small result is the difference of larger terms.
TEST(BatchNormNhwc, Bf16TwinIsTheFloat32TwinRoundedOnce) {
  const int64_t N = 3, H = 5, W = 4;
  for (int64_t C : {6, 5})
    for (bool leaky : {true, false}) {
      SCOPED_TRACE("C " + std::to_string(C) + (leaky ? " leaky" : ""));
      Generator gen(uint64_t(C) * 2 + leaky);
      auto bf16_values = [&](int64_t n, double mean) {
        std::vector<float> v(static_cast<size_t>(n));
        for (auto& e : v) e = round_bf16(float(mean + gen.normal()));
        return v;
      };
      const std::vector<float> xv = bf16_values(N * H * W * C, 0.7), gv = bf16_values(N * H * W * C, 0.0);
      auto nhwc = [&](const std::vector<float>& v) { return Tensor::from_vector(v, {N, H, W, C}).to(DType::BF16); };
      auto nchw = [&](const std::vector<float>& v) {  // the same values in NCHW order
        std::vector<float> o(v.size());
        for (int64_t n = 0; n < N; ++n)
          for (int64_t i = 0; i < H * W; ++i)
            for (int64_t c = 0; c < C; ++c) o[size_t((n * C + c) * H * W + i)] = v[size_t((n * H * W + i) * C + c)];
        return Tensor::from_vector(o, {N, C, H, W});
      };
      auto channel = [&](double base) {
        std::vector<float> v(static_cast<size_t>(C));
        for (auto& e : v) e = float(base + 0.3 * gen.normal());
        return Tensor::from_vector(v, {C});
      };
      const Tensor gamma = channel(1.0), beta = channel(0.1);
      const kernels::BnActivation act{leaky, 0.2};
      Tensor rm16 = Tensor::zeros({C}), rv16 = Tensor::full({C}, 1.0), rm32 = rm16.clone(), rv32 = rv16.clone();
      Tensor y16 = Tensor::empty({N, H, W, C}, DType::BF16), y32 = Tensor::empty({N, C, H, W});
      Tensor m16 = Tensor::empty({C}), i16 = Tensor::empty({C}), m32 = Tensor::empty({C}), i32 = Tensor::empty({C});
      const Tensor x16 = nhwc(xv), x32 = nchw(xv);
      kernels::batchnorm_nhwc_forward_train(x16, gamma, beta, rm16, rv16, 0.1, 1e-5, act, y16, m16, i16);
      kernels::batchnorm_forward_train(x32, gamma, beta, rm32, rv32, 0.1, 1e-5, act, y32, m32, i32);
      for (const auto& [a, b] : {std::pair<Tensor, Tensor>{m16, m32}, {i16, i32}, {rm16, rm32}, {rv16, rv32}}) {
        const std::vector<float> u = a.to_vector<float>(), v = b.to_vector<float>();
        for (size_t c = 0; c < u.size(); ++c) EXPECT_NEAR(u[c], v[c], 1e-6 * std::abs(v[c]) + 1e-7) << c;
      }
      auto within = [&](const Tensor& got16, const Tensor& ref32, double floor, const char* what) {
        const std::vector<float> got = nchw(got16.to(DType::F32).to_vector<float>()).to_vector<float>();
        const std::vector<float> ref = ref32.to_vector<float>();
        double largest = 0;
        for (float r : ref) largest = std::max(largest, double(std::abs(r)));
        int bad = 0;
        for (size_t i = 0; i < ref.size(); ++i)
          bad += std::abs(got[i] - ref[i]) > std::ldexp(std::abs(ref[i]), -7) + floor * largest;
        EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << ref.size();
      };
      within(y16, y32, 0, "y");
      Tensor gx16 = Tensor::empty({N, H, W, C}, DType::BF16), gx32 = Tensor::empty({N, C, H, W});
      Tensor gg16 = Tensor::empty({C}), gb16 = Tensor::empty({C}), gg32 = Tensor::empty({C}), gb32 = Tensor::empty({C});
      kernels::batchnorm_nhwc_backward(x16, gamma, beta, m16, i16, nhwc(gv), act, gx16, gg16, gb16);
      kernels::batchnorm_backward(x32, gamma, beta, m32, i32, nchw(gv), act, true, &gx32, gg32, gb32);
      within(gx16, gx32, std::ldexp(1.0, -12), "gx");
      for (const auto& [a, b] : {std::pair<Tensor, Tensor>{gg16, gg32}, {gb16, gb32}}) {
        const std::vector<float> u = a.to_vector<float>(), v = b.to_vector<float>();
        for (size_t c = 0; c < u.size(); ++c) EXPECT_NEAR(u[c], v[c], 1e-5 * (std::abs(v[c]) + 1)) << c;
      }
    }
  Tensor x = Tensor::empty({2, 2, 2, 4}, DType::BF16), y = Tensor::empty({2, 2, 2, 4}, DType::BF16), c4 = Tensor::zeros({4});
  Tensor c3 = Tensor::zeros({3}), m = Tensor::zeros({4}), s = Tensor::zeros({4});
  EXPECT_THROW(kernels::batchnorm_nhwc_forward_train(x, c3, c4, m, s, 0.1, 1e-5, {}, y, m, s), Error);
  Tensor yf = Tensor::empty({2, 2, 2, 4});
  EXPECT_THROW(kernels::batchnorm_nhwc_forward_train(x, c4, c4, m, s, 0.1, 1e-5, {}, yf, m, s), Error);
}

// bf16 channels-last convolutions (issue 25) against a direct convolution written here in double
// over the channels-last indices: forward, input gradient and weight gradient each within one bf16
// step (2^-7 relative; the twin sums in float32, which can move a value across a rounding
// boundary) plus 2^-12 of the largest value (results that cancel towards zero).
TEST(Conv2d, Bf16ChannelsLastMatchesADirectConvolution) {
  const int N = 2, H = 5, W = 6, C = 3, O = 4, K = 3, S = 2, P = 1, HO = (H + 2 * P - K) / S + 1, WO = (W + 2 * P - K) / S + 1;
  Generator gen(17);
  auto values = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& e : v) e = round_bf16(float(gen.normal()));
    return v;
  };
  const std::vector<float> xv = values(N * H * W * C), wv = values(O * K * K * C), gv = values(N * HO * WO * O);
  auto X = [&](int n, int h, int w, int c) { return double(xv[size_t(((n * H + h) * W + w) * C + c)]); };
  auto Wt = [&](int o, int i, int j, int c) { return double(wv[size_t(((o * K + i) * K + j) * C + c)]); };
  auto G = [&](int n, int h, int w, int o) { return double(gv[size_t(((n * HO + h) * WO + w) * O + o)]); };
  std::vector<double> y(size_t(N * HO * WO * O), 0.0), gx(xv.size(), 0.0), gw(wv.size(), 0.0);
  for (int n = 0; n < N; ++n)
    for (int a = 0; a < HO; ++a)
      for (int b = 0; b < WO; ++b)
        for (int o = 0; o < O; ++o)
          for (int i = 0; i < K; ++i)
            for (int j = 0; j < K; ++j)
              for (int c = 0; c < C; ++c) {
                const int h = a * S - P + i, w = b * S - P + j;
                if (h < 0 || h >= H || w < 0 || w >= W) continue;
                y[size_t(((n * HO + a) * WO + b) * O + o)] += X(n, h, w, c) * Wt(o, i, j, c);
                gx[size_t(((n * H + h) * W + w) * C + c)] += G(n, a, b, o) * Wt(o, i, j, c);
                gw[size_t(((o * K + i) * K + j) * C + c)] += G(n, a, b, o) * X(n, h, w, c);
              }
  auto bf = [](const std::vector<float>& v, Shape s) { return Tensor::from_vector(v, s).to(DType::BF16); };
  const Tensor x = bf(xv, {N, H, W, C}), w = bf(wv, {O, K, K, C}), gy = bf(gv, {N, HO, WO, O});
  Tensor y16 = Tensor::empty({N, HO, WO, O}, DType::BF16), gx16 = Tensor::empty(x.shape(), DType::BF16),
         gw16 = Tensor::empty(w.shape(), DType::BF16);
  kernels::conv2d_forward(x, w, Tensor(), {S, P}, y16);
  kernels::conv2d_backward(x, w, gy, {S, P}, &gx16, &gw16, nullptr);
  auto expect_within = [](const Tensor& got, const std::vector<double>& ref, const char* what) {
    const std::vector<float> g = got.to(DType::F32).to_vector<float>();
    double largest = 0;
    for (double r : ref) largest = std::max(largest, std::abs(r));
    ASSERT_GT(largest, 0) << what;
    for (size_t i = 0; i < ref.size(); ++i)
      EXPECT_LE(std::abs(g[i] - ref[i]), std::ldexp(std::abs(ref[i]), -7) + std::ldexp(largest, -12)) << what << " " << i;
  };
  expect_within(y16, y, "y");
  expect_within(gx16, gx, "gx");
  expect_within(gw16, gw, "gw");
  Tensor bias = Tensor::zeros({O});
  EXPECT_THROW(kernels::conv2d_forward(x, w, bias, {S, P}, y16), Error);
  Tensor y32 = Tensor::empty({N, HO, WO, O});
  EXPECT_THROW(kernels::conv2d_forward(x, w, Tensor(), {S, P}, y32), Error);
}

// The mixed-precision ops wired through autograd (issue 25): two conv + batch norm + LeakyReLU
// blocks run in float32 NCHW and in bf16 channels-last (weights converted by to_channels_last_bf16,
// the output back by to_nchw_f32) agree in output, gradients of every float32 parameter and running
// statistics to within bf16 precision carried through the blocks: the largest difference relative
// to each tensor's largest value (printed) must stay under 5e-2 (1.2e-2 at most when written; a
// layout mix-up or a lost gradient is off by the values' own size). Eval mode runs without
// gradients and matches too.
TEST(MixedPrecision, Bf16ChannelsLastBlocksMatchFloat32) {
  Generator gen(23);
  auto randn = [&](const Shape& s, double scale = 1.0) {
    std::vector<float> v(static_cast<size_t>(shape_numel(s)));
    for (auto& e : v) e = float(scale * gen.normal());
    Tensor t = Tensor::from_vector(v, s);
    return t;
  };
  const Tensor x = randn({4, 3, 8, 8}), seed = randn({4, 8, 4, 4});
  const Tensor w1v = randn({8, 3, 3, 3}, 0.3), w2v = randn({8, 8, 3, 3}, 0.15), gv = randn({8}, 0.1), bv = randn({8}, 0.1);
  struct Params {
    Tensor w1, w2, g1, b1, g2, b2, rm1, rv1, rm2, rv2;
  };
  auto params = [&] {
    Params p{w1v.clone(), w2v.clone(), gv.clone(), bv.clone(), gv.clone(), bv.clone(), Tensor::zeros({8}),
             Tensor::full({8}, 1.0), Tensor::zeros({8}), Tensor::full({8}, 1.0)};
    for (Tensor* t : {&p.w1, &p.w2, &p.g1, &p.b1, &p.g2, &p.b2}) t->set_requires_grad(true);
    return p;
  };
  auto blocks = [](Params& p, const Tensor& in, bool bf16, bool training) {
    auto w = [&](const Tensor& t) { return bf16 ? ops::to_channels_last_bf16(t) : t; };
    Tensor h = bf16 ? ops::to_channels_last_bf16(in) : in;
    h = ops::batch_norm2d_leaky_relu(ops::conv2d(h, w(p.w1), Tensor(), 1, 1), p.g1, p.b1, p.rm1, p.rv1, training, 0.2);
    h = ops::batch_norm2d_leaky_relu(ops::conv2d(h, w(p.w2), Tensor(), 2, 1), p.g2, p.b2, p.rm2, p.rv2, training, 0.2);
    return bf16 ? ops::to_nchw_f32(h) : h;
  };
  Params f = params(), b = params();
  const Tensor yf = blocks(f, x, false, true), yb = blocks(b, x, true, true);
  yf.backward(seed);
  yb.backward(seed);
  auto compare = [&](const Tensor& got, const Tensor& ref, const std::string& what) {
    const std::vector<float> g = got.to_vector<float>(), r = ref.to_vector<float>();
    double largest = 0, diff = 0;
    for (size_t i = 0; i < r.size(); ++i) largest = std::max(largest, double(std::abs(r[i])));
    for (size_t i = 0; i < r.size(); ++i) diff = std::max(diff, double(std::abs(g[i] - r[i])));
    std::printf("%-14s max |bf16 - f32| / max |f32| = %.2e\n", what.c_str(), diff / largest);
    EXPECT_LE(diff, 0.05 * largest) << what;
  };
  compare(yb, yf, "output");
  compare(b.w1.grad(), f.w1.grad(), "w1 grad");
  compare(b.w2.grad(), f.w2.grad(), "w2 grad");
  for (const auto& [name, pb, pf] : {std::tuple<const char*, Tensor*, Tensor*>{"gamma1 grad", &b.g1, &f.g1},
                                     {"beta1 grad", &b.b1, &f.b1}, {"gamma2 grad", &b.g2, &f.g2},
                                     {"beta2 grad", &b.b2, &f.b2}})
    compare(pb->grad(), pf->grad(), name);
  compare(b.rm2, f.rm2, "running mean");
  compare(b.rv2, f.rv2, "running var");
  NoGradGuard no_grad;
  compare(blocks(b, x, true, false), blocks(f, x, false, false), "eval output");
}

// Dropout on bf16 channels-last activations drops the channels the float32 op drops (the same draw
// per (image, channel)), its output the float32 output rounded once, its gradient likewise; the
// counter read from a tensor works as in float32.
TEST(MixedPrecision, Bf16DropoutDropsTheSameChannels) {
  Generator gen(29);
  std::vector<float> v(4 * 6 * 3 * 5);
  for (auto& e : v) e = round_bf16(float(gen.normal()));
  Tensor x = Tensor::from_vector(v, {4, 6, 3, 5});
  const Tensor at = Tensor::from_vector(std::vector<int64_t>{4}, {});
  const Tensor want = ops::dropout2d(x, 0.4, true, 77, 9);
  x.set_requires_grad(true);
  const Tensor got = ops::to_nchw_f32(ops::dropout2d(ops::to_channels_last_bf16(x), 0.4, true, 77, 5, &at));
  const std::vector<float> w = want.to_vector<float>(), g = got.to_vector<float>();
  int dropped = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(g[i], round_bf16(w[i])) << i;
    dropped += w[i] == 0 && v[i] != 0;
  }
  EXPECT_GT(dropped, 0);
  got.backward(Tensor::full({4, 6, 3, 5}, 1.0));
  const std::vector<float> grad = x.grad().to_vector<float>();
  for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(grad[i], (w[i] == 0 && v[i] != 0) ? 0.f : round_bf16(float(1 / 0.6)));
}

// ResNet-18's bf16 elementwise ops by hand (issue 25): float32 arithmetic on the bf16 values, one
// rounding to nearest-even (bf16 steps of 2^-7 above 1): 1 + 2^-8, a tie, goes to the even 1;
// 1 + 3 * 2^-8, a tie, to the even 1 + 2^-6; the same for gradients meeting at a shortcut.
TEST(MixedPrecision, Bf16ElementwiseRoundsOnceByHand) {
  auto bf = [](std::vector<float> v) { return Tensor::from_vector(v, {int64_t(v.size())}).to(DType::BF16); };
  auto back = [](const Tensor& t) { return t.to(DType::F32).to_vector<float>(); };
  const Tensor a = bf({1.0f, 1.0f, -2.0f, 3.0f}), b = bf({0.00390625f, 0.01171875f, 0.5f, -3.0f});
  Tensor y = Tensor::empty({4}, DType::BF16);
  kernels::add_forward(a, b, y);
  EXPECT_EQ(back(y), (std::vector<float>{1.0f, 1.015625f, -1.5f, 0.0f}));
  y = Tensor::empty({3}, DType::BF16);
  kernels::leaky_relu_forward(bf({-1.0f, 2.0f, -3.0f}), 0.2, y);
  EXPECT_EQ(back(y), (std::vector<float>{round_bf16(-0.2f), 2.0f, round_bf16(-0.6f)}));
  kernels::leaky_relu_backward(bf({-1.0f, 2.0f, 0.0f}), bf({1.0f, 1.0f, 1.0f}), 0.2, y);
  EXPECT_EQ(back(y), (std::vector<float>{round_bf16(0.2f), 1.0f, round_bf16(0.2f)}));
  Tensor acc = bf({1.0f, 256.0f});
  acc.accumulate_(bf({0.00390625f, 1.0f}));  // 257 is a tie between 256 and 258: the even 256
  EXPECT_EQ(back(acc), (std::vector<float>{1.0f, 256.0f}));
}

// The mixed-precision stack's edges (issue 25): NCHW float32 to channels-last bf16 by hand (order
// and the one rounding: 6 + 2^-7 is nearer 6 than the next bf16, 6.03125), and back exactly.
TEST(Layout, ChannelsLastBf16AndBackByHand) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6.0078125f}, {1, 2, 1, 3});
  Tensor y = Tensor::empty({1, 1, 3, 2}, DType::BF16);
  kernels::nchw_to_nhwc_bf16(x, y);
  EXPECT_EQ(y.to(DType::F32).to_vector<float>(), (std::vector<float>{1, 4, 2, 5, 3, 6}));
  Tensor back = Tensor::empty({1, 2, 1, 3});
  kernels::nhwc_bf16_to_nchw(y, back);
  EXPECT_EQ(back.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  Tensor wrong = Tensor::empty({1, 1, 2, 3}, DType::BF16);
  EXPECT_THROW(kernels::nchw_to_nhwc_bf16(x, wrong), Error);
  Tensor f32 = Tensor::empty({1, 1, 3, 2});
  EXPECT_THROW(kernels::nchw_to_nhwc_bf16(x, f32), Error);
}

TEST(Dropout2d, DropsWholeChannelsAndScales) {
  Tensor x = Tensor::full({8, 16, 2, 2}, 1.0, DType::F64);
  Tensor y = ops::dropout2d(x, 0.25, true, 42, 0);
  std::vector<double> v = y.to_vector<double>();
  int dropped = 0;
  for (int p = 0; p < 8 * 16; ++p) {
    for (int k = 1; k < 4; ++k) EXPECT_EQ(v[size_t(p * 4 + k)], v[size_t(p * 4)]);
    EXPECT_TRUE(v[size_t(p * 4)] == 0 || std::abs(v[size_t(p * 4)] - 1 / 0.75) < 1e-15);
    dropped += v[size_t(p * 4)] == 0;
  }
  EXPECT_GT(dropped, 10);  // 128 channels at p = 0.25: 32 expected; 10 is > 4 sigma below
  EXPECT_LT(dropped, 60);
  EXPECT_EQ(ops::dropout2d(x, 0.25, false, 42, 0).impl(), x.impl());  // eval: identity
  // Same seed and counter, same mask; next counter, a different one.
  EXPECT_EQ(ops::dropout2d(x, 0.25, true, 42, 0).to_vector<double>(), v);
  EXPECT_NE(ops::dropout2d(x, 0.25, true, 42, 1).to_vector<double>(), v);
}

// The counter a recorded step reads where it lives: counter + *counter_at draws the same mask as
// that counter given directly, and count_up advances it in place.
TEST(Dropout2d, CounterReadFromATensorDrawsTheSameMasks) {
  Tensor x = Tensor::full({4, 8, 2, 2}, 1.0, DType::F64);
  Tensor at = Tensor::from_vector(std::vector<int64_t>{5}, {});
  EXPECT_EQ(ops::dropout2d(x, 0.5, true, 42, 2, &at).to_vector<double>(),
            ops::dropout2d(x, 0.5, true, 42, 7).to_vector<double>());
  const void* where = at.raw();
  kernels::count_up(at);
  EXPECT_EQ(at.item(), 6);
  EXPECT_EQ(at.raw(), where);
  Tensor f = Tensor::zeros({}, DType::F32);
  EXPECT_THROW(kernels::count_up(f), Error);
  EXPECT_THROW(ops::dropout2d(x, 0.5, true, 42, 2, &f), Error);
}

// A layer counting on the device (here the CPU stands in for it) draws the masks it would have drawn
// counting on the host, and its host count (the resume state) keeps up.
TEST(Dropout2d, CountingOnTheDeviceDrawsTheSameSequence) {
  Tensor x = Tensor::full({4, 8, 1, 1}, 1.0, DType::F64);
  Dropout2d host(0.5, 9), device(0.5, 9);
  device.count_on_device(Device::CPU);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(host.forward(x).to_vector<double>(), device.forward(x).to_vector<double>());
  EXPECT_EQ(device.resume_state()[0].second.item(), 3);
  device.stop_counting_on_device();
  EXPECT_EQ(host.forward(x).to_vector<double>(), device.forward(x).to_vector<double>());
  EXPECT_EQ(device.resume_state()[0].second.item(), 4);
}

// The rate set once holds for later steps; a new rate reaches the next step; resetting momentum
// keeps the buffer where a recorded step writes it.
TEST(SGD, RateLivesBesideTheSlabAndMomentumResetsInPlace) {
  Tensor w = f64({1.0}, {1});
  w.set_requires_grad(true);
  ParameterStore store({w});
  SGD sgd(store, 0.9, 0.0);
  EXPECT_THROW(sgd.step(), Error);
  sgd.set_lr(0.5);
  const double steps[3][2] = {{0.5, 1.0 - 0.5}, {0.5, 0.5 - 0.5 * 1.9}, {0.1, 0.5 - 0.95 - 0.1 * (0.9 * 1.9 + 1)}};
  for (const auto& s : steps) {
    sgd.zero_grad();
    ops::reshape(w, {1}).backward(f64({1.0}, {1}));
    sgd.set_lr(s[0]);
    sgd.step();
    EXPECT_NEAR(w.to_vector<double>()[0], s[1], 1e-15);
  }
  const void* buf = sgd.momentum_buffer().raw();
  sgd.reset_momentum();
  EXPECT_EQ(sgd.momentum_buffer().raw(), buf);
  for (double v : sgd.momentum_buffer().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

// Mixed precision's master weights (issue 25): the slab stays float32; the bf16 copy is made when
// asked for and by every step, each value the updated float rounded to nearest-even (by hand here:
// 1 - 2^-10, which float32 keeps, is nearer 1 than the bf16 below it, 1 - 2^-8).
TEST(SGD, KeepsABf16CopyOfTheUpdatedSlab) {
  Tensor w = Tensor::from_vector(std::vector<float>{1.0f, 3.14159265f}, {2});
  w.set_requires_grad(true);
  ParameterStore store({w});
  SGD sgd(store, 0.0, 0.0);
  EXPECT_FALSE(sgd.bf16_copy().defined());
  sgd.keep_bf16_copy();
  ASSERT_EQ(sgd.bf16_copy().dtype(), DType::BF16);
  EXPECT_EQ(sgd.bf16_copy().to(DType::F32).to_vector<float>()[1], 3.140625f);
  sgd.zero_grad();
  ops::reshape(w, {2}).backward(Tensor::from_vector(std::vector<float>{1.0f / 512, -1.0f}, {2}));
  sgd.step(0.5);
  const std::vector<float> master = w.to_vector<float>(), copy = sgd.bf16_copy().to(DType::F32).to_vector<float>();
  EXPECT_EQ(master[0], 1.0f - 1.0f / 1024);  // float32 keeps it
  EXPECT_EQ(copy[0], 1.0f);                   // bf16 rounds it to 1
  EXPECT_EQ(master[1], 3.64159265f);
  EXPECT_EQ(copy[1], round_bf16(3.64159265f));
  for (size_t i = 0; i < master.size(); ++i) EXPECT_EQ(copy[i], round_bf16(master[i]));
  const Tensor from_f64 = Tensor::from_vector(std::vector<double>{0.1, -1e40}, {2});
  kernels::Bf16Copy y = kernels::make_bf16_copy(from_f64, {});
  kernels::write_bf16_copy(from_f64, y);
  EXPECT_EQ(y.copy.to(DType::F32).to_vector<float>(), (std::vector<float>{round_bf16(0.1f), -INFINITY}));
  kernels::Bf16Copy wrong = y;
  wrong.copy = Tensor::empty({3}, DType::BF16);
  EXPECT_THROW(kernels::write_bf16_copy(w, wrong), Error);
}

// The copy places a listed convolution weight [K, C, R, S] channels-last, [K, R, S, C], and every
// other parameter as it is, at the parameter's slab offset: made when kept (by hand: element
// (k, c, r, s) holds 64k + 16c + 4r + s, integers below 256 that bf16 keeps exactly) and by each
// step (against the updated master, rounded and laid out alike).
TEST(SGD, Bf16CopyLaysConvolutionWeightsChannelsLast) {
  std::vector<float> wv;
  for (int k = 0; k < 2; ++k)
    for (int c = 0; c < 3; ++c)
      for (int r = 0; r < 2; ++r)
        for (int s = 0; s < 2; ++s) wv.push_back(float(64 * k + 16 * c + 4 * r + s));  // < 256: exact in bf16
  Tensor bias = Tensor::from_vector(std::vector<float>{0.5f, -2.0f, 3.0f}, {3});
  Tensor w = Tensor::from_vector(wv, {2, 3, 2, 2});
  Tensor other = Tensor::from_vector(std::vector<float>(8, 1.0f), {1, 2, 2, 2});  // 4-D, not listed
  for (Tensor* t : {&bias, &w, &other}) t->set_requires_grad(true);
  ParameterStore store({bias, w, other});
  EXPECT_EQ(store.offset_of(w), ParameterStore::kAlignElems);
  EXPECT_THROW(store.offset_of(Tensor::zeros({3})), Error);
  SGD sgd(store, 0.0, 0.0);
  sgd.keep_bf16_copy({w});
  const Tensor cw = sgd.bf16_copy_of(w);
  ASSERT_EQ(cw.shape(), Shape({2, 2, 2, 3}));
  EXPECT_EQ(sgd.bf16_copy_of(other).shape(), other.shape());
  const Tensor cw_f = cw.to(DType::F32);
  for (int k = 0; k < 2; ++k)
    for (int r = 0; r < 2; ++r)
      for (int s = 0; s < 2; ++s)
        for (int c = 0; c < 3; ++c)
          EXPECT_EQ(cw_f.data<float>()[((k * 2 + r) * 2 + s) * 3 + c], float(64 * k + 16 * c + 4 * r + s));
  EXPECT_EQ(sgd.bf16_copy_of(bias).to(DType::F32).to_vector<float>(), bias.to_vector<float>());
  // A step: the copy is the updated master, rounded and laid out the same way.
  sgd.zero_grad();
  for (Tensor* t : {&bias, &w, &other}) t->grad().copy_from(Tensor::full(t->shape(), 1.0 / 3));
  sgd.step(1.0);
  const Tensor master_cl = ops::to_channels_last_bf16(w.detach()).to(DType::F32);
  EXPECT_EQ(sgd.bf16_copy_of(w).to(DType::F32).to_vector<float>(), master_cl.to_vector<float>());
  for (const Tensor& t : {bias, other}) {
    std::vector<float> want = t.to_vector<float>();
    for (float& v : want) v = round_bf16(v);
    EXPECT_EQ(sgd.bf16_copy_of(t).to(DType::F32).to_vector<float>(), want);
  }
  EXPECT_THROW(sgd.keep_bf16_copy({bias}), Error);  // not [K, C, R, S]
}

// The copy's index map by hand, and the blocks make_bf16_copy refuses.
TEST(SGD, Bf16CopyIndexByHandAndBadBlocksRefused) {
  const int64_t table[] = {4, 2, 3, 2, 20, 1, 2, 2};  // [2, 3, 2] at 4; [1, 2, 2] at 20
  // Block one, element (o, r, c) = (1, 2, 0) at 4 + 6 + 4 = 14, goes to 4 + 6 + 0 * 3 + 2 = 12.
  EXPECT_EQ(kernels::bf16_copy_index(14, table, 2), 12);
  EXPECT_EQ(kernels::bf16_copy_index(5, table, 2), 4 + 3);   // (0, 0, 1) -> (0, 1, 0): one column of 3 rows on
  EXPECT_EQ(kernels::bf16_copy_index(3, table, 2), 3);       // before any block
  EXPECT_EQ(kernels::bf16_copy_index(17, table, 2), 17);     // between the blocks
  EXPECT_EQ(kernels::bf16_copy_index(21, table, 2), 20 + 2);  // (0, 0, 1) -> (0, 1, 0) in block two (2 rows)
  EXPECT_EQ(kernels::bf16_copy_index(24, table, 2), 24);     // after both
  const Tensor slab = Tensor::zeros({30});
  EXPECT_NO_THROW(kernels::make_bf16_copy(slab, {{4, 2, 3, 2}, {20, 1, 2, 2}}));
  EXPECT_THROW(kernels::make_bf16_copy(slab, {{4, 2, 3, 2}, {10, 1, 2, 2}}), Error);  // overlap
  EXPECT_THROW(kernels::make_bf16_copy(slab, {{28, 1, 2, 2}}), Error);                // past the end
  EXPECT_THROW(kernels::make_bf16_copy(slab, {{0, 0, 2, 2}}), Error);                 // empty
}

TEST(SGD, ThreeStepsFollowTheUpdateRule) {
  Tensor w = f64({1.0, -2.0, 0.5}, {3});
  w.set_requires_grad(true);
  ParameterStore store({w});
  SGD sgd(store, 0.9, 0.01);
  const std::vector<std::vector<double>> grads = {{0.1, 0.2, -0.3}, {0.0, 1.0, 0.5}, {-0.4, 0.3, 0.2}};
  std::vector<double> p = {1.0, -2.0, 0.5}, buf = {0, 0, 0};
  const double lrs[3] = {0.1, 0.1, 0.01};
  for (int s = 0; s < 3; ++s) {
    sgd.zero_grad();
    ops::reshape(w, {3}).backward(f64(grads[size_t(s)], {3}));  // grad = given vector
    sgd.step(lrs[s]);
    for (int i = 0; i < 3; ++i) {
      const double g = grads[size_t(s)][size_t(i)] + 0.01 * p[size_t(i)];
      buf[size_t(i)] = s == 0 ? g : 0.9 * buf[size_t(i)] + g;  // PyTorch: first step buf = g
      p[size_t(i)] -= lrs[s] * buf[size_t(i)];
    }
  }
  std::vector<double> got = w.to_vector<double>();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(got[size_t(i)], p[size_t(i)], 1e-15);
}

TEST(LrSchedule, Stages) {
  LrSchedule lr({35, 35}, {0.01, 0.001});
  EXPECT_EQ(lr.lr_at(0), 0.01);
  EXPECT_EQ(lr.lr_at(34), 0.01);
  EXPECT_EQ(lr.lr_at(35), 0.001);
  EXPECT_EQ(lr.lr_at(69), 0.001);
  EXPECT_EQ(lr.total_epochs(), 70);
  EXPECT_THROW(LrSchedule({1, 2}, {0.1}), Error);
}

// Cosine with warm restarts and linear warm-up, by hand: E = 12, W = 2, one restart, base 0.1, so
// min 1e-4 and cycles of 5 epochs; lr = 1e-4 + 0.0999 (1 + cos(pi t / 5)) / 2 with cos(pi/5) =
// 0.809017, cos(2pi/5) = 0.309017, cos(3pi/5) = -0.309017, cos(4pi/5) = -0.809017.
TEST(LrSchedule, CosineWithWarmRestartsByHand) {
  const LrSchedule lr = LrSchedule::cosine(12, 0.1, 2, 1);
  const double expect[12] = {0.05,   0.1,         0.1, 0.0904603989, 0.0654853989, 0.0346146011,
                             0.0096396011, 0.1, 0.0904603989, 0.0654853989, 0.0346146011, 0.0096396011};
  for (int e = 0; e < 12; ++e) EXPECT_NEAR(lr.lr_at(e), expect[e], 1e-9) << e;
  EXPECT_EQ(lr.total_epochs(), 12);
  for (int e = 0; e < 12; ++e) EXPECT_EQ(lr.stage_of(e), 0);
  EXPECT_FALSE(lr.starts_stage(7));  // a restart is not a stage: no checkpoint reload
  // E = 13: the last cycle takes the extra epoch (6 epochs) and ends annealed: cos(5pi/6) = -0.866025.
  const LrSchedule odd = LrSchedule::cosine(13, 0.1, 2, 1);
  EXPECT_NEAR(odd.lr_at(7), 0.1, 1e-12);
  EXPECT_NEAR(odd.lr_at(12), 0.0067920311, 1e-9);
  // No warm-up, no restart: plain cosine annealing from the first epoch.
  EXPECT_NEAR(LrSchedule::cosine(4, 1.0, 0, 0).lr_at(2), 0.001 + 0.999 * 0.5 * (1 + 0.0), 1e-12);  // cos(pi/2) = 0
  EXPECT_THROW(LrSchedule::cosine(3, 0.1, 2, 1), Error);  // 1 epoch after warm-up for 2 cycles
  EXPECT_THROW(LrSchedule::cosine(10, 0.1, -1, 0), Error);
}

// Where a later stage begins (where --stage2 reload acts): the first epoch of every stage but the
// first, skipping stages of 0 epochs; never epoch 0.
TEST(LrSchedule, StageStarts) {
  LrSchedule lr({2, 0, 3}, {0.1, 0.01, 0.001});
  std::vector<int> starts, stages;
  for (int e = 0; e < 5; ++e) {
    if (lr.starts_stage(e)) starts.push_back(e);
    stages.push_back(lr.stage_of(e));
  }
  EXPECT_EQ(starts, std::vector<int>{2});
  EXPECT_EQ(stages, (std::vector<int>{0, 0, 2, 2, 2}));
  EXPECT_FALSE(LrSchedule({0, 4}, {0.1, 0.01}).starts_stage(0));
  EXPECT_TRUE(LrSchedule({35, 35}, {0.01, 0.001}).starts_stage(35));
}

TEST(ParameterStore, OneSlabZeroGradIsOneMemset) {
  Tensor a = f64({1, 2, 3}, {3}), b = f64({4, 5}, {1, 2});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  ParameterStore store({a, b});
  EXPECT_EQ(a.storage(), b.storage());
  EXPECT_EQ(a.to_vector<double>(), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(b.to_vector<double>(), (std::vector<double>{4, 5}));
  EXPECT_EQ(store.parameter_count(), 5);
  ops::add(a, a).backward(f64({1, 1, 1}, {3}));
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{2, 2, 2}));
  store.zero_grad();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{0, 0, 0}));
}

// The allocator's rule for CUDA graphs, on made-up addresses: a block handed out while a graph is
// recorded is never handed to anyone else while the graph lives, freed during the recording or
// after it, nor is one handed out before and freed during the recording; once the graph is gone
// its blocks are shared again.
TEST(BlockCache, BlocksOfARecordingStayTheGraphsUntilItIsDestroyed) {
  EXPECT_EQ(BlockCache::round(1), 512u);
  EXPECT_EQ(BlockCache::round(513), 1024u);
  EXPECT_EQ(BlockCache::round((size_t(2) << 20) + 1), size_t(4) << 20);
  BlockCache cache;
  char blocks[8];
  void *before = &blocks[0], *temp = &blocks[1], *kept = &blocks[2], *fresh = &blocks[3];
  const size_t n = 512;
  void* outgrown = &blocks[4];
  cache.handed_out(before, n);  // eager work before the recording
  cache.give_back(before, n);
  cache.handed_out(outgrown, n);  // e.g. a workspace the recording uses, then outgrows
  int graph = 0;
  cache.begin_recording();
  EXPECT_EQ(cache.take(n), before);  // the recording may reuse a block freed earlier
  cache.handed_out(before, n);
  EXPECT_EQ(cache.take(n), nullptr);
  cache.handed_out(temp, n);  // a new block
  cache.give_back(temp, n);   // freed inside the recording: reused inside it
  EXPECT_EQ(cache.take(n), temp);
  cache.handed_out(temp, n);
  cache.give_back(temp, n);
  cache.give_back(before, n);
  cache.handed_out(kept, n);  // outlives the recording
  cache.give_back(outgrown, n);
  cache.end_recording(&graph);
  EXPECT_EQ(cache.held_bytes(&graph), 3 * n);
  EXPECT_EQ(cache.take(n), nullptr);  // eager work after it gets none of the graph's blocks
  cache.give_back(kept, n);
  EXPECT_EQ(cache.held_bytes(&graph), 4 * n);
  EXPECT_EQ(cache.take(n), nullptr);
  cache.handed_out(fresh, n);  // eager, not recorded: shared as before
  cache.give_back(fresh, n);
  EXPECT_EQ(cache.take(n), fresh);
  EXPECT_TRUE(cache.drain().empty());  // emptying the cache leaves a live graph's blocks alone
  cache.release(&graph);
  EXPECT_EQ(cache.held_bytes(&graph), 0u);
  std::set<void*> back;
  for (const auto& [size, p] : cache.drain()) {
    EXPECT_EQ(size, n);
    back.insert(p);
  }
  EXPECT_EQ(back, (std::set<void*>{before, temp, kept, outgrown}));
}

TEST(BlockCache, AFailedRecordingHoldsNothing) {
  BlockCache cache;
  char blocks[2];
  cache.begin_recording();
  cache.handed_out(&blocks[0], 512);
  cache.handed_out(&blocks[1], 512);
  cache.give_back(&blocks[0], 512);
  cache.end_recording(nullptr);
  cache.give_back(&blocks[1], 512);
  EXPECT_EQ(cache.drain().size(), 2u);
}

// ---- error messages name the op and the shapes -------------------------------------------------
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Errors, BadShapesNameOpAndShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  std::string m = error_of([&] { ops::add(a, b); });
  EXPECT_NE(m.find("add"), std::string::npos) << m;
  EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
  EXPECT_NE(m.find("[3, 2]"), std::string::npos) << m;
  m = error_of([&] { ops::conv2d(Tensor::zeros({1, 3, 8, 8}), Tensor::zeros({4, 2, 3, 3}), Tensor(), 1, 1); });
  EXPECT_NE(m.find("conv2d"), std::string::npos) << m;
  EXPECT_NE(m.find("[4, 2, 3, 3]"), std::string::npos) << m;
  EXPECT_NE(m.find("[1, 3, 8, 8]"), std::string::npos) << m;
  m = error_of([&] { ops::linear(Tensor::zeros({2, 5}), Tensor::zeros({3, 4}), Tensor()); });
  EXPECT_NE(m.find("linear"), std::string::npos) << m;
  m = error_of([&] { ops::pairwise_distance(Tensor::zeros({2, 5}), Tensor::zeros({3, 4})); });
  EXPECT_NE(m.find("pairwise_distance"), std::string::npos) << m;
  EXPECT_NE(m.find("[3, 4]"), std::string::npos) << m;
}

TEST(Errors, BadDtypesNameOpAndDtype) {
  std::string m = error_of([] { ops::leaky_relu(Tensor::zeros({2}, DType::I64), 0.2); });
  EXPECT_NE(m.find("leaky_relu"), std::string::npos) << m;
  EXPECT_NE(m.find("i64"), std::string::npos) << m;
  m = error_of([] { ops::add(Tensor::zeros({2}), Tensor::zeros({2}, DType::F64)); });
  EXPECT_NE(m.find("dtype"), std::string::npos) << m;
  m = error_of([] { ops::cac_head(Tensor::zeros({2, 3}), Tensor::zeros({3, 3}), Tensor::zeros({2}), 0.1); });
  EXPECT_NE(m.find("labels"), std::string::npos) << m;
}

// The CUDA batch-norm rule (kernels/batchnorm_paths.h), from the facts of a shape on a GPU: flat
// without 16-byte units; the cluster where the activation fits on chip at once; the reread where
// it does not; two passes where neither can run. The H100 cases: 132 SMs x 228 KiB of shared
// memory; classifier32's conv2 activation (128x64x32x32, 33.5 MB) gets the reread, the 16x16 one
// (128x128x16x16, 16.8 MB) the cluster.
TEST(BatchNormRule, PicksByWhetherTheActivationFitsOnChip) {
  using kernels::BnPath;
  const int64_t h100 = int64_t(132) * 228 * 1024;
  auto facts = [&](int64_t units, int64_t bytes, bool cluster, bool reread) {
    kernels::BnForwardFacts f;
    f.units = units;
    f.activation_bytes = bytes;
    f.on_chip_bytes = h100;
    f.cluster_fits = cluster;
    f.reread_fits = reread;
    return f;
  };
  EXPECT_EQ(kernels::batchnorm_forward_rule(facts(32768, 128LL * 64 * 32 * 32 * 4, true, true)), BnPath::Reread);
  EXPECT_EQ(kernels::batchnorm_forward_rule(facts(8192, 128LL * 128 * 16 * 16 * 4, true, true)), BnPath::Cluster);
  EXPECT_EQ(kernels::batchnorm_forward_rule(facts(512, 128LL * 512 * 4 * 4 * 4, true, true)), BnPath::Cluster);
  // Before sm_90 (no clusters) the reread everywhere; without cooperative launch, two passes.
  EXPECT_EQ(kernels::batchnorm_forward_rule(facts(8192, 128LL * 128 * 16 * 16 * 4, false, true)), BnPath::Reread);
  EXPECT_EQ(kernels::batchnorm_forward_rule(facts(8192, 128LL * 128 * 16 * 16 * 4, false, false)), BnPath::TwoPass);
  EXPECT_EQ(kernels::batchnorm_forward_rule(facts(32768, 128LL * 64 * 32 * 32 * 4, true, false)), BnPath::Cluster);
  EXPECT_EQ(kernels::batchnorm_forward_rule(facts(0, 3 * 5 * 7 * 9 * 4, true, true)), BnPath::Flat);
}

// The launch counts the benchmark reports, and one name per path.
TEST(BatchNormRule, LaunchesAndNames) {
  using kernels::BnPath;
  EXPECT_EQ(kernels::bn_launches(BnPath::Reread), 1);
  EXPECT_EQ(kernels::bn_launches(BnPath::Cluster), 1);
  EXPECT_EQ(kernels::bn_launches(BnPath::SingleLaunch), 1);
  EXPECT_EQ(kernels::bn_launches(BnPath::TwoPass), 2);
  EXPECT_EQ(kernels::bn_launches(BnPath::TwoPass, false), 1);  // backward without dx: the reduction only
  EXPECT_EQ(kernels::bn_launches(BnPath::Flat), 2);
  std::set<std::string> names;
  for (auto p : {BnPath::Rule, BnPath::Reread, BnPath::Cluster, BnPath::SingleLaunch, BnPath::TwoPass, BnPath::Flat})
    names.insert(kernels::bn_path_name(p));
  EXPECT_EQ(names, (std::set<std::string>{"rule", "reread", "cluster", "single", "two-pass", "flat"}));
}

// The single-launch kernels' geometry: every unit of a channel belongs to exactly one thread of
// one slice, a channel's slices are co-resident, and the reread plan takes one round whenever the
// channels fit the co-resident blocks (the case it exists for: 128x64x32x32 on an H100's 528
// blocks of 48 KiB, 4 per SM, is 8 slices of 16 units per thread).
void expect_plan_covers(const kernels::BnSlicePlan& p, int64_t units, int C, int resident, int threads) {
  ASSERT_TRUE(p.fits);
  ASSERT_GE(p.splits, 1);
  ASSERT_GE(p.groups, 1);
  EXPECT_LE(int64_t(p.splits) * p.groups, resident);
  EXPECT_LE(p.groups, C);
  std::vector<int> owner_count(size_t(units), 0);
  for (int s = 0; s < p.splits; ++s)
    for (int t = 0; t < threads; ++t)
      for (int i = 0; i < p.per_thread; ++i) {
        const int64_t j = int64_t(s) * threads * p.per_thread + t + int64_t(i) * threads;
        if (j < units) ++owner_count[size_t(j)];
      }
  for (int64_t j = 0; j < units; ++j) ASSERT_EQ(owner_count[size_t(j)], 1) << "unit " << j;
}

TEST(BatchNormPlan, EveryUnitOnceAndChannelsCoResident) {
  struct Case {
    int64_t units;
    int C, resident;
  };
  // (units per channel = N*H*W/4): conv2, batch 1, mid-block ends, 256x2x64x64, 128x512x4x4,
  // 1024x1x64x64, 4x4096x2x2, and a small GPU.
  for (const Case& c : {Case{32768, 64, 528}, Case{256, 64, 528}, Case{5000, 4, 528}, Case{262144, 2, 528},
                        Case{512, 512, 528}, Case{1048576, 1, 528}, Case{4, 4096, 528}, Case{32768, 64, 40}}) {
    SCOPED_TRACE(testing::Message() << c.units << " units x " << c.C << " channels, " << c.resident << " resident");
    const kernels::BnSlicePlan r = kernels::batchnorm_reread_plan(c.units, c.C, c.resident, 256);
    expect_plan_covers(r, c.units, c.C, c.resident, 256);
    if (c.C <= c.resident) {
      EXPECT_EQ(r.groups, c.C) << "one round";
    }
    for (int u : {2, 4, 8}) {
      const kernels::BnSlicePlan p = kernels::batchnorm_single_plan(c.units, c.C, c.resident, 256, u);
      if (p.fits) {
        expect_plan_covers(p, c.units, c.C, c.resident, 256);
      } else {
        EXPECT_GT((c.units + 256 * u - 1) / (256 * u), c.resident);
      }
    }
  }
  const kernels::BnSlicePlan conv2 = kernels::batchnorm_reread_plan(32768, 64, 528, 256);
  EXPECT_EQ(conv2.splits, 8);
  EXPECT_EQ(conv2.per_thread, 16);
  EXPECT_EQ(conv2.groups, 64);
  EXPECT_FALSE(kernels::batchnorm_reread_plan(32768, 64, 0, 256).fits);  // no block fits the GPU
}

// The cluster forward's geometry: every unit of a channel belongs to exactly one thread of one
// block of the cluster, the cluster is the smallest power of two that keeps the target units per
// thread (so small channels do not spread over idle blocks), and a channel larger than the largest
// cluster's shared memory does not fit. At the conv2 shape (32768 float4s per channel) a target of
// 16 is a cluster of 8 blocks of 64 KiB; 8 is 16 blocks of 32 KiB, or 8 of 64 KiB where the GPU
// grants only the portable cluster size.
TEST(BatchNormPlan, ClusterCoversTheChannelWithTheSmallestCluster) {
  struct Case {
    int64_t units;
    int target, max_cluster, max_per_thread;
    int cluster, per_thread;
    bool fits;
  };
  const int threads = 256, h100 = 56;  // 227 KiB of shared memory per block = 56 float4s per thread
  for (const Case& c : {Case{32768, 16, 16, h100, 8, 16, true}, Case{32768, 8, 16, h100, 16, 8, true},
                        Case{32768, 8, 8, h100, 8, 16, true}, Case{32768, 4, 16, h100, 16, 8, true},
                        Case{256, 16, 16, h100, 1, 1, true}, Case{4, 16, 16, h100, 1, 1, true},
                        Case{5000, 16, 16, h100, 2, 10, true}, Case{512, 8, 16, h100, 1, 2, true},
                        Case{262144, 16, 16, h100, 16, 64, false}, Case{1048576, 16, 16, h100, 16, 256, false},
                        Case{262144, 16, 16, 64, 16, 64, true}}) {
    SCOPED_TRACE(testing::Message() << c.units << " units, target " << c.target << ", clusters <= " << c.max_cluster);
    const kernels::BnClusterPlan p = kernels::batchnorm_cluster_plan(c.units, threads, c.target, c.max_cluster,
                                                                     c.max_per_thread);
    EXPECT_EQ(p.cluster, c.cluster);
    EXPECT_EQ(p.per_thread, c.per_thread);
    EXPECT_EQ(p.fits, c.fits);
    std::vector<int> owner_count(size_t(c.units), 0);
    for (int r = 0; r < p.cluster; ++r)
      for (int t = 0; t < threads; ++t)
        for (int i = 0; i < p.per_thread; ++i) {
          const int64_t j = int64_t(r) * threads * p.per_thread + t + int64_t(i) * threads;
          if (j < c.units) ++owner_count[size_t(j)];
        }
    for (int64_t j = 0; j < c.units; ++j) ASSERT_EQ(owner_count[size_t(j)], 1) << "unit " << j;
  }
  EXPECT_FALSE(kernels::batchnorm_cluster_plan(0, 256, 16, 16, 56).fits);
  EXPECT_FALSE(kernels::batchnorm_cluster_plan(100, 256, 16, 0, 56).fits);  // no clusters on this GPU
}

// With a held count only that part of a thread's units needs shared memory (the rest is read
// twice), so the cluster's size and the units per thread are as without it, and any channel fits:
// at the conv2 shape 12 of 16 units held is 48 KiB per block, and the 1M-unit channel that did not
// fit above fits now. The held part never exceeds the thread's units.
TEST(BatchNormPlan, ClusterHoldsOnlyTheHeldUnitsInSharedMemory) {
  struct Case {
    int64_t units;
    int target, max_cluster, max_per_thread, held;
    int cluster, per_thread, expect_held;
    bool fits;
  };
  const int h100 = 56;
  for (const Case& c : {Case{32768, 16, 16, h100, 12, 8, 16, 12, true}, Case{32768, 16, 16, h100, 8, 8, 16, 8, true},
                        Case{32768, 16, 16, h100, 0, 8, 16, 16, true}, Case{256, 16, 16, h100, 12, 1, 1, 1, true},
                        Case{1048576, 16, 16, h100, 12, 16, 256, 12, true},
                        Case{1048576, 16, 16, h100, 0, 16, 256, 256, false},
                        Case{32768, 16, 16, 8, 12, 8, 16, 12, false}}) {
    SCOPED_TRACE(testing::Message() << c.units << " units, held " << c.held);
    const kernels::BnClusterPlan p =
        kernels::batchnorm_cluster_plan(c.units, 256, c.target, c.max_cluster, c.max_per_thread, c.held);
    EXPECT_EQ(p.cluster, c.cluster);
    EXPECT_EQ(p.per_thread, c.per_thread);
    EXPECT_EQ(p.held, c.expect_held);
    EXPECT_EQ(p.fits, c.fits);
  }
  EXPECT_FALSE(kernels::batchnorm_cluster_plan(32768, 256, 16, 16, 56, -1).fits);
}

TEST(Autograd, NoGradRecordsNothingAndBackwardTwiceFails) {
  Tensor x = f64({1, 2}, {2});
  x.set_requires_grad(true);
  {
    NoGradGuard g;
    EXPECT_FALSE(ops::add(x, x).grad_fn());
  }
  Tensor y = ops::leaky_relu(x, 0.1);
  Tensor g = f64({1, 1}, {2});
  y.backward(g);
  EXPECT_THROW(y.backward(g), Error);
}

TEST(Autograd, SharedInputsAccumulate) {
  // y = relu(x) + x, gradient 1 + 1[x > 0].
  Tensor x = f64({-1, 2}, {2});
  x.set_requires_grad(true);
  ops::add(ops::relu(x), x).backward(f64({1, 1}, {2}));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 2}));
}

}  // namespace

// ---- progress lines ------------------------------------------------------------------------------
// A scratch file that a progress line writes to, with options that draw every update.
struct CapturedLines {
  FILE* f = std::tmpfile();
  CapturedLines() { EXPECT_NE(f, nullptr); }
  ~CapturedLines() { std::fclose(f); }
  ProgressLine::Options options(int tty = 0) const {
    ProgressLine::Options o;
    o.out = f;
    o.tty = tty;
    o.interval_s = 0;
    return o;
  }
  std::string text() const {
    std::fflush(f);
    std::rewind(f);
    std::string text;
    for (int c; (c = std::fgetc(f)) != EOF;) text += char(c);
    return text;
  }
};

// Plain lines (a log): a line per due update with the bar and the count, one closing line with the
// rate, nothing after it; a terminal redraws in place; quick work can stay silent.
TEST(ProgressLine, LinesBarsAndTheClosingLine) {
  CapturedLines plain;
  {
    ProgressLine p("prog: ", "decoding x", 4, plain.options());
    p.update(1);
    p.update(2);
    p.update(4);  // done: the closing line
    p.update(3);
    p.finish();
  }
  const std::string text = plain.text();
  EXPECT_EQ(text.rfind("prog: decoding x [######..................] 1/4 images  eta ", 0), 0u) << text;
  EXPECT_NE(text.find("prog: decoding x [############............] 2/4 images"), std::string::npos) << text;
  EXPECT_NE(text.find("prog: decoding x: 4 images in "), std::string::npos) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3) << text;  // 2 progress lines + the closing one

  CapturedLines terminal;
  {
    ProgressLine p("", "w", 2, terminal.options(/*tty=*/1));
    p.update(1);
    p.finish();
  }
  const std::string redrawn = terminal.text();
  EXPECT_EQ(redrawn.rfind("\r\033[Kw [", 0), 0u) << redrawn;
  EXPECT_EQ(std::count(redrawn.begin(), redrawn.end(), '\n'), 1) << redrawn;  // only the closing line ends one

  CapturedLines quick;
  ProgressLine::Options o = quick.options();
  o.quiet_below_s = 60;
  {
    ProgressLine p("", "quick", 3, o);
    p.update(1);
    p.update(3);
  }
  EXPECT_EQ(quick.text(), "");
}

// Updated from many threads at once (the parallel decoders): no lost closing line, no second one.
TEST(ProgressLine, ManyThreadsOneClosingLine) {
  CapturedLines lines;
  ProgressLine p("", "work", 8000, lines.options());
  std::atomic<int64_t> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) p.update(++done);
    });
  for (auto& t : threads) t.join();
  const std::string text = lines.text();
  size_t closing = 0;
  for (size_t at = text.find("work: 8000 images in"); at != std::string::npos; at = text.find("work: 8000 images in", at + 1))
    ++closing;
  EXPECT_EQ(closing, 1u);
}

// What the engine says about the GPU it found, for each way a GPU can be missing or unusable
// (the probe's facts are given, so every case is checked on any machine).
TEST(GpuProbe, EachStateSaysWhatToDo) {
  using cuda::GpuProbe;
  using cuda::GpuState;
  GpuProbe ok;
  ok.built_with_cuda = true;
  ok.driver_version = 13000;
  ok.runtime_version = 13000;
  ok.devices = 1;
  ok.name = "NVIDIA H100 80GB HBM3";
  ok.major = 9;
  ok.has_code = true;
  ok.built_for = "90";
  std::string why = "stale";
  EXPECT_EQ(cuda::explain_gpu(ok, &why), GpuState::Usable);
  EXPECT_EQ(why, "");

  GpuProbe p;  // a build without CUDA
  EXPECT_EQ(cuda::explain_gpu(p, &why), GpuState::Absent);
  EXPECT_EQ(why, "built without the CUDA backend");

  p = ok;
  p.driver_version = 0;  // no driver: the CPU, quietly, for --device auto
  EXPECT_EQ(cuda::explain_gpu(p, &why), GpuState::Absent);
  EXPECT_NE(why.find("no NVIDIA driver"), std::string::npos) << why;

  p = ok;
  p.count = GpuProbe::Count::NoDevice;  // e.g. CUDA_VISIBLE_DEVICES=""
  p.devices = 0;
  EXPECT_EQ(cuda::explain_gpu(p, &why), GpuState::Absent);
  EXPECT_EQ(why, "no CUDA device found");

  p = ok;
  p.count = GpuProbe::Count::DriverTooOld;
  p.driver_version = 12040;
  EXPECT_EQ(cuda::explain_gpu(p, &why), GpuState::Unusable);
  EXPECT_EQ(why, "the NVIDIA driver supports CUDA 12.4 but this build uses the CUDA 13.0 runtime: update the "
                 "driver, or build with a CUDA toolkit no newer than 12.4");

  p = ok;
  p.count = GpuProbe::Count::Failed;
  p.error = "cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable";
  EXPECT_EQ(cuda::explain_gpu(p, &why), GpuState::Unusable);
  EXPECT_NE(why.find(p.error), std::string::npos) << why;

  p = ok;  // an RTX 3090 with a build for Hopper only
  p.name = "NVIDIA GeForce RTX 3090";
  p.major = 8;
  p.minor = 6;
  p.has_code = false;
  EXPECT_EQ(cuda::explain_gpu(p, &why), GpuState::Unusable);
  EXPECT_EQ(why.rfind("NVIDIA GeForce RTX 3090 is sm_86, and this build has GPU code only for sm_90 + PTX: "
                      "rebuild with -DCMAKE_CUDA_ARCHITECTURES=86", 0), 0u) << why;

  EXPECT_EQ(cuda::explain_gpu(ok, nullptr), GpuState::Usable);  // `why` is optional
}

TEST(GpuProbe, ArchitectureListsInWords) {
  EXPECT_EQ(cuda::describe_architectures("90"), "sm_90 + PTX");
  EXPECT_EQ(cuda::describe_architectures("80;86-real;90-virtual"), "sm_80 + PTX, sm_86, compute_90 (PTX)");
  EXPECT_EQ(cuda::describe_architectures("75,89"), "sm_75 + PTX, sm_89 + PTX");  // as the build passes it
  EXPECT_EQ(cuda::describe_architectures("all-major"), "all-major");
  EXPECT_EQ(cuda::describe_architectures(""), "none");
}

// On this machine: whatever the probe finds, device_available agrees with the state, and a state
// other than Usable comes with a reason.
TEST(GpuProbe, DeviceAvailableFollowsTheState) {
  std::string why;
  const cuda::GpuState s = cuda::gpu_state(&why);
  EXPECT_EQ(cuda::device_available(), s == cuda::GpuState::Usable);
  EXPECT_EQ(why.empty(), s == cuda::GpuState::Usable) << why;
  if (!cuda::built_with_cuda()) {
    EXPECT_EQ(s, cuda::GpuState::Absent);
  }
}

}  // namespace cac
