#include "data/loader.h"

#include <algorithm>
#include <cstring>

#include "core/rng.h"

namespace cac::data {

Loader::Loader(Subset subset, Augment augment, Options options)
    : subset_(std::move(subset)), augment_(std::move(augment)), opt_(options) {
  CAC_CHECK(subset_.source && subset_.size() > 0, "loader: empty dataset");
  CAC_CHECK(opt_.batch > 0 && opt_.prefetch >= 2, "loader: batch {} must be positive and prefetch {} at "
            "least 2 (one batch held by the consumer, one being filled)", opt_.batch, opt_.prefetch);
  channels_ = subset_.source->channels();
  const size_t img_bytes = size_t(opt_.batch) * channels_ * augment_.size * augment_.size * sizeof(float);
  const bool pinned = opt_.device == Device::CUDA;
  slots_.resize(size_t(opt_.prefetch));
  for (Slot& s : slots_) {
    s.images = pinned ? cuda::allocate_pinned(img_bytes) : allocate_storage(img_bytes, Device::CPU);
    s.labels = pinned ? cuda::allocate_pinned(size_t(opt_.batch) * 8) : allocate_storage(size_t(opt_.batch) * 8, Device::CPU);
  }
  int workers = opt_.workers > 0 ? opt_.workers : int(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  ready_cv_.notify_all();
  for (auto& t : threads_) t.join();
  for (Slot& s : slots_) cuda::wait_host(s.in_flight);
}

int64_t Loader::batches_per_epoch() const {
  const int64_t n = subset_.size();
  return opt_.drop_last ? n / opt_.batch : (n + opt_.batch - 1) / opt_.batch;
}

std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
  if (shuffle) {
    Generator g(seed, 0x5eed0000ull + uint64_t(epoch));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[g.below(i)]);
  }
  return order;
}

void Loader::start_epoch(int epoch) {
  auto order = std::make_shared<std::vector<int64_t>>(epoch_order(subset_.size(), opt_.shuffle, opt_.seed, epoch));
  std::unique_lock<std::mutex> lock(mu_);
  ready_cv_.wait(lock, [&] { return busy_ == 0; });  // let workers finish slots they hold
  ++generation_;
  epoch_ = epoch;
  order_ = std::move(order);
  n_batches_ = batches_per_epoch();
  next_fill_ = returned_ = 0;
  for (Slot& s : slots_) {
    s.ready = false;
    s.batch = -1;
  }
  lock.unlock();
  work_cv_.notify_all();
}

void Loader::worker() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Batch k reuses the slot of batch k - prefetch, which is free once the consumer has moved
    // past it: it holds batch returned_ - 1 until its next call.
    work_cv_.wait(lock, [&] { return stop_ || (next_fill_ < n_batches_ && next_fill_ < returned_ + opt_.prefetch - 1); });
    if (stop_) return;
    const int64_t k = next_fill_++;
    const int64_t gen = generation_;
    const int epoch = epoch_;
    auto order = order_;
    Slot& slot = slots_[size_t(k % opt_.prefetch)];
    ++busy_;
    lock.unlock();
    std::string error;
    try {
      cuda::wait_host(slot.in_flight);  // the previous device copy from this slot has finished
      fill(slot, k, epoch, *order);
    } catch (const std::exception& e) {
      error = e.what();
    }
    lock.lock();
    --busy_;
    if (gen == generation_) {
      slot.batch = k;
      slot.ready = error.empty();
      if (!error.empty()) {  // surface the error to the consumer; the loader stops
        error_ = error;
        stop_ = true;
      }
    }
    ready_cv_.notify_all();
  }
}

void Loader::fill(Slot& slot, int64_t k, int epoch, const std::vector<int64_t>& order) {
  const int64_t begin = k * opt_.batch, end = std::min<int64_t>(begin + opt_.batch, subset_.size());
  const ImageSet& set = *subset_.source;
  const size_t per = size_t(channels_) * augment_.size * augment_.size;
  float* images = static_cast<float*>(slot.images->data);
  int64_t* labels = static_cast<int64_t*>(slot.labels->data);
  for (int64_t j = begin; j < end; ++j) {
    const int64_t pos = order[size_t(j)];
    const int64_t idx = subset_.indices[size_t(pos)];
    // Draws depend on (seed, epoch, sample position in the subset): same batches with any threads.
    transform_image(set.image(idx), set.height(), set.width(), channels_, augment_, opt_.seed,
                    uint64_t(epoch), uint64_t(pos), images + size_t(j - begin) * per);
    labels[j - begin] = subset_.labels[size_t(pos)];
  }
}

bool Loader::next(Batch* out) {
  std::unique_lock<std::mutex> lock(mu_);
  CAC_CHECK(epoch_ >= 0, "loader: call start_epoch() before next()");
  if (returned_ >= n_batches_) return false;
  const int64_t k = returned_;
  Slot& slot = slots_[size_t(k % opt_.prefetch)];
  ready_cv_.wait(lock, [&] { return stop_ || (slot.ready && slot.batch == k); });
  CAC_CHECK(!stop_ || (slot.ready && slot.batch == k), "loader: preparing batch {} failed: {}", k,
            error_.empty() ? "the loader was stopped" : error_);
  lock.unlock();

  const int64_t n = std::min<int64_t>(opt_.batch, subset_.size() - k * opt_.batch);
  const Shape ishape{n, channels_, augment_.size, augment_.size};
  Tensor host_images = Tensor::view_of(slot.images, 0, ishape, DType::F32);
  Tensor host_labels = Tensor::view_of(slot.labels, 0, {n}, DType::I64);
  if (opt_.device == Device::CUDA) {
    out->images = Tensor::empty(ishape, DType::F32, Device::CUDA);
    out->labels = Tensor::empty({n}, DType::I64, Device::CUDA);
    cuda::copy_to_device_async(out->labels.raw(), host_labels.raw(), host_labels.nbytes());
    slot.in_flight = cuda::copy_to_device_async(out->images.raw(), host_images.raw(), host_images.nbytes());
  } else {
    out->images = host_images;  // valid until the next call (the slot is then refilled)
    out->labels = host_labels;
  }
  out->number = k;
  lock.lock();
  slot.ready = false;
  ++returned_;
  lock.unlock();
  work_cv_.notify_all();
  return true;
}

}  // namespace cac::data
