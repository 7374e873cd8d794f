#include "layers/optim.h"

#include <numeric>

#include "kernels/elementwise.h"

namespace cac {

SGD::SGD(ParameterStore& store, double momentum, double weight_decay)
    : store_(store), momentum_(momentum), weight_decay_(weight_decay) {
  CAC_CHECK(momentum >= 0 && weight_decay >= 0, "SGD: momentum {} and weight decay {} must be >= 0",
            momentum, weight_decay);
  if (store.total() > 0)
    momentum_buf_ = Tensor::zeros({store.total()}, store.values().dtype(), store.values().device());
}

void SGD::step(double lr) {
  if (store_.total() == 0) return;
  Tensor values = store_.values();
  kernels::sgd_step(values, store_.grads(), momentum_buf_, lr, momentum_, weight_decay_);
}

void SGD::reset_momentum() {
  if (momentum_buf_.defined())
    momentum_buf_ = Tensor::zeros({store_.total()}, store_.values().dtype(), store_.values().device());
}

StagedLR::StagedLR(std::vector<int> stage_epochs, std::vector<double> lrs)
    : epochs_(std::move(stage_epochs)), lrs_(std::move(lrs)) {
  CAC_CHECK(!epochs_.empty() && epochs_.size() == lrs_.size(),
            "learning-rate schedule: {} stage lengths but {} learning rates", epochs_.size(),
            lrs_.size());
  for (size_t i = 0; i < epochs_.size(); ++i)
    CAC_CHECK(epochs_[i] >= 0 && lrs_[i] > 0, "learning-rate schedule: stage {} has {} epochs at lr {}",
              i, epochs_[i], lrs_[i]);
}

double StagedLR::lr_at(int epoch) const {
  int end = 0;
  for (size_t i = 0; i < epochs_.size(); ++i) {
    end += epochs_[i];
    if (epoch < end) return lrs_[i];
  }
  return lrs_.back();
}

int StagedLR::total_epochs() const { return std::accumulate(epochs_.begin(), epochs_.end(), 0); }

int StagedLR::stage_of(int epoch) const {
  int end = 0;
  for (size_t i = 0; i < epochs_.size(); ++i) {
    end += epochs_[i];
    if (epoch < end) return int(i);
  }
  return int(epochs_.size()) - 1;
}

bool StagedLR::starts_stage(int epoch) const {
  int start = 0;
  for (size_t i = 0; i + 1 < epochs_.size(); ++i) {
    start += epochs_[i];
    if (epoch == start && epoch > 0 && epochs_[i + 1] > 0) return true;
  }
  return false;
}

}  // namespace cac
