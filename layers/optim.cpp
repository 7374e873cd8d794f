#include "layers/optim.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/elementwise.h"

namespace cac {

SGD::SGD(ParameterStore& store, double momentum, double weight_decay)
    : store_(store), lr_value_(std::nan("")), momentum_(momentum), weight_decay_(weight_decay) {
  CAC_CHECK(momentum >= 0 && weight_decay >= 0, "SGD: momentum {} and weight decay {} must be >= 0",
            momentum, weight_decay);
  if (store.total() > 0)
    momentum_buf_ = Tensor::zeros({store.total()}, store.values().dtype(), store.values().device());
}

void SGD::set_lr(double lr) {
  if (store_.total() == 0 || lr == lr_value_) return;
  const Tensor host = Tensor::from_vector(std::vector<double>{lr}, {});
  if (!lr_.defined()) lr_ = host.to(store_.values().device()).clone();
  else lr_.copy_from(host);
  lr_value_ = lr;
}

void SGD::step() {
  if (store_.total() == 0) return;
  CAC_CHECK(lr_.defined(), "SGD: step() before any learning rate was set");
  Tensor values = store_.values();
  kernels::sgd_step(values, store_.grads(), momentum_buf_, lr_, momentum_, weight_decay_,
                    bf16_.copy.defined() ? &bf16_ : nullptr);
}

void SGD::keep_bf16_copy(const std::vector<Tensor>& channels_last) {
  if (store_.total() == 0) return;
  std::vector<kernels::TransposedBlock> blocks;
  channels_last_.clear();
  for (const Tensor& p : store_.params()) {
    const bool listed = std::any_of(channels_last.begin(), channels_last.end(),
                                    [&](const Tensor& c) { return c.raw() == p.raw(); });
    if (!listed) continue;
    CAC_CHECK(p.ndim() == 4, "SGD: a channels-last bf16 copy is for [K, C, R, S] weights, got {}", p.str());
    blocks.push_back({store_.offset_of(p), p.dim(0), p.dim(1), p.dim(2) * p.dim(3)});
    channels_last_.push_back(p.raw());
  }
  CAC_CHECK(blocks.size() == channels_last.size(), "SGD: {} of {} channels-last parameters are not in the slab",
            channels_last.size() - blocks.size(), channels_last.size());
  std::sort(blocks.begin(), blocks.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
  bf16_ = kernels::make_bf16_copy(store_.values(), blocks);
  refresh_bf16_copy();
}

void SGD::refresh_bf16_copy() {
  if (bf16_.copy.defined()) kernels::write_bf16_copy(store_.values(), bf16_);
}

Tensor SGD::bf16_copy_of(const Tensor& p) const {
  if (!bf16_.copy.defined()) return Tensor();
  const bool last = std::find(channels_last_.begin(), channels_last_.end(), p.raw()) != channels_last_.end();
  const Shape shape = last ? Shape{p.dim(0), p.dim(2), p.dim(3), p.dim(1)} : p.shape();
  return Tensor::view_of(bf16_.copy.impl()->storage, size_t(store_.offset_of(p)), shape, DType::BF16);
}

// In place: the buffer's address stays the one a recorded step writes.
void SGD::reset_momentum() {
  if (momentum_buf_.defined()) momentum_buf_.zero_();
}

LrSchedule::LrSchedule(std::vector<int> stage_epochs, std::vector<double> lrs)
    : epochs_(std::move(stage_epochs)), lrs_(std::move(lrs)) {
  CAC_CHECK(!epochs_.empty() && epochs_.size() == lrs_.size(),
            "learning-rate schedule: {} stage lengths but {} learning rates", epochs_.size(),
            lrs_.size());
  for (size_t i = 0; i < epochs_.size(); ++i)
    CAC_CHECK(epochs_[i] >= 0 && lrs_[i] > 0, "learning-rate schedule: stage {} has {} epochs at lr {}",
              i, epochs_[i], lrs_[i]);
}

LrSchedule LrSchedule::cosine(int total_epochs, double base, int warmup_epochs, int restarts) {
  LrSchedule s({total_epochs}, {base});
  CAC_CHECK(warmup_epochs >= 0 && restarts >= 0, "learning-rate schedule: {} warm-up epochs and {} restarts must be >= 0",
            warmup_epochs, restarts);
  CAC_CHECK(total_epochs == 0 || total_epochs - warmup_epochs >= restarts + 1,
            "learning-rate schedule: {} epochs leave {} after {} warm-up epochs, fewer than the {} cosine cycles of {} "
            "restarts", total_epochs, total_epochs - warmup_epochs, warmup_epochs, restarts + 1, restarts);
  s.shape_ = LrShape::Cosine;
  s.warmup_ = warmup_epochs;
  s.restarts_ = restarts;
  return s;
}

double LrSchedule::cosine_at(int epoch) const {
  const double base = lrs_[0], floor_lr = base * 1e-3;
  if (epoch < warmup_) return base * double(epoch + 1) / double(warmup_);
  const int after = total_epochs() - warmup_, cycle = after / (restarts_ + 1);
  const int t = epoch - warmup_;
  const int c = std::min(t / cycle, restarts_);  // the last cycle takes the remainder
  const int len = c == restarts_ ? after - restarts_ * cycle : cycle;
  const double pos = double(t - c * cycle) / double(len);
  return floor_lr + (base - floor_lr) * (1 + std::cos(M_PI * pos)) / 2;
}

double LrSchedule::lr_at(int epoch) const {
  if (shape_ == LrShape::Cosine) return cosine_at(epoch);
  int end = 0;
  for (size_t i = 0; i < epochs_.size(); ++i) {
    end += epochs_[i];
    if (epoch < end) return lrs_[i];
  }
  return lrs_.back();
}

int LrSchedule::total_epochs() const { return std::accumulate(epochs_.begin(), epochs_.end(), 0); }

int LrSchedule::stage_of(int epoch) const {
  int end = 0;
  for (size_t i = 0; i < epochs_.size(); ++i) {
    end += epochs_[i];
    if (epoch < end) return int(i);
  }
  return int(epochs_.size()) - 1;
}

bool LrSchedule::starts_stage(int epoch) const {
  int start = 0;
  for (size_t i = 0; i + 1 < epochs_.size(); ++i) {
    start += epochs_[i];
    if (epoch == start && epoch > 0 && epochs_[i + 1] > 0) return true;
  }
  return false;
}

}  // namespace cac
