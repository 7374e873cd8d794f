#pragma once
// SGD with momentum and weight decay (PyTorch's update rule, one kernel over the parameter slab)
// and the learning-rate schedules: the CAC protocol's stages, and cosine annealing with warm
// restarts and linear warm-up (the strong-baseline recipe of Vaze et al. 2022).
#include <vector>

#include "core/parameter_store.h"
#include "kernels/elementwise.h"

namespace cac {

class SGD {
 public:
  SGD(ParameterStore& store, double momentum, double weight_decay);
  void zero_grad() { store_.zero_grad(); }
  void step(double lr) {
    set_lr(lr);
    step();
  }
  // The rate lives on the slab's device and the update kernel reads it there, so a step recorded
  // into a CUDA graph follows the schedule: set_lr() between replays (a copy when it changes).
  void set_lr(double lr);
  void step();
  Tensor momentum_buffer() const { return momentum_buf_; }  // for checkpoints
  // Mixed precision (issue 25): from now on every step also writes the updated slab rounded to
  // bf16 (the forward's weights; the slab itself stays float32, the master copy), each parameter of
  // `channels_last` (4-D, [K, C, R, S]) as [K, R, S, C], the layout the bf16 convolutions read. The
  // copy is made now from the current values, and again by refresh_bf16_copy() after weights are
  // loaded. bf16 needs no loss scaling: its exponent range is float32's, so the small gradients
  // that float16 would flush to zero stay representable.
  void keep_bf16_copy(const std::vector<Tensor>& channels_last = {});
  void refresh_bf16_copy();
  const Tensor& bf16_copy() const { return bf16_.copy; }  // undefined unless kept
  // The copy of one parameter of the slab: bf16 [K, R, S, C] for a channels-last one, else bf16 of
  // its shape (undefined unless kept).
  Tensor bf16_copy_of(const Tensor& param) const;
  // A fresh optimizer's state (PyTorch's new SGD: the first step's buffer is the gradient itself).
  void reset_momentum();

 private:
  ParameterStore& store_;
  Tensor momentum_buf_;
  Tensor lr_;  // f64 scalar on the slab's device
  kernels::Bf16Copy bf16_;
  std::vector<const void*> channels_last_;  // their slab addresses
  double lr_value_;
  double momentum_, weight_decay_;
};

enum class LrShape { Step, Cosine };

// The learning rate of each epoch (epochs count from 0; the rate holds for the whole epoch).
// Step: lr = lrs[i] during stage i; stage i lasts stage_epochs[i] epochs.
// Cosine: one stage of E = total_epochs from `base`: linear warm-up, lr = base (e + 1) / W for the
// first W epochs, then cosine annealing from base to base * 1e-3 (Vaze et al.'s eta_min) in
// restarts + 1 cycles: each of floor((E - W) / (restarts + 1)) epochs, the last taking the rest so
// the run ends annealed; at t epochs into a cycle of T, lr = min + (base - min)(1 + cos(pi t / T)) / 2
// (SGDR, Loshchilov & Hutter 2017, by epoch).
class LrSchedule {
 public:
  LrSchedule(std::vector<int> stage_epochs, std::vector<double> lrs);
  static LrSchedule cosine(int total_epochs, double base, int warmup_epochs, int restarts);
  double lr_at(int epoch) const;
  int total_epochs() const;
  int stage_of(int epoch) const;            // 0-based (cosine: always 0)
  bool starts_stage(int epoch) const;       // epoch > 0 is the first epoch of a later stage

 private:
  double cosine_at(int epoch) const;

  LrShape shape_ = LrShape::Step;
  std::vector<int> epochs_;
  std::vector<double> lrs_;
  int warmup_ = 0, restarts_ = 0;
};

}  // namespace cac
