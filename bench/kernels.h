#pragma once
// cac_bench's kernel and loader benchmarks (bench/kernels.cpp, bench/loader.cpp).
#include <cstdint>

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
}  // namespace cac::bench
