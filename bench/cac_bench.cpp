// cac_bench: throughput of a full classifier32 or ResNet-18 training step (`step`) and of the hand-written
// kernels at the real shapes (`kernels`, CUDA builds). Numbers are measured, never assumed.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "apps/device_option.h"
#include "core/build_info.h"
#include "bench/kernels.h"
#include "core/cuda_runtime.h"
#include "core/rng.h"
#include "models/classifier32.h"
#include "models/resnet18.h"
#include "models/training.h"

using namespace cac;

namespace {

struct StepOptions {
  std::string device = "cpu", arch = "classifier32", precision = "tf32";
  bool graph = false;
  int batch = 128, channels = 3, size = 32, classes = 0, warmup = 2, iters = 10;
};

const char* precision_words(const std::string& precision, Device dev) {
  if (precision == "bf16") return " (bf16 channels-last convs)";
  if (dev != Device::CUDA) return "";
  return precision == "tf32" ? " (tf32 convs)" : " (fp32 convs)";
}

// Dense peaks in TFLOP/s from NVIDIA's data sheets (FP32 cores; TF32 and BF16 tensor cores without
// sparsity), matched against the device's name, the more specific names first.
struct Peak {
  const char* name;
  double fp32, tf32, bf16;
};
constexpr Peak kPeaks[] = {
    {"H100 PCIe", 51.2, 378.0, 756.0}, {"H100 NVL", 60.0, 417.5, 835.5}, {"H200 NVL", 60.0, 417.5, 835.5},
    {"H100", 66.9, 494.7, 989.4},      {"H200", 66.9, 494.7, 989.4},     {"A100", 19.5, 156.0, 312.0},
};

// The step's FLOPs: 6 per multiply-add of the forward's convolutions and linear layers (2 in the
// forward, 2 each for the input and weight gradients; the stem's unneeded input gradient counted
// too, as the usual estimate does); then the rate and, on a GPU in the table, its share of the
// peak of the precision the convolutions run in.
void print_rate(Module& model, const StepOptions& o, const std::vector<std::pair<std::string, double>>& ms) {
  int64_t macs = 0;
  model.visit([&](const std::string&, Module& m) {
    if (auto* c = dynamic_cast<Conv2d*>(&m)) macs += c->macs;
    if (auto* l = dynamic_cast<Linear*>(&m)) macs += l->macs;
  });
  const double flops = 6.0 * double(macs);
  std::printf("%s training step: %.2f GFLOP per image (6 x %.3f G multiply-adds)", o.arch.c_str(),
              flops / o.batch / 1e9, double(macs) / o.batch / 1e9);
  const std::string gpu = o.device == "cuda" ? cuda::device_description() : "";
  const Peak* peak = nullptr;
  for (const Peak& p : kPeaks)
    if (!peak && gpu.find(p.name) != std::string::npos) peak = &p;
  const double top = !peak ? 0 : o.precision == "bf16" ? peak->bf16 : o.precision == "tf32" ? peak->tf32 : peak->fp32;
  for (const auto& [how, t] : ms) {
    const double tflops = flops / (t * 1e-3) / 1e12;
    if (tflops < 1) std::printf("; %s %.1f GFLOP/s", how.c_str(), tflops * 1e3);
    else std::printf("; %s %.1f TFLOP/s", how.c_str(), tflops);
    if (peak) std::printf(" = %.1f%% of the %s's dense %s peak (%.0f)", 100 * tflops / top, peak->name,
                          o.precision.c_str(), top);
  }
  std::printf("\n");
}

// Why the step cannot run as asked ("" when it can).
std::string step_refusal(const StepOptions& o, Device dev) {
  if (o.graph && dev != Device::CUDA) return "--graph records CUDA work; add --device cuda";
  std::string why;
  if (dev == Device::CUDA && !cuda::device_available(&why)) return "no usable CUDA device: " + why;
  return "";
}

std::shared_ptr<OpenSetClassifier> step_model(const StepOptions& o, int classes) {
  const bool bf16 = o.precision == "bf16";
  if (o.arch == "resnet18") return make_resnet18(ResNet18Config{o.channels, o.size, 0, bf16}, classes, 10.0, false);
  Classifier32Config cfg;
  cfg.in_channels = o.channels;
  cfg.image_size = o.size;
  cfg.bf16 = bf16;
  return make_classifier32(cfg, classes, 10.0, false);
}

// Milliseconds per call of `step` over o.iters calls after o.warmup untimed ones.
double time_steps(const StepOptions& o, const std::function<void()>& step) {
  for (int i = 0; i < o.warmup; ++i) step();
  cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < o.iters; ++i) step();
  cuda::synchronize();
  return 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / o.iters;
}

int run_step(const StepOptions& o) {
  const Device dev = o.device == "cuda" ? Device::CUDA : Device::CPU;
  if (const std::string no = step_refusal(o, dev); !no.empty()) {
    std::fprintf(stderr, "cac_bench step: %s\n", no.c_str());
    return 2;
  }
  if (dev == Device::CUDA) cuda::set_allow_tf32(o.precision != "fp32");
  const int classes = o.classes > 0 ? o.classes : o.arch == "resnet18" ? 10 : 6;  // FP experiment / a trial
  std::shared_ptr<OpenSetClassifier> model = step_model(o, classes);
  model->to(dev);
  Trainer trainer(model, Method::CAC, 0.1, 0.9, 5e-4);
  if (o.precision == "bf16") trainer.keep_bf16_weights();
  Generator gen(1);
  std::vector<float> x(size_t(o.batch) * o.channels * o.size * o.size);
  for (auto& v : x) v = float(gen.normal());
  std::vector<int64_t> y(size_t(o.batch), 0);
  for (auto& v : y) v = int64_t(gen.below(uint64_t(classes)));
  Tensor images = Tensor::from_vector(x, {o.batch, o.channels, o.size, o.size}).to(dev);
  Tensor labels = Tensor::from_vector(y, {o.batch}).to(dev);
  StepTotals totals;
  totals.reset(DType::F32, dev);
  const double ms = time_steps(o, [&] { trainer.step(images, labels, 0.01, totals); });
  std::printf("%s training step  device=%s%s  batch=%d  input=%dx%dx%d  %.2f ms/step  %.1f images/s"
              "  (loss %.4f, %d timed steps after %d warm-up)\n",
              o.arch.c_str(), o.device.c_str(), precision_words(o.precision, dev), o.batch, o.size, o.size,
              o.channels, ms, 1e3 * o.batch / ms, totals.means().loss, o.iters, o.warmup);
  std::vector<std::pair<std::string, double>> rates = {{"eager", ms}};
  if (dev == Device::CUDA && o.graph) {
    // The same step recorded once into a CUDA graph and replayed back to back: the host's launch
    // work per step becomes one graph launch (the replays repeat one step's inputs and dropout masks).
    cuda::RecordedWork graph([&] { trainer.step(images, labels, 0.01, totals); });
    const double gms = time_steps(o, [&] { graph.replay(); });
    std::printf("%s training step  CUDA graph replay (%zu nodes)  %.2f ms/step  %.1f images/s\n", o.arch.c_str(),
                graph.launches(), gms, 1e3 * o.batch / gms);
    rates.emplace_back("graph", gms);
  }
  print_rate(*model, o, rates);
  if (dev == Device::CUDA) {
    auto st = cuda::allocator_stats();
    std::printf("device memory: peak %.1f MiB in tensors, %.1f MiB reserved, %zu cudaMalloc calls\n",
                double(st.peak_in_use) / (1 << 20), double(st.reserved) / (1 << 20), st.device_allocations);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cac_bench: measured throughput of the CAC engine"};
  app.set_version_flag("--version", [] { return cac::engine_version(); }, "the engine's version, source revision and libraries");
  app.require_subcommand(1);
  StepOptions so;
  auto* step = app.add_subcommand("step", "images/s of a full CAC training step (classifier32 or ResNet-18)");
  step->add_option("--arch", so.arch, "classifier32 or resnet18")->check(CLI::IsMember({"classifier32", "resnet18"}))->capture_default_str();
  step->add_option("--device", so.device, "cpu or cuda")->check(cac::app::device_choice({"cpu", "cuda"}))->capture_default_str();
  step->add_option("--batch", so.batch, "batch size")->check(CLI::PositiveNumber)->capture_default_str();
  step->add_option("--channels", so.channels, "input channels (1 or 3)")->check(CLI::IsMember({1, 3}))->capture_default_str();
  step->add_option("--size", so.size, "image size (32 or 64)")->check(CLI::IsMember({32, 64}))->capture_default_str();
  step->add_option("--classes", so.classes, "known classes (default: 6 for classifier32, 10 for resnet18)")->check(CLI::Range(2, 1000));
  step->add_option("--warmup", so.warmup, "untimed steps first")->check(CLI::NonNegativeNumber)->capture_default_str();
  step->add_option("--iters", so.iters, "timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  step->add_option("--precision", so.precision, "fp32, tf32 (TF32 tensor-core convolutions, PyTorch's default) or bf16 "
                   "(the convolution stack on bf16 channels-last activations)")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16"}))->capture_default_str();
  step->add_flag("--graph", so.graph, "also time the step recorded into a CUDA graph and replayed (cuda only)");
  bench::KernelOptions ko;
  auto* kern = app.add_subcommand("kernels", "each hand-written CUDA kernel: check vs CPU twin, then time");
  kern->add_option("--batch", ko.batch, "batch size of the activation shapes")->check(CLI::PositiveNumber)->capture_default_str();
  kern->add_option("--iters", ko.iters, "timed runs per kernel (median reported)")->check(CLI::PositiveNumber)->capture_default_str();
  bench::LoaderOptions lo;
  auto* load = app.add_subcommand("loader", "images/s of the data loader with the CIFAR10/MNIST augmentation");
  load->add_option("--images", lo.images, "synthetic CIFAR-shaped images")->check(CLI::PositiveNumber)->capture_default_str();
  load->add_option("--batch", lo.batch, "batch size")->check(CLI::PositiveNumber)->capture_default_str();
  bench::EpochOptions eo;
  auto* epoch = app.add_subcommand("epoch", "whole epochs of cac_train's loop on synthetic data of each benchmark's "
                                   "shape, and the paper's protocol's wall time projected from them");
  epoch->add_option("--dataset", eo.dataset, "MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR+10, TinyImageNet, or all "
                    "(the five that Table 1 trains)")
      ->check(CLI::IsMember({"all", "MNIST", "FashionMNIST", "SVHN", "CIFAR10", "CIFAR+10", "TinyImageNet"}))
      ->capture_default_str();
  epoch->add_option("--device", eo.device, "auto, cpu or cuda")->check(cac::app::device_choice())->capture_default_str();
  epoch->add_option("--epochs", eo.epochs, "epochs timed per benchmark (the first is left out of the projection)")
      ->check(CLI::Range(1, 1000))->capture_default_str();
  epoch->add_option("--workers", eo.workers, "data loader threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  epoch->add_option("--scale", eo.scale, "time this share of each training set (the projection scales it up)")
      ->check(CLI::Range(1e-4, 1.0))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (*epoch) return bench::run_epoch(eo);
    if (*step) return run_step(so);
    if (*kern) return bench::run_kernels(ko);
    if (*load) return bench::run_loader(lo);
  } catch (const cac::Error& e) {
    std::fprintf(stderr, "cac_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
