// The loader's device path: batches in page-locked buffers, copied on the copy stream into device
// tensors, equal to the CPU loader's batches. Label `cuda`; skips without a device.
#include <gtest/gtest.h>

#include "core/cuda_runtime.h"
#include "data/loader.h"

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

}  // namespace
}  // namespace cac::data
