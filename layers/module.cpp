#include "layers/module.h"

#include <cmath>

#include "core/profiling.h"
#include "kernels/elementwise.h"
#include "layers/ops.h"

namespace cac {

void Module::train(bool on) {
  training_ = on;
  on_train(on);
  for (auto& [name, child] : children_) child->train(on);
}

// This module's tensors of one kind, then its children's, depth first, named by their paths.
NamedTensors Module::gather(NamedTensors Module::*kind, const std::string& prefix) const {
  NamedTensors out;
  for (const auto& [name, t] : this->*kind) out.emplace_back(prefix + name, t);
  for (const auto& [name, child] : children_)
    for (auto& kv : child->gather(kind, prefix + name + ".")) out.push_back(std::move(kv));
  return out;
}

NamedTensors Module::named_parameters(const std::string& prefix) const { return gather(&Module::params_, prefix); }
NamedTensors Module::named_buffers(const std::string& prefix) const { return gather(&Module::buffers_, prefix); }

NamedTensors Module::state_dict() const {
  NamedTensors out = named_parameters();
  for (auto& kv : named_buffers()) out.push_back(std::move(kv));
  return out;
}

NamedTensors Module::resume_state(const std::string& prefix) const { return gather(&Module::counters_, prefix); }

void Module::visit(const std::function<void(const std::string&, Module&)>& fn, const std::string& prefix) {
  fn(prefix, *this);
  for (auto& [name, child] : children_) child->visit(fn, prefix.empty() ? name : prefix + "." + name);
}

std::vector<Tensor> Module::trainable_parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters())
    if (t.requires_grad()) out.push_back(t);
  return out;
}

namespace {
// Re-point the tensor's storage so every holder of the handle sees the moved data.
void move_in_place(const Tensor& t, const Tensor& moved) {
  t.impl()->storage = moved.impl()->storage;
  t.impl()->offset_bytes = moved.offset_bytes();
  t.impl()->device = moved.device();
  t.impl()->dtype = moved.dtype();
  t.impl()->grad = Tensor();
}
}  // namespace

void Module::to(Device device) {
  // i64 scalars (num_batches_tracked) are host-side bookkeeping and stay on the host, so counting
  // batches never needs a device round trip.
  for (auto& [name, t] : state_dict())
    if (t.device() != device && !(t.dtype() == DType::I64 && t.numel() == 1))
      move_in_place(t, t.to(device));
}

void Module::to(DType dtype) {
  for (auto& [name, t] : state_dict())
    if (t.dtype() != DType::I64 && t.dtype() != dtype) move_in_place(t, t.to(dtype));
}

Tensor& Module::register_parameter(const std::string& name, Tensor t, bool trainable) {
  t.set_requires_grad(trainable);
  params_.emplace_back(name, t);
  return params_.back().second;
}

Tensor& Module::register_counter(const std::string& name) {
  counters_.emplace_back(name, Tensor::zeros({}, DType::I64));
  return counters_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  buffers_.emplace_back(name, t);
  return buffers_.back().second;
}

// ---- layers -------------------------------------------------------------------------------------
Conv2d::Conv2d(int in, int out, int kernel, int stride_, int pad_, bool with_bias, Generator& gen)
    : stride(stride_), pad(pad_) {
  CAC_CHECK(in > 0 && out > 0 && kernel > 0 && stride_ > 0 && pad_ >= 0,
            "Conv2d: invalid configuration in={} out={} kernel={} stride={} pad={}", in, out, kernel,
            stride_, pad_);
  std::vector<float> w(size_t(out) * in * kernel * kernel);
  const double std = std::sqrt(2.0 / double(out * kernel * kernel));
  for (float& v : w) v = float(gen.normal() * std);
  weight = register_parameter("weight", Tensor::from_vector(w, {out, in, kernel, kernel}));
  if (with_bias) bias = register_parameter("bias", Tensor::zeros({out}));
}
Tensor Conv2d::forward(const Tensor& x) {
  CAC_NVTX_RANGE("Conv2d.forward");
  Tensor y;
  if (x.dtype() == DType::BF16) {  // mixed precision: bf16 channels-last weights
    const Tensor w = is_training() && bf16_weight.defined() ? ops::channels_last_bf16_copy(weight, bf16_weight)
                                                            : ops::to_channels_last_bf16(weight);
    y = ops::conv2d(x, w, bias, stride, pad);
  } else {
    y = ops::conv2d(x, weight, bias, stride, pad);
  }
  macs = y.numel() * weight.dim(1) * weight.dim(2) * weight.dim(3);
  return y;
}

BatchNorm2d::BatchNorm2d(int channels, double momentum_, double eps_) : momentum(momentum_), eps(eps_) {
  weight = register_parameter("weight", Tensor::full({channels}, 1.0));
  bias = register_parameter("bias", Tensor::zeros({channels}));
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::full({channels}, 1.0));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::I64));
}
Tensor BatchNorm2d::forward(const Tensor& x) {
  CAC_NVTX_RANGE("BatchNorm2d.forward");
  if (is_training()) ++*num_batches_tracked.data<int64_t>();  // host-side, see Module::to
  return ops::batch_norm2d(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}
Tensor BatchNorm2d::forward_leaky_relu(const Tensor& x, double slope) {
  CAC_NVTX_RANGE("BatchNorm2d+LeakyReLU.forward");
  if (is_training()) ++*num_batches_tracked.data<int64_t>();
  return ops::batch_norm2d_leaky_relu(x, weight, bias, running_mean, running_var, is_training(),
                                      slope, momentum, eps);
}

Linear::Linear(int in, int out, Generator& gen, double init_std) {
  std::vector<float> w(size_t(out) * in), b(size_t(out), 0.0f);
  const double bound = 1.0 / std::sqrt(double(in));
  for (float& v : w) v = float(init_std > 0 ? gen.normal() * init_std : (2 * gen.uniform() - 1) * bound);
  if (init_std <= 0)
    for (float& v : b) v = float((2 * gen.uniform() - 1) * bound);
  weight = register_parameter("weight", Tensor::from_vector(w, {out, in}));
  bias = register_parameter("bias", Tensor::from_vector(b, {out}));
}
Tensor Linear::forward(const Tensor& x) {
  CAC_NVTX_RANGE("Linear.forward");
  Tensor y = ops::linear(x, weight, bias);
  macs = y.numel() * weight.dim(1);
  return y;
}

Tensor LeakyReLU::forward(const Tensor& x) { return ops::leaky_relu(x, slope); }
Tensor ReLU::forward(const Tensor& x) { return ops::relu(x); }
Tensor Flatten::forward(const Tensor& x) { return ops::flatten(x); }

Dropout2d::Dropout2d(double p, uint64_t seed) : p(p), seed(seed), calls_(register_counter("calls")) {}

Tensor Dropout2d::forward(const Tensor& x) {
  if (!is_training()) return x;
  int64_t& calls = calls_.data<int64_t>()[0];
  if (!device_calls_.defined()) return ops::dropout2d(x, p, true, seed, uint64_t(calls++));
  Tensor y = ops::dropout2d(x, p, true, seed, 0, &device_calls_);
  kernels::count_up(device_calls_);
  ++calls;
  return y;
}

void Dropout2d::count_on_device(Device device) { device_calls_ = calls_.to(device).clone(); }

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& layer : layers_) h = layer->forward(h);
  return h;
}

}  // namespace cac
