#pragma once
#include <cstdint>

namespace cac::bench {
struct KernelOptions {
  int64_t batch = 128;
  int64_t slab = 1200000;  // about classifier32's parameter count
  int iters = 50;
};
int run_kernels(const KernelOptions& o);
}  // namespace cac::bench
