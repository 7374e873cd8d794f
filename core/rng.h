#pragma once
// Counter-based random numbers: every draw is a pure function of (seed, stream, index), so the CPU
// reference and the CUDA kernels produce the same masks and nothing depends on hidden state or on
// the number of threads.
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define CAC_HD __host__ __device__ __forceinline__
#else
#define CAC_HD inline
#endif

namespace cac {

CAC_HD uint64_t mix64(uint64_t x) {  // splitmix64 finaliser: a bijective avalanche mix
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

CAC_HD uint64_t hash3(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(seed ^ mix64(stream)) ^ index);
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
CAC_HD float uniform_from_bits(uint64_t bits) { return float(bits >> 40) * (1.0f / 16777216.0f); }

// One generator object per consumer (model initialisation, data order, ...). Its state is two
// integers, so it is cheap to copy, checkpoint and split.
class Generator {
 public:
  // (The draws are host and device functions: data/draws.h augments on both.)
  CAC_HD explicit Generator(uint64_t seed = 0, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  CAC_HD uint64_t next_u64() { return hash3(seed_, stream_, counter_++); }
  CAC_HD double uniform() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }  // [0,1)
  double normal() {  // Box-Muller; one value per call keeps the sequence simple to reason about
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  CAC_HD uint64_t below(uint64_t n) { return next_u64() % n; }
  // A child generator with an independent stream, e.g. one per layer or per epoch.
  Generator split(uint64_t stream) const { return Generator(mix64(seed_ ^ stream_), stream); }
  uint64_t seed() const { return seed_; }
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t c) { counter_ = c; }

 private:
  uint64_t seed_, stream_, counter_ = 0;
};

}  // namespace cac
