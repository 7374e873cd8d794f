// cac_demo: trains classifier32 with the CAC loss on synthetic 32x32 greyscale images of four
// known patterns, then scores held-out known images and images of two unknown patterns with the
// open-set score min_j gamma_j. A quick end-to-end check that the engine learns and separates.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "apps/device_option.h"
#include "apps/run.h"
#include "core/autograd.h"
#include "core/build_info.h"
#include "core/cuda_runtime.h"
#include "layers/ops.h"
#include "models/training.h"

using namespace cac;

namespace {

// Pattern k in 0..5: a bright 10x10 square at one of six positions, on Gaussian noise. Classes
// 0-3 are known (trained on); 4 and 5 are unknown (only seen at test time).
void make_batch(Generator& gen, int B, const std::vector<int>& classes, Tensor& x, Tensor& y) {
  std::vector<float> px(size_t(B) * 1024);
  std::vector<int64_t> py(static_cast<size_t>(B), 0);
  const int rows[6] = {3, 3, 19, 19, 11, 11}, cols[6] = {3, 19, 3, 19, 3, 19};
  for (int b = 0; b < B; ++b) {
    const int k = classes[gen.below(classes.size())];
    py[size_t(b)] = k;
    float* img = px.data() + size_t(b) * 1024;
    for (int i = 0; i < 1024; ++i) img[i] = float(0.5 * gen.normal());
    for (int r = rows[k]; r < rows[k] + 10; ++r)
      for (int c = cols[k]; c < cols[k] + 10; ++c) img[r * 32 + c] += 1.5f;
  }
  x = Tensor::from_vector(px, {B, 1, 32, 32});
  y = Tensor::from_vector(py, {B});
}

// AUROC of scores with unknowns as positives (ties count one half).
double auroc(const std::vector<double>& known, const std::vector<double>& unknown) {
  double wins = 0;
  for (double u : unknown)
    for (double k : known) wins += u > k ? 1.0 : (u == k ? 0.5 : 0.0);
  return wins / (double(known.size()) * double(unknown.size()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cac_demo: a short Class Anchor Clustering run on synthetic images"};
  app.set_version_flag("--version", [] { return cac::engine_version(); }, "the engine's version, source revision and libraries");
  std::string device = "auto";
  int steps = 60, batch = 64;
  uint64_t seed = 0;
  app.add_option("--device", device, "auto, cpu or cuda")->check(cac::app::device_choice())->capture_default_str();
  app.add_option("--steps", steps, "training steps")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", batch, "batch size")->check(CLI::Range(2, 4096))->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    const Device dev = app::resolve_device(device);
    const bool gpu = dev == Device::CUDA;
    std::printf("cac_demo: classifier32, CAC loss (alpha 10, lambda 0.1), %d steps of %d on %s\n",
                steps, batch, gpu ? cuda::device_description().c_str() : "the CPU");

    Classifier32Config cfg;
    cfg.in_channels = 1;
    cfg.seed = seed;
    auto model = make_classifier32(cfg, 4, 10.0, false);
    model->to(dev);
    Trainer trainer(model, Method::CAC, 0.1, 0.9, 5e-6);
    Generator data(seed, 42);
    const std::vector<int> known = {0, 1, 2, 3}, unknown = {4, 5};
    const auto t0 = std::chrono::steady_clock::now();
    StepTotals totals;
    totals.reset(DType::F32, dev);
    for (int s = 1; s <= steps; ++s) {
      Tensor x, y;
      make_batch(data, batch, known, x, y);
      trainer.step(x.to(dev), y.to(dev), 0.01, totals);
      if (s % 10 == 0 || s == steps) {
        auto m = totals.means();
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("  step %4d/%d  loss %.4f (tuplet %.4f, anchor %.4f)  acc %5.1f%%  %.0f img/s\n", s,
                    steps, m.loss, m.tuplet, m.anchor, 100 * m.accuracy, s * batch / secs);
        totals.reset(DType::F32, dev);
      }
    }

    // Evaluation: open-set score min_j gamma_j for held-out known and unknown images.
    NoGradGuard no_grad;
    model->eval();
    std::vector<double> known_scores, unknown_scores;
    int64_t correct = 0, total = 0;
    for (int part = 0; part < 2; ++part) {
      for (int b = 0; b < 4; ++b) {
        Tensor x, y;
        make_batch(data, 64, part == 0 ? known : unknown, x, y);
        OpenSetOutput out = model->forward(x.to(dev));
        Tensor gamma = ops::open_set_score(out.distances).to(Device::CPU);
        std::vector<float> g = gamma.to_vector<float>();
        std::vector<int64_t> pred = ops::argmin(gamma).to_vector<int64_t>();
        std::vector<int64_t> lab = y.to_vector<int64_t>();
        for (int i = 0; i < 64; ++i) {
          const double score = *std::min_element(g.begin() + i * 4, g.begin() + i * 4 + 4);
          (part == 0 ? known_scores : unknown_scores).push_back(score);
          if (part == 0) correct += pred[size_t(i)] == lab[size_t(i)], ++total;
        }
      }
    }
    std::printf("held-out known accuracy %.1f%%, open-set AUROC (unknown patterns 4-5 vs known) %.3f\n",
                100.0 * double(correct) / double(total), auroc(known_scores, unknown_scores));
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "cac_demo: error: %s\n", e.what());
    return 1;
  }
}
