// The loader's device path: batches in page-locked buffers, copied on the copy stream into device
// tensors, equal to the CPU loader's batches. Label `cuda`; skips without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/cuda_runtime.h"
#include "data/loader.h"
#include "apps/device_batches.h"
#include "kernels/augment.h"

namespace cac::data {
namespace {

TEST(CudaLoader, DeviceBatchesEqualHostBatches) {
  std::string why;
  if (!cuda::device_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  ImageSet s;
  s.name = "synthetic";
  s.images = Tensor::empty({50, 8, 8, 3}, DType::U8);
  for (int64_t i = 0; i < s.images.numel(); ++i) s.images.data<uint8_t>()[i] = uint8_t(i * 13);
  std::vector<int64_t> labels(50);
  for (int i = 0; i < 50; ++i) labels[size_t(i)] = i % 5;
  s.labels = Tensor::from_vector(labels, {50});
  Subset all;
  all.source = &s;
  for (int i = 0; i < 50; ++i) {
    all.indices.push_back(i);
    all.labels.push_back(labels[size_t(i)]);
  }
  Augment a;
  a.size = 8;
  a.train = true;
  a.flip_p = 0.5;
  a.mean = {0.5f, 0.5f, 0.5f};
  a.std = {0.25f, 0.25f, 0.25f};
  Loader::Options o;
  o.batch = 16;
  o.workers = 3;
  Loader::Options og = o;
  og.device = Device::CUDA;
  Loader host(all, a, o), dev(all, a, og);
  host.start_epoch(1);
  dev.start_epoch(1);
  Batch hb, db;
  int n = 0;
  while (host.next(&hb)) {
    std::vector<float> h = hb.images.to_vector<float>();
    std::vector<int64_t> hl = hb.labels.to_vector<int64_t>();
    ASSERT_TRUE(dev.next(&db));
    EXPECT_EQ(db.images.device(), Device::CUDA);
    EXPECT_EQ(db.images.to_vector<float>(), h);
    EXPECT_EQ(db.labels.to_vector<int64_t>(), hl);
    ++n;
  }
  EXPECT_EQ(n, 4);
  EXPECT_FALSE(dev.next(&db));
}


// The device augmentation kernel (issue 23, kernels/augment.h) against its CPU twin, the loader's
// own transform, at each benchmark's shape. Both compute the same float operations on the same
// pixels, the device with fused multiply-adds in the blends: a few float ulps of 255 apart, so
// 1e-3 / 255 / std after normalisation. A nearest-pixel rotation reads another pixel where a
// source coordinate lies within an ulp of a pixel edge (host and device cos/sin may differ by an
// ulp): at most 0.1% of the values may differ by more.
TEST(CudaAugment, KernelMatchesTheLoadersTransformAtEveryBenchmarkShape) {
  std::string why;
  if (!cuda::device_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  struct Case {
    const char* name;
    int h, w, c, size;
    bool train;
    double crop, flip_p, rotate;
    bool bilinear = false, eval_flip = false;
  };
  const Case cases[] = {
      {"MNIST", 28, 28, 1, 32, true, 0.7, 0.0, 0},
      {"SVHN/CIFAR", 32, 32, 3, 32, true, 0.8, 0.5, 10},
      {"CIFAR, bilinear rotation", 32, 32, 3, 32, true, 0.8, 0.5, 10, true},
      {"TinyImageNet", 64, 64, 3, 64, true, 0.7, 0.5, 20},
      {"non-square", 24, 40, 3, 32, true, 0.5, 0.5, 30},
      {"evaluation", 28, 28, 1, 32, false, 1, 0, 0},
      {"evaluation, flipped", 32, 32, 3, 32, false, 1, 0, 0, false, true},
  };
  Generator pixels(5);
  for (const Case& k : cases) {
    const int64_t n = 40, batch = 33;
    Tensor images = Tensor::empty({n, k.h, k.w, k.c}, DType::U8);
    for (int64_t i = 0; i < images.numel(); ++i) images.data<uint8_t>()[i] = uint8_t(pixels.next_u64());
    std::vector<int64_t> rows, positions;
    for (int64_t b = 0; b < batch; ++b) rows.push_back(b * 7 % n), positions.push_back(1000 + 3 * b);
    const Augment aug{k.size, k.train, k.crop, k.flip_p, k.rotate,
                      k.bilinear ? Interpolation::Bilinear : Interpolation::Nearest, k.eval_flip, 0, 0,
                      std::vector<float>(size_t(k.c), 0.4f), std::vector<float>(size_t(k.c), 0.25f)};
    kernels::AugmentSpec spec = app::augment_spec(aug, 9);
    spec.epoch = 3;
    const Tensor r = Tensor::from_vector(rows, {batch}), p = Tensor::from_vector(positions, {batch});
    Tensor cpu = Tensor::empty({batch, k.c, k.size, k.size});
    kernels::augment_gather(images, r, p, spec, cpu);
    Tensor gpu = Tensor::empty({batch, k.c, k.size, k.size}, DType::F32, Device::CUDA);
    kernels::augment_gather(images.to(Device::CUDA), r.to(Device::CUDA), p.to(Device::CUDA), spec, gpu);
    const std::vector<float> a = cpu.to_vector<float>(), b = gpu.to_vector<float>();
    const float tol = 1e-3f / 255.f / 0.25f;
    size_t off = 0;
    float worst = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const float d = std::fabs(a[i] - b[i]);
      off += d > tol;
      worst = std::max(worst, d);
    }
    const size_t allowed = k.rotate > 0 && !k.bilinear ? a.size() / 1000 : 0;
    EXPECT_LE(off, allowed) << k.name << ": " << off << " of " << a.size() << " values beyond " << tol
                            << " (worst " << worst << ")";
  }
}

}  // namespace
}  // namespace cac::data
