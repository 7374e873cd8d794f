#pragma once
// SGD with momentum and weight decay (PyTorch's update rule, one kernel over the parameter slab)
// and the staged learning-rate schedule of the CAC protocol.
#include <vector>

#include "core/parameter_store.h"

namespace cac {

class SGD {
 public:
  SGD(ParameterStore& store, double momentum, double weight_decay);
  void zero_grad() { store_.zero_grad(); }
  void step(double lr);
  Tensor momentum_buffer() const { return momentum_buf_; }  // for checkpoints
  // A fresh optimizer's state (PyTorch's new SGD: the first step's buffer is the gradient itself).
  void reset_momentum();

 private:
  ParameterStore& store_;
  Tensor momentum_buf_;
  double momentum_, weight_decay_;
};

// lr = lrs[i] during stage i; stage i lasts stage_epochs[i] epochs. Epochs count from 0.
class StagedLR {
 public:
  StagedLR(std::vector<int> stage_epochs, std::vector<double> lrs);
  double lr_at(int epoch) const;
  int total_epochs() const;
  int stage_of(int epoch) const;            // 0-based
  bool starts_stage(int epoch) const;       // epoch > 0 is the first epoch of a later stage

 private:
  std::vector<int> epochs_;
  std::vector<double> lrs_;
};

}  // namespace cac
