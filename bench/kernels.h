#pragma once
// cac_bench's kernel and loader benchmarks (bench/kernels.cpp, bench/loader.cpp).
#include <cstdint>
#include <string>

namespace cac::bench {
struct KernelOptions {
  int64_t batch = 128;
  int64_t slab = 1200000;  // about classifier32's parameter count
  int iters = 50;
};
int run_kernels(const KernelOptions& o);

struct LoaderOptions {
  int64_t images = 20000;  // synthetic CIFAR-shaped images
  int batch = 128;
};
int run_loader(const LoaderOptions& o);

struct EpochOptions {
  std::string dataset = "all", device = "auto";
  int epochs = 2, workers = 0;
  double scale = 1.0;  // the share of each benchmark's training set to time (the projection scales it up)
};
// Whole epochs of cac_train's loop on synthetic data of each benchmark's shape, and the projected
// wall time of the protocol (bench/epoch.cpp).
int run_epoch(const EpochOptions& o);
}  // namespace cac::bench
