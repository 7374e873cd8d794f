#include "apps/device_batches.h"

#include <algorithm>
#include <fmt/format.h>

#include "core/cuda_runtime.h"

namespace cac::app {

kernels::AugmentSpec augment_spec(const data::Augment& a, uint64_t seed) {
  kernels::AugmentSpec s;
  s.size = a.size;
  s.train = a.train;
  s.crop_scale_min = a.crop_scale_min;
  s.flip_p = a.flip_p;
  s.rotate_deg = a.rotate_deg;
  s.bilinear_rotation = a.rotate_interp == data::Interpolation::Bilinear;
  s.flip = a.flip;
  for (size_t c = 0; c < a.mean.size() && c < 3; ++c) s.mean[c] = a.mean[c], s.std[c] = a.std[c];
  s.seed = seed;
  return s;
}

DeviceBatches::DeviceBatches(const data::Subset& subset, const data::Augment& augment,
                             const data::Loader::Options& options, Device dev, const DeviceBatches* holding)
    : subset_(subset), spec_(augment_spec(augment, options.seed)), opt_(options), dev_(dev) {
  CAC_CHECK(subset_.source && subset_.size() > 0, "device batches: empty dataset");
  CAC_CHECK(opt_.batch > 0, "device batches: batch {} must be positive", opt_.batch);
  CAC_CHECK(augment.randaugment_n == 0, "device batches: RandAugment runs on the host loader only");
  CAC_CHECK(augment.mean.size() == size_t(subset_.source->channels()) && subset_.source->channels() <= 3,
            "device batches: normalisation for {} channels, images of {}", augment.mean.size(),
            subset_.source->channels());
  const bool shared = holding && holding->subset_.source == subset_.source && holding->dev_ == dev;
  images_ = shared ? holding->images_ : subset_.source->images.to(dev);
}

size_t DeviceBatches::device_bytes(const data::Subset& subset) { return subset.source->images.nbytes(); }

std::string DeviceBatches::host_only_reason(const data::Subset& subset, const data::Augment& augment, Device dev) {
  if (augment.randaugment_n > 0) return "RandAugment runs on the host loader";
  if (dev != Device::CUDA) return "the CPU trains from the host loader";
  const size_t need = device_bytes(subset), free = cuda::free_device_bytes();
  if (need > free / 4)
    return fmt::format("the images take {} MB, more than a quarter of the GPU's {} MB free", need >> 20, free >> 20);
  return "";
}

int64_t DeviceBatches::batches_per_epoch() const {
  const int64_t n = subset_.size();
  return opt_.drop_last ? n / opt_.batch : (n + opt_.batch - 1) / opt_.batch;
}

void DeviceBatches::start_epoch(int epoch) {
  const std::vector<int64_t> order = data::epoch_order(subset_.size(), opt_.shuffle, opt_.seed, epoch);
  std::vector<int64_t> rows(order.size()), labels(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    rows[i] = subset_.indices[size_t(order[i])];
    labels[i] = subset_.labels[size_t(order[i])];
  }
  const int64_t n = int64_t(order.size());
  rows_ = Tensor::from_vector(rows, {n}).to(dev_);
  positions_ = Tensor::from_vector(order, {n}).to(dev_);
  labels_ = Tensor::from_vector(labels, {n}).to(dev_);
  spec_.epoch = uint64_t(epoch);
  next_ = 0;
}

bool DeviceBatches::next(data::Batch* out) {
  CAC_CHECK(rows_.defined(), "device batches: next() before start_epoch()");
  if (next_ >= batches_per_epoch()) return false;
  const int64_t b0 = next_ * opt_.batch, b1 = std::min<int64_t>(subset_.size(), b0 + opt_.batch);
  out->images = Tensor::empty({b1 - b0, images_.dim(3), spec_.size, spec_.size}, DType::F32, dev_);
  kernels::augment_gather(images_, rows_.rows(b0, b1), positions_.rows(b0, b1), spec_, out->images);
  out->labels = labels_.rows(b0, b1);
  out->number = next_++;
  return true;
}

}  // namespace cac::app
