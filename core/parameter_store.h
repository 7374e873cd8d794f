#pragma once
// All trainable parameters in one value slab and their gradients in one gradient slab, so that
// zero_grad is one memset and the optimizer is one loop (one launch on the GPU). Each parameter
// tensor keeps its identity (modules hold the same handle); only its storage is re-pointed.
#include <vector>

#include "core/tensor.h"

namespace cac {

class ParameterStore {
 public:
  ParameterStore() = default;
  // Takes the parameters (all f32 or all f64, one device), copies their current values into the
  // slab and re-points them there. Every element of every parameter gets a gradient slot.
  explicit ParameterStore(const std::vector<Tensor>& params);

  void zero_grad();
  Tensor values() const { return values_; }  // flat [total] views over the slabs (with padding)
  Tensor grads() const { return grads_; }
  const std::vector<Tensor>& params() const { return params_; }
  int64_t total() const { return values_.defined() ? values_.numel() : 0; }
  int64_t parameter_count() const;  // without alignment padding
  // Where one of params() starts in the slab, in elements (throws for a tensor not among them).
  int64_t offset_of(const Tensor& param) const;

  // Each parameter starts on a 64-byte boundary in the slab (vector loads, coalescing).
  static constexpr int64_t kAlignElems = 16;

 private:
  std::vector<Tensor> params_;
  Tensor values_, grads_;
};

}  // namespace cac
