// classifier32 structure and names, a sampled gradient check of the whole network, and the tiny
// end-to-end CAC training run (accuracy and bit-exact determinism).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "core/autograd.h"
#include "core/bf16.h"
#include "layers/ops.h"
#include "models/anchors.h"
#include "models/checkpoint.h"
#include "models/classifier32.h"
#include "models/forward_replay.h"
#include "models/resnet18.h"
#include "models/training.h"

namespace cac {
namespace {

TEST(Classifier32, NamesShapesAndCounts) {
  Classifier32Config cfg;
  cfg.in_channels = 1;
  auto net = make_classifier32(cfg, 6, 10.0, false);
  std::map<std::string, Shape> shapes;
  for (auto& [name, t] : net->state_dict()) shapes[name] = t.shape();
  EXPECT_EQ(shapes.at("encoder.conv1.weight"), (Shape{64, 1, 3, 3}));
  EXPECT_EQ(shapes.at("encoder.conv3.weight"), (Shape{128, 64, 3, 3}));
  EXPECT_EQ(shapes.at("encoder.bn9.running_var"), (Shape{128}));
  EXPECT_EQ(shapes.at("encoder.bn1.num_batches_tracked"), (Shape{}));
  EXPECT_EQ(shapes.at("classify.weight"), (Shape{6, 2048}));
  EXPECT_EQ(shapes.at("anchors"), (Shape{6, 6}));
  EXPECT_EQ(shapes.count("encoder.conv1.bias"), 0u);  // convolutions have no bias
  // Trainable: 9 conv weights + 9 BN (weight, bias) + classify (weight, bias); anchors are fixed.
  EXPECT_EQ(net->trainable_parameters().size(), 9u + 18u + 2u);
  int64_t n = 0;
  for (auto& t : net->trainable_parameters()) n += t.numel();
  // conv: 1*64*9 + 64*64*9 + 64*128*9 + 6*128*128*9; BN: 2*(2*64 + 7*128); linear 2048*6 + 6.
  EXPECT_EQ(n, 576 + 36864 + 73728 + 6 * 147456 + 2 * (2 * 64 + 7 * 128) + 2048 * 6 + 6);
  EXPECT_EQ(net->anchors.to_vector<float>()[0], 10.0f);
  EXPECT_EQ(net->anchors.to_vector<float>()[1], 0.0f);

  NoGradGuard g;
  net->eval();
  OpenSetOutput out = net->forward(Tensor::zeros({2, 1, 32, 32}));
  EXPECT_EQ(out.logits.shape(), (Shape{2, 6}));
  EXPECT_EQ(out.distances.shape(), (Shape{2, 6}));
  cfg.in_channels = 3;
  cfg.image_size = 64;
  auto big = make_classifier32(cfg, 20, 10.0, true);
  big->eval();
  EXPECT_EQ(big->forward(Tensor::zeros({1, 3, 64, 64})).logits.shape(), (Shape{1, 20}));
  EXPECT_TRUE(big->anchors.requires_grad());
  EXPECT_THROW(make_classifier32(Classifier32Config{3, 48, 0.2, 0}, 6, 10, false), Error);
}

TEST(Classifier32, InitialisationFollowsProtocol) {
  Classifier32Config cfg;
  auto net = make_classifier32(cfg, 6, 10.0, false);
  auto sd = net->state_dict();
  auto stddev = [](const Tensor& t) {
    double s = 0, s2 = 0;
    for (float v : t.to_vector<float>()) s += v, s2 += double(v) * v;
    const double n = double(t.numel());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  for (auto& [name, t] : sd) {
    if (name == "encoder.conv2.weight") {
      EXPECT_NEAR(stddev(t), std::sqrt(2.0 / (64 * 9)), 0.002);
    } else if (name == "classify.weight") {
      EXPECT_NEAR(stddev(t), 0.01, 0.0005);
    } else if (name == "encoder.bn1.weight") {
      EXPECT_EQ(t.to_vector<float>()[0], 1.0f);
    }
  }
}

TEST(Classifier32, WholeNetworkGradientOnSampledCoordinates) {
  // Double precision, batch 3 of 32x32x1, dropout off; a few coordinates of every parameter.
  Classifier32Config cfg;
  cfg.in_channels = 1;
  cfg.dropout = 0.0;
  auto net = make_classifier32(cfg, 4, 10.0, false);
  net->to(DType::F64);
  Generator gen(5);
  std::vector<double> xv(3 * 32 * 32);
  for (auto& v : xv) v = gen.normal();
  Tensor x = Tensor::from_vector(xv, {3, 1, 32, 32});
  Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 3, 1}, {3});
  auto loss_value = [&] {
    NoGradGuard g;
    return ops::cac_head(net->logits(x), net->anchors, y, 0.1).loss.item();
  };
  ops::cac_head(net->logits(x), net->anchors, y, 0.1).loss.backward();
  const double eps = 1e-6;
  for (auto& [name, p] : net->named_parameters()) {
    if (!p.requires_grad()) continue;
    ASSERT_TRUE(p.grad().defined()) << name;
    double* w = p.data<double>();
    const double* g = p.grad().data<double>();
    for (int s = 0; s < 2; ++s) {
      const int64_t k = int64_t(gen.below(uint64_t(p.numel())));
      const double saved = w[k];
      w[k] = saved + eps;
      const double fp = loss_value();
      w[k] = saved - eps;
      const double fm = loss_value();
      w[k] = saved;
      const double numeric = (fp - fm) / (2 * eps);
      // Same reasoning as the op gradient check; BN running statistics move with each forward
      // but do not enter the training-mode output.
      EXPECT_NEAR(g[k], numeric, 1e-6 + 1e-5 * std::abs(numeric)) << name << "[" << k << "]";
    }
  }
}

// ---- tiny end-to-end run ------------------------------------------------------------------------
// Four classes of 16x16 greyscale images: a bright 6x6 square in quadrant k on Gaussian noise.
void synthetic_batch(Generator& gen, int B, Tensor& images, Tensor& labels) {
  std::vector<float> x(size_t(B) * 256);
  std::vector<int64_t> y(static_cast<size_t>(B), 0);
  for (int b = 0; b < B; ++b) {
    const int k = int(gen.below(4));
    y[size_t(b)] = k;
    for (int i = 0; i < 256; ++i) x[size_t(b * 256 + i)] = float(0.3 * gen.normal());
    const int r0 = (k / 2) * 8 + 1, c0 = (k % 2) * 8 + 1;
    for (int r = r0; r < r0 + 6; ++r)
      for (int c = c0; c < c0 + 6; ++c) x[size_t(b * 256 + r * 16 + c)] += 1.0f;
  }
  images = Tensor::from_vector(x, {B, 1, 16, 16});
  labels = Tensor::from_vector(y, {B});
}

std::shared_ptr<OpenSetClassifier> small_net(uint64_t seed) {
  Generator gen(seed);
  auto enc = std::make_shared<Sequential>();
  enc->add("conv1", std::make_shared<Conv2d>(1, 8, 3, 2, 1, false, gen));
  enc->add("bn1", std::make_shared<BatchNorm2d>(8));
  enc->add("act1", std::make_shared<LeakyReLU>(0.2));
  enc->add("conv2", std::make_shared<Conv2d>(8, 16, 3, 2, 1, false, gen));
  enc->add("bn2", std::make_shared<BatchNorm2d>(16));
  enc->add("act2", std::make_shared<LeakyReLU>(0.2));
  enc->add("drop", std::make_shared<Dropout2d>(0.1, seed));
  enc->add("flat", std::make_shared<Flatten>());
  return std::make_shared<OpenSetClassifier>(enc, 16 * 4 * 4, 4, 10.0, false, gen);
}

std::vector<float> train_tiny(uint64_t seed, double* final_accuracy) {
  Trainer trainer(small_net(seed), Method::CAC, 0.1, 0.9, 5e-4);
  Generator data(seed, 3);
  std::vector<float> losses;
  for (int step = 0; step < 60; ++step) {
    Tensor x, y;
    synthetic_batch(data, 32, x, y);
    StepTotals t;
    t.reset(DType::F32, Device::CPU);
    trainer.step(x, y, 0.05, t);
    losses.push_back(t.loss_parts.to_vector<float>()[0]);
  }
  StepTotals t;
  t.reset(DType::F32, Device::CPU);
  for (int i = 0; i < 8; ++i) {  // fresh training-distribution batches, eval mode
    Tensor x, y;
    synthetic_batch(data, 32, x, y);
    trainer.evaluate(x, y, t);
  }
  *final_accuracy = t.means().accuracy;
  return losses;
}

TEST(EndToEnd, TinyCacRunLearnsAndIsBitReproducible) {
  double acc1 = 0, acc2 = 0;
  std::vector<float> a = train_tiny(11, &acc1);
  std::vector<float> b = train_tiny(11, &acc2);
  EXPECT_GT(acc1, 0.95);
  EXPECT_LT(a.back(), a.front());
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_EQ(std::memcmp(&a[i], &b[i], sizeof(float)), 0) << "step " << i;  // bit-identical
  EXPECT_EQ(acc1, acc2);
}


// ---- ResNet-18 (CIFAR variant) -------------------------------------------------------------------
TEST(ResNet18, NamesShapesAndParameterCount) {
  auto net = make_resnet18(ResNet18Config{}, 10, 10.0, false);
  std::map<std::string, Shape> shapes;
  for (auto& [name, t] : net->state_dict()) shapes[name] = t.shape();
  EXPECT_EQ(shapes.at("encoder.conv1.weight"), (Shape{64, 3, 3, 3}));  // 3x3 stem, no max-pool
  EXPECT_EQ(shapes.at("encoder.layer1.0.conv2.weight"), (Shape{64, 64, 3, 3}));
  EXPECT_EQ(shapes.count("encoder.layer1.0.downsample.0.weight"), 0u);  // identity shortcut
  EXPECT_EQ(shapes.at("encoder.layer2.0.conv1.weight"), (Shape{128, 64, 3, 3}));
  EXPECT_EQ(shapes.at("encoder.layer2.0.downsample.0.weight"), (Shape{128, 64, 1, 1}));
  EXPECT_EQ(shapes.at("encoder.layer2.0.downsample.1.running_var"), (Shape{128}));
  EXPECT_EQ(shapes.count("encoder.layer2.1.downsample.0.weight"), 0u);
  EXPECT_EQ(shapes.at("encoder.layer4.1.bn2.weight"), (Shape{512}));
  EXPECT_EQ(shapes.at("classify.weight"), (Shape{10, 512}));
  EXPECT_EQ(shapes.at("anchors"), (Shape{10, 10}));
  // Convolutions 11,159,232 + BN 2 x 4,800 channels + linear 512*10 + 10 = 11,173,962 (the usual
  // "11.17M" of the CIFAR ResNet-18 for 10 classes); the anchors are not trainable.
  int64_t n = 0;
  for (auto& t : net->trainable_parameters()) n += t.numel();
  EXPECT_EQ(n, 11173962);
  NoGradGuard g;
  net->eval();
  EXPECT_EQ(net->forward(Tensor::zeros({2, 3, 32, 32})).logits.shape(), (Shape{2, 10}));
  // Other input sizes and greyscale work through the global average pool.
  ResNet18Config grey{1, 64, 0};
  auto small = make_resnet18(grey, 6, 10.0, true);
  small->eval();
  EXPECT_EQ(small->forward(Tensor::zeros({1, 1, 64, 64})).logits.shape(), (Shape{1, 6}));
  EXPECT_TRUE(small->anchors.requires_grad());
  EXPECT_THROW(make_resnet18(ResNet18Config{3, 4, 0}, 10, 10, false), Error);
  EXPECT_THROW(make_resnet18(ResNet18Config{2, 32, 0}, 10, 10, false), Error);
}

TEST(ResNet18, KaimingInitialisation) {
  auto net = make_resnet18(ResNet18Config{}, 10, 10.0, false);
  auto stddev = [](const Tensor& t) {
    double s = 0, s2 = 0;
    for (float v : t.to_vector<float>()) s += v, s2 += double(v) * v;
    const double n = double(t.numel());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  for (auto& [name, t] : net->state_dict()) {
    // Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out * k * k)); 589,824 samples give
    // the estimate a relative error of about 1/sqrt(2 * 589824) = 0.1%, so 2% is a loose bound.
    if (name == "encoder.layer3.1.conv1.weight") { EXPECT_NEAR(stddev(t), std::sqrt(2.0 / (256 * 9)), 0.02 * std::sqrt(2.0 / (256 * 9))); }
    if (name == "encoder.layer2.0.downsample.0.weight") { EXPECT_NEAR(stddev(t), std::sqrt(2.0 / 128), 0.05 * std::sqrt(2.0 / 128)); }
    if (name == "encoder.layer4.1.bn2.weight") { EXPECT_EQ(t.to_vector<float>()[7], 1.0f); }
    if (name == "encoder.layer4.1.bn2.bias") { EXPECT_EQ(t.to_vector<float>()[7], 0.0f); }
    if (name == "classify.weight") {  // PyTorch's default: uniform(+-1/sqrt(512)), std = bound/sqrt(3)
      EXPECT_NEAR(stddev(t), 1.0 / std::sqrt(512.0) / std::sqrt(3.0), 0.05 / std::sqrt(512.0));
    }
  }
}

TEST(ResNet18, CpuTrainingStepHasFiniteLossAndMovesEveryParameter) {
  auto net = make_resnet18(ResNet18Config{}, 10, 10.0, false);
  Trainer trainer(net, Method::CAC, 0.1, 0.9, 5e-4);
  std::vector<std::vector<float>> before;
  for (auto& t : net->trainable_parameters()) before.push_back(t.to_vector<float>());
  Generator gen(3);
  const int B = 4;
  std::vector<float> xv(size_t(B) * 3 * 32 * 32);
  for (auto& v : xv) v = float(gen.normal());
  Tensor x = Tensor::from_vector(xv, {B, 3, 32, 32}), y = Tensor::from_vector(std::vector<int64_t>{0, 3, 7, 9}, {B});
  StepTotals tot;
  tot.reset(DType::F32, Device::CPU);
  trainer.step(x, y, 0.01, tot);
  const auto m = tot.means();
  EXPECT_TRUE(std::isfinite(m.loss));
  EXPECT_GT(m.loss, 0.0);
  // The CAC loss at initialisation: distances to alpha*e_j are all about alpha, so the tuplet
  // part is near log(K) = log(10) and the anchor part near alpha = 10.
  EXPECT_NEAR(m.tuplet, std::log(10.0), 1.0);
  EXPECT_NEAR(m.anchor, 10.0, 3.0);
  size_t i = 0;
  for (auto& t : net->trainable_parameters()) {
    EXPECT_NE(t.to_vector<float>(), before[i]) << "parameter " << i << " did not move";
    ++i;
  }
}

}  // namespace
}  // namespace cac

namespace cac {
namespace {

// Four random 32x32x3 images (normal) labelled 0-3, and zeroed CPU totals.
struct Batch4 {
  Tensor images, labels;
};
Batch4 random_batch4(uint64_t seed) {
  Generator gen(seed);
  std::vector<float> x(size_t(4) * 3 * 32 * 32);
  for (auto& v : x) v = float(gen.normal());
  return {Tensor::from_vector(x, {4, 3, 32, 32}), Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3}, {4})};
}
StepTotals cpu_totals() {
  StepTotals t;
  t.reset(DType::F32, Device::CPU);
  return t;
}

// Class-mean anchors on a hand case (K = 3): rows the network gets wrong are left out, a class
// with no correct row keeps alpha * e_i and is reported, and the mean is over the right rows only.
// Class 0: rows [3, 1, 0] and [5, 3, 1] right ([1, 2, 0] is predicted 1): mean [4, 2, 0.5].
// Class 1: [0, 4, 1] right: itself. Class 2: its only row [2, 1, 0] is predicted 0: alpha * e_2.
TEST(ClassMeanAnchors, MeanOfTheCorrectlyClassifiedRowsPerClass) {
  const std::vector<float> z = {3, 1, 0, 1, 2, 0, 5, 3, 1, 0, 4, 1, 2, 1, 0};
  const std::vector<int64_t> y = {0, 0, 0, 1, 2};
  const ClassMeanAnchors a = class_mean_anchors(z, y, 3, 10.0);
  EXPECT_EQ(a.anchors.to_vector<float>(), (std::vector<float>{4, 2, 0.5f, 0, 4, 1, 0, 0, 10}));
  EXPECT_EQ(a.fallback, std::vector<int>{2});
  EXPECT_THROW(class_mean_anchors(z, {0, 0, 0, 1}, 3, 10.0), Error);    // rows and labels disagree
  EXPECT_THROW(class_mean_anchors(z, {0, 0, 0, 1, 3}, 3, 10.0), Error);  // a label outside 0..K-1
}

// CUDA graphs are a GPU matter: asked for on the CPU, the trainer and the evaluation forward run
// eagerly, with the results of never having asked (bit for bit) and nothing recorded.
TEST(Graphs, OnTheCpuAskingForGraphsChangesNothing) {
  Classifier32Config cfg;
  cfg.image_size = 32;
  auto a = make_classifier32(cfg, 4, 10.0, false), b = make_classifier32(cfg, 4, 10.0, false);
  Trainer plain(a, Method::CAC, 0.1, 0.9, 5e-4), asked(b, Method::CAC, 0.1, 0.9, 5e-4);
  asked.use_graphs(true, [](const std::string& s) { ADD_FAILURE() << "unexpected note: " << s; }, 0);
  StepTotals ta, tb;
  ta.reset(DType::F32, Device::CPU);
  tb.reset(DType::F32, Device::CPU);
  Generator gen(2);
  const int B = std::getenv("CAC_B") ? std::atoi(std::getenv("CAC_B")) : 4;
  std::vector<float> x(size_t(B) * 3 * 32 * 32);
  for (auto& v : x) v = float(gen.normal());
  std::vector<int64_t> yv(static_cast<size_t>(B));
  for (int i = 0; i < B; ++i) yv[size_t(i)] = i % 4;
  const Tensor images = Tensor::from_vector(x, {B, 3, 32, 32}), labels = Tensor::from_vector(yv, {B});
  for (int s = 0; s < 3; ++s) {
    plain.step(images, labels, 0.1, ta);
    asked.step(images, labels, 0.1, tb);
  }
  EXPECT_EQ(tb.loss_parts.to_vector<float>(), ta.loss_parts.to_vector<float>());
  const GraphCounts c = asked.graph_counts();
  EXPECT_EQ(c.recorded + c.replayed + c.eager, 0);
  ForwardReplay fwd(*b, true, {}, 0);
  const std::vector<float> z = fwd.outputs(images).logits.to_vector<float>();
  NoGradGuard no_grad;
  a->eval();
  EXPECT_EQ(z, a->outputs(images).logits.to_vector<float>());
  EXPECT_EQ(fwd.replayed(), 0);
  // The totals reset in place (a recorded step's pointers stay valid) and start from zero.
  const void* parts = tb.loss_parts.raw();
  tb.reset(DType::F32, Device::CPU);
  EXPECT_EQ(tb.loss_parts.raw(), parts);
  EXPECT_EQ(tb.loss_parts.to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(tb.steps, 0);
}

// bf16 tensors (issue 25): conversions from every dtype round through float32 to nearest-even
// (the rounding checked bit by bit in Bf16.RoundsToNearestEvenAndKeepsSpecialValues), read back
// exactly; fills and item(); a safetensors file keeps them as BF16, bit for bit.
TEST(Bf16Tensors, ConvertFillReadAndSaveLikeFloat32RoundedToNearestEven) {
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_STREQ(dtype_name(DType::BF16), "bf16");
  const std::vector<float> f = {1.0f, 1.00390625f, 1.01171875f, -2.5f, 3.14159265f, 1e-40f, 3.4e38f, -0.0f};
  const Tensor b = Tensor::from_vector(f, {8}).to(DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  const std::vector<float> back = b.to(DType::F32).to_vector<float>();
  for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(float_bits(back[i]), float_bits(round_bf16(f[i]))) << f[i];
  EXPECT_EQ(Tensor::from_vector(std::vector<int64_t>{257, 259, -3}, {3}).to(DType::BF16).to(DType::F64).to_vector<double>(),
            (std::vector<double>{256, 260, -3}));  // 8 significant bits: 257 ties to even (256), 259 up
  EXPECT_EQ(Tensor::from_vector(std::vector<double>{0.1}, {1}).to(DType::BF16).item(), double(round_bf16(0.1f)));
  EXPECT_EQ(Tensor::from_vector(std::vector<float>{2.5f, -7.75f}, {2}).to(DType::BF16).to(DType::I64).to_vector<int64_t>(),
            (std::vector<int64_t>{2, -7}));
  EXPECT_EQ(Tensor::full({5}, 3.14159265, DType::BF16).to(DType::F32).to_vector<float>(), std::vector<float>(5, 3.140625f));
  EXPECT_EQ(Tensor::full({1}, 3.14159265, DType::BF16).item(), 3.140625);
  EXPECT_TRUE(std::isnan(Tensor::full({1}, std::nan(""), DType::BF16).item()));
  const std::string path = ::testing::TempDir() + "/bf16.safetensors";
  save_safetensors(path, {{"w", b}}, {});
  const Safetensors st = load_safetensors(path);
  const Tensor& w = st.tensors.at("w");
  EXPECT_EQ(w.dtype(), DType::BF16);
  ASSERT_EQ(w.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(w.raw(), b.raw(), b.nbytes()), 0);
  EXPECT_EQ(first_non_finite({{"w", Tensor::full({2}, INFINITY, DType::BF16)}}), "w");
}

// ResNet-18 in mixed precision (issue 25) on the CPU twins: one training step of the bf16
// channels-last network against the float32 one from the same weights. The loss agrees within 1%.
// Gradients: bf16 rounding of every activation and activation gradient, amplified by batch norm's
// backward on a batch of 4, carries through 17 convolutions and the residual sums (bf16 accumulation
// at the shortcuts), so each parameter's gradient is compared by direction and size: cosine >= 0.85
// and norm ratio within 15% (when written: cosine 0.90 at the stem rising to 1.0 at the head, norm
// ratios 0.94-1.02). A layout mix-up or a lost path gives cosines near 0 or norms off by factors.
TEST(ResNet18, Bf16StepFollowsTheFloat32Step) {
  ResNet18Config f32_cfg, bf16_cfg;
  bf16_cfg.bf16 = true;
  auto a = make_resnet18(f32_cfg, 4, 10.0, false), b = make_resnet18(bf16_cfg, 4, 10.0, false);
  Trainer ta(a, Method::CAC, 0.1, 0.9, 5e-4), tb(b, Method::CAC, 0.1, 0.9, 5e-4);
  const auto [images, labels] = random_batch4(41);
  StepTotals sa = cpu_totals(), sb = cpu_totals();
  ta.step(images, labels, 0.0, sa);  // lr 0: the gradients are what is compared
  tb.step(images, labels, 0.0, sb);
  EXPECT_NEAR(sb.means().loss, sa.means().loss, 0.01 * sa.means().loss);
  const auto pa = a->named_parameters(), pb = b->named_parameters();
  double lowest_cos = 1;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!pa[i].second.requires_grad()) continue;
    const std::vector<float> ga = pa[i].second.grad().to_vector<float>(), gb = pb[i].second.grad().to_vector<float>();
    double dot = 0, na = 0, nb = 0;
    for (size_t k = 0; k < ga.size(); ++k) dot += double(ga[k]) * gb[k], na += double(ga[k]) * ga[k], nb += double(gb[k]) * gb[k];
    ASSERT_GT(na, 0) << pa[i].first;
    const double cosine = dot / std::sqrt(na * nb), ratio = std::sqrt(nb / na);
    EXPECT_GE(cosine, 0.85) << pa[i].first;
    EXPECT_NEAR(ratio, 1.0, 0.15) << pa[i].first;
    lowest_cos = std::min(lowest_cos, cosine);
  }
  std::printf("lowest gradient cosine, bf16 vs float32: %.4f\n", lowest_cos);
}

// The optimizer's bf16 channels-last weights (Trainer::keep_bf16_weights) are what converting the
// float32 weights at each forward gives, so a classifier32 trained on them follows one that
// converts, bit for bit: over three steps, after weights are loaded (weights_loaded()), and in an
// evaluation forward, which converts. The trainer's end takes them from the model.
TEST(MixedPrecision, OptimizersBf16WeightsTrainLikeConvertingEachForward) {
  Classifier32Config cfg;
  cfg.image_size = 32;
  cfg.bf16 = true;
  auto a = make_classifier32(cfg, 4, 10.0, false), b = make_classifier32(cfg, 4, 10.0, false);
  Trainer converting(a, Method::CAC, 0.1, 0.9, 5e-4), kept(b, Method::CAC, 0.1, 0.9, 5e-4);
  kept.keep_bf16_weights();
  int convs = 0;
  b->visit([&](const std::string&, Module& m) {
    if (auto* c = dynamic_cast<Conv2d*>(&m)) convs += c->bf16_weight.defined();
  });
  EXPECT_EQ(convs, 9);
  const auto [images, labels] = random_batch4(5);
  StepTotals ta = cpu_totals(), tb = cpu_totals();
  auto same_parameters = [&](const char* when) {
    const auto pa = a->named_parameters(), pb = b->named_parameters();
    for (size_t i = 0; i < pa.size(); ++i)
      EXPECT_EQ(pa[i].second.to_vector<float>(), pb[i].second.to_vector<float>()) << pa[i].first << " " << when;
  };
  for (int s = 0; s < 3; ++s) {
    converting.step(images, labels, 0.1, ta);
    kept.step(images, labels, 0.1, tb);
  }
  same_parameters("after three steps");
  EXPECT_EQ(ta.loss_parts.to_vector<float>(), tb.loss_parts.to_vector<float>());
  // Both load the first network's weights halved, as a checkpoint would be loaded.
  for (const auto& model : {a, b}) {
    for (auto& [name, t] : model->named_parameters())
      if (t.ndim() == 4) {
        std::vector<float> v = t.to_vector<float>();
        for (float& e : v) e *= 0.5f;
        t.copy_from(Tensor::from_vector(v, t.shape()));
      }
  }
  kept.weights_loaded();
  converting.step(images, labels, 0.1, ta);
  kept.step(images, labels, 0.1, tb);
  same_parameters("after a load and a step");
  EXPECT_EQ(ta.loss_parts.to_vector<float>(), tb.loss_parts.to_vector<float>());
  StepTotals ea = cpu_totals(), eb = cpu_totals();
  converting.evaluate(images, labels, ea);
  kept.evaluate(images, labels, eb);
  EXPECT_EQ(ea.loss_parts.to_vector<float>(), eb.loss_parts.to_vector<float>());
  // The weights are the trainer's: gone with it, so a later trainer of the model cannot read them.
  auto c = make_classifier32(cfg, 4, 10.0, false);
  { Trainer(c, Method::CAC, 0.1, 0.9, 5e-4).keep_bf16_weights(); }
  c->visit([](const std::string& name, Module& m) {
    if (auto* conv = dynamic_cast<Conv2d*>(&m)) {
      EXPECT_FALSE(conv->bf16_weight.defined()) << name;
    }
  });
}

// The dropout counters are the model's resume state: counted per training forward, outside the
// state_dict (PyTorch has no place for them), and restored by writing the tensor.
TEST(ResumeState, DropoutCountersAreCountedOutsideTheStateDict) {
  auto model = make_classifier32(Classifier32Config{}, 6, 10.0, false);
  const NamedTensors counters = model->resume_state();
  ASSERT_FALSE(counters.empty());
  for (const auto& [name, t] : model->state_dict()) EXPECT_EQ(name.find("calls"), std::string::npos) << name;
  for (const auto& [name, t] : counters) {
    EXPECT_EQ(t.dtype(), DType::I64) << name;
    EXPECT_EQ(t.item(), 0) << name;
  }
  Tensor x = Tensor::zeros({2, 3, 32, 32});
  model->logits(x);  // training mode: every dropout counts one forward
  for (const auto& [name, t] : model->resume_state()) EXPECT_EQ(t.item(), 1) << name;
  model->eval();
  model->logits(x);
  for (const auto& [name, t] : model->resume_state()) EXPECT_EQ(t.item(), 1) << name;
}

}  // namespace
}  // namespace cac
