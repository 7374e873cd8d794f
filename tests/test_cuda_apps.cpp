// cac_train and cac_eval on the GPU, end to end on a tiny MNIST-format dataset: the whole device
// path (pinned loader ring and copy stream, training steps, checkpoints of device tensors,
// validation, class means and scoring on the device) against the same run on the CPU. Labelled
// cuda; skipped without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "apps/evaluate.h"
#include "apps/train.h"
#include "core/cuda_runtime.h"
#include "models/checkpoint.h"
#include "tests/fake_datasets.h"
#include "tests/op_cases.h"
#include "tests/tiny_run.h"

namespace cac {
namespace {

app::RunConfig tiny_run(const std::string& data, const std::string& out, const std::string& device) {
  return testing::tiny_mnist_run(data, out, device);
}

std::vector<std::vector<std::string>> csv_rows(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(f, line);) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

app::EvalOptions eval_of(const std::string& run, const std::string& device, const std::string& scores) {
  app::EvalOptions o;
  o.runs = {run};
  o.device = device;
  o.workers = 2;
  o.scores_csv = scores;
  return o;
}

// cac_train --init on the GPU: weights given as a file go to device memory and, with 0 epochs,
// come back into best.safetensors unchanged (a copy, no arithmetic: bit for bit).
TEST(CudaApps, InitOnTheGpuHoldsTheGivenWeights) {
  std::string why;
  if (!cuda::device_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  testing::TempDir d("cac-cuda-init");
  testing::write_mnist_idx(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_run(d / "mnist", d / "cpu", "cpu"), ""), 0);
  app::RunConfig c = tiny_run(d / "mnist", d / "gpu", "cuda");
  c.epochs = {0};
  c.lrs = {0.01};
  c.init = d / "cpu/best.safetensors";
  ASSERT_EQ(app::run_train(c, ""), 0);
  const Safetensors a = load_safetensors(d / "cpu/best.safetensors"), b = load_safetensors(d / "gpu/best.safetensors");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    ASSERT_TRUE(b.tensors.count(name)) << name;
    const Tensor& u = b.tensors.at(name);
    ASSERT_EQ(u.nbytes(), t.nbytes()) << name;
    EXPECT_EQ(std::memcmp(u.raw(), t.raw(), t.nbytes()), 0) << name << " changed on the way through the GPU";
  }
}

TEST(CudaApps, TrainAndEvaluateOnTheGpuAgreeWithTheCpu) {
  std::string why;
  if (!cuda::device_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  // Full float32 convolutions through GEMM-based algorithms, as in the GPU-vs-CPU op tests.
  cuda::set_allow_tf32(false);
  cuda::set_strict_conv_algorithms(true);
  testing::TempDir d("cac-cuda-apps");
  testing::write_mnist_idx(d / "mnist", 12);
  ASSERT_EQ(app::run_train(tiny_run(d / "mnist", d / "cpu", "cpu"), ""), 0);
  ASSERT_EQ(app::run_train(tiny_run(d / "mnist", d / "gpu", "cuda"), ""), 0);
  // The same with the host loader (pinned ring, copy stream) instead of the set held on the GPU,
  // and every step eager instead of replayed from a CUDA graph: 3 batches of 16 per epoch, so the
  // graph run records its step at the third and replays it for the rest, across the stage change.
  app::RunConfig host_loader = tiny_run(d / "mnist", d / "gpu-host", "cuda");
  host_loader.data_on_device = app::DataOnDevice::Off;
  host_loader.graph = app::GraphUse::Off;
  ASSERT_EQ(app::run_train(host_loader, ""), 0);
  const std::string gpu_log = app::read_text(d / "gpu/train.log"), host_log = app::read_text(d / "gpu-host/train.log");
  EXPECT_NE(gpu_log.find("training data: on the GPU"), std::string::npos) << gpu_log;
  EXPECT_NE(gpu_log.find("validation data: on the GPU (the training set's copy)"), std::string::npos) << gpu_log;
  EXPECT_EQ(host_log.find("validation data: on the GPU"), std::string::npos) << host_log;
  EXPECT_NE(gpu_log.find("CUDA graphs: on (--graph auto)"), std::string::npos) << gpu_log;
  EXPECT_NE(gpu_log.find("CUDA graphs: the training step of 16 images recorded"), std::string::npos) << gpu_log;
  std::smatch replayed;
  ASSERT_TRUE(std::regex_search(gpu_log, replayed, std::regex("CUDA graphs: (\\d+) replayed"))) << gpu_log;
  EXPECT_GE(std::stoi(replayed[1]), 4) << "training steps 3-6 replayed";
  EXPECT_NE(host_log.find("training data: host loader (--data-on-device off)"), std::string::npos) << host_log;
  EXPECT_NE(host_log.find("CUDA graphs: off (--graph off)"), std::string::npos) << host_log;
  for (const char* run : {"gpu", "gpu-host"}) {
    SCOPED_TRACE(run);
    const auto cpu_m = csv_rows(d / "cpu/metrics.csv"), gpu_m = csv_rows(d / (std::string(run) + "/metrics.csv"));
    ASSERT_EQ(gpu_m.size(), cpu_m.size());
    for (size_t r = 1; r < cpu_m.size(); ++r)
      for (size_t k : {2, 3, 4, 6})  // train_loss, train_tuplet, train_anchor, val_loss: as below
        EXPECT_LE(std::abs(std::stod(gpu_m[r][k]) - std::stod(cpu_m[r][k])), 1e-3 * std::abs(std::stod(cpu_m[r][k])))
            << cpu_m[0][k] << " epoch " << r;
  }

  // Training: 6 steps on each device. The step tests compare one step's every gradient (on an
  // H100 within 4.5e-5..7.1e-5 of each tensor's largest gradient); here the per-epoch losses must
  // agree to 1e-3 relative: well above float32 rounding carried through 6 steps, well below what a
  // wrong batch, a stale buffer or a skipped update does (this run's training loss goes from 2.41
  // to 1.71 between its two epochs, measured on the CPU).
  const auto cpu_m = csv_rows(d / "cpu/metrics.csv"), gpu_m = csv_rows(d / "gpu/metrics.csv");
  ASSERT_EQ(cpu_m.size(), 3u);  // header + 2 epochs
  ASSERT_EQ(gpu_m.size(), cpu_m.size());
  EXPECT_EQ(gpu_m[0], cpu_m[0]);
  for (size_t r = 1; r < cpu_m.size(); ++r)
    for (const char* col : {"train_loss", "train_tuplet", "train_anchor", "val_loss"}) {
      const size_t k = size_t(std::find(cpu_m[0].begin(), cpu_m[0].end(), col) - cpu_m[0].begin());
      ASSERT_LT(k, cpu_m[r].size()) << col;
      const double a = std::stod(gpu_m[r][k]), b = std::stod(cpu_m[r][k]);
      EXPECT_TRUE(std::isfinite(a)) << col << " epoch " << r;
      EXPECT_LE(std::abs(a - b), 1e-3 * std::abs(b)) << col << " epoch " << r << ": gpu " << a << " cpu " << b;
    }
  // The GPU checkpoint holds the same tensors as the CPU one (saved from device memory), finite.
  Safetensors gpu_ck = load_safetensors(d / "gpu/last.safetensors"), cpu_ck = load_safetensors(d / "cpu/last.safetensors");
  ASSERT_EQ(gpu_ck.tensors.size(), cpu_ck.tensors.size());
  for (auto& [name, t] : cpu_ck.tensors) {
    ASSERT_TRUE(gpu_ck.tensors.count(name)) << name;
    const Tensor& g = gpu_ck.tensors.at(name);
    ASSERT_EQ(g.shape(), t.shape()) << name;
    ASSERT_EQ(g.dtype(), t.dtype()) << name;
    if (g.dtype() == DType::F32) {
      for (float v : g.to_vector<float>()) ASSERT_TRUE(std::isfinite(v)) << name;
    }
  }
  EXPECT_EQ(gpu_ck.metadata.at("epochs_done"), "2");

  // Evaluation of one checkpoint (the CPU run's) on both devices: the same forward in float32.
  // Rounding errors of successive layers add, so each image's score agrees within the sum of the
  // layers' own tolerances (f32_tolerance of each reduction: classifier32's 9 convolutions on a
  // 1-channel input, the 8x8 average pool, the 128-wide linear layer, the distances), about 3e-4
  // relative. A prediction can flip only where two anchor distances are that close; one flip in
  // the 120 images is allowed.
  ASSERT_EQ(app::run_eval(eval_of(d / "cpu", "cpu", d / "scores-cpu.csv")), 0);
  ASSERT_EQ(app::run_eval(eval_of(d / "cpu", "cuda", d / "scores-gpu.csv")), 0);
  const auto sc = csv_rows(d / "scores-cpu.csv"), sg = csv_rows(d / "scores-gpu.csv");
  ASSERT_EQ(sc.size(), 121u);  // header + 72 known + 48 unknown test images
  ASSERT_EQ(sg.size(), sc.size());
  ASSERT_EQ(sc[0], (std::vector<std::string>{"run", "split", "set", "label", "prediction", "score"}));
  testing::Tolerance tol{0, 0};
  for (int64_t reduction : {1 * 9, 64 * 9, 64 * 9, 64 * 9, 128 * 9, 128 * 9, 128 * 9, 128 * 9, 128 * 9, 64, 128, 6}) {
    tol.atol += testing::f32_tolerance(reduction).atol;
    tol.rtol += testing::f32_tolerance(reduction).rtol;
  }
  int flips = 0;
  for (size_t r = 1; r < sc.size(); ++r) {
    ASSERT_EQ(sg[r].size(), 6u);
    EXPECT_EQ(sg[r][2], sc[r][2]) << "row " << r;  // known / unknown, in the same order
    EXPECT_EQ(sg[r][3], sc[r][3]) << "row " << r;  // label
    flips += sg[r][4] != sc[r][4];
    const double a = std::stod(sg[r][5]), b = std::stod(sc[r][5]);
    EXPECT_TRUE(tol.close(a, b)) << "row " << r << ": gpu score " << a << " cpu " << b;
  }
  EXPECT_LE(flips, 1);
}

}  // namespace
}  // namespace cac
