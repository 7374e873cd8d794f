#pragma once
// Modules own named parameters and buffers (PyTorch state_dict names: "encoder.conv1.weight",
// "encoder.bn1.running_mean", ...) and child modules; train/eval mode propagates to children.
// Layers are small classes with one forward each; there is no god struct of every layer's fields.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace cac {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  NamedTensors named_parameters(const std::string& prefix = "") const;
  NamedTensors named_buffers(const std::string& prefix = "") const;
  // Parameters and buffers together: what a checkpoint holds.
  NamedTensors state_dict() const;
  // Host-side counters a bit-identical resume needs beyond the state_dict (the dropout masks'
  // counters): i64 scalars, saved in the resume checkpoint only, since PyTorch's state_dict has no
  // place for them.
  NamedTensors resume_state(const std::string& prefix = "") const;
  std::vector<Tensor> trainable_parameters() const;  // requires_grad, in name order of definition
  // Calls fn(name, module) for this module and every descendant, depth first.
  void visit(const std::function<void(const std::string&, Module&)>& fn, const std::string& prefix = "");
  // Moves every parameter and buffer to `device` in place (the handles stay valid).
  void to(Device device);
  void to(DType dtype);  // f32 <-> f64 for gradient checks; i64 buffers stay

 protected:
  Tensor& register_parameter(const std::string& name, Tensor t, bool trainable = true);
  Tensor& register_buffer(const std::string& name, Tensor t);
  Tensor& register_counter(const std::string& name);  // an i64 scalar of resume_state(), starting at 0
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }
  virtual void on_train(bool) {}

 private:
  NamedTensors gather(NamedTensors Module::*kind, const std::string& prefix) const;
  bool training_ = true;
  NamedTensors params_, buffers_, counters_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// A module with one input and one output.
class Layer : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

class Conv2d : public Layer {
 public:
  // Kaiming-normal weights (fan_out, ReLU gain: std = sqrt(2 / (out * k * k))), zero bias.
  Conv2d(int in, int out, int kernel, int stride, int pad, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  // Mixed precision: the optimizer's bf16 channels-last copy of `weight` (SGD::bf16_copy_of), which
  // a training forward on bf16 input reads instead of converting the weight. Evaluation converts:
  // weights loaded for it have not been through the optimizer.
  Tensor bf16_weight;
  int stride, pad;
  int64_t macs = 0;  // multiply-adds of the latest forward (cac_bench's FLOP count)
};

class BatchNorm2d : public Layer {
 public:
  explicit BatchNorm2d(int channels, double momentum = 0.1, double eps = 1e-5);
  Tensor forward(const Tensor& x) override;
  Tensor forward_leaky_relu(const Tensor& x, double slope);  // fused BN + LeakyReLU
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double momentum, eps;
};

class Linear : public Layer {
 public:
  // Normal(0, init_std) weights when init_std > 0, else PyTorch's default uniform(+-1/sqrt(in)).
  Linear(int in, int out, Generator& gen, double init_std = 0.0);
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
  int64_t macs = 0;  // multiply-adds of the latest forward
};

class LeakyReLU : public Layer {
 public:
  explicit LeakyReLU(double slope) : slope(slope) {}
  Tensor forward(const Tensor& x) override;
  double slope;
};

class ReLU : public Layer {
 public:
  Tensor forward(const Tensor& x) override;
};

class Flatten : public Layer {
 public:
  Tensor forward(const Tensor& x) override;
};

// Each training forward draws a fresh mask: counter = number of training forwards so far (the
// resume state "calls").
class Dropout2d : public Layer {
 public:
  Dropout2d(double p, uint64_t seed);
  Tensor forward(const Tensor& x) override;
  // Counts on `device` too, from the host count now: each training forward's kernel reads the
  // count there and a kernel advances it there, so a forward recorded into a CUDA graph draws a new
  // mask at every replay (whoever replays it advances the host count as well, Trainer). The masks
  // are the same either way. stop_counting_on_device(): the host count alone again.
  void count_on_device(Device device);
  void stop_counting_on_device() { device_calls_ = Tensor(); }
  double p;
  uint64_t seed;

 private:
  Tensor calls_;         // host: the resume state
  Tensor device_calls_;  // the same count on the device, while counting there
};

class Sequential : public Layer {
 public:
  template <class M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> m) {
    layers_.push_back(m);
    return register_module(name, m);
  }
  Tensor forward(const Tensor& x) override;

 private:
  std::vector<std::shared_ptr<Layer>> layers_;
};

}  // namespace cac
