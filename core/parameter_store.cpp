#include "core/parameter_store.h"

namespace cac {

ParameterStore::ParameterStore(const std::vector<Tensor>& params) : params_(params) {
  if (params.empty()) return;
  DType dt = params[0].dtype();
  Device dev = params[0].device();
  int64_t total = 0;
  std::vector<int64_t> offsets;
  for (const Tensor& p : params) {
    CAC_CHECK(p.dtype() == dt && p.device() == dev,
              "ParameterStore: mixed parameters {} and {}; move the module to one device and dtype",
              params[0].str(), p.str());
    offsets.push_back(total);
    total += (p.numel() + kAlignElems - 1) / kAlignElems * kAlignElems;
  }
  values_ = Tensor::zeros({total}, dt, dev);
  grads_ = Tensor::zeros({total}, dt, dev);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i];
    Tensor v = Tensor::view_of(values_.impl()->storage, size_t(offsets[i]), p.shape(), dt);
    v.copy_from(p);
    p.impl()->storage = values_.impl()->storage;
    p.impl()->offset_bytes = v.offset_bytes();
    p.set_grad(Tensor::view_of(grads_.impl()->storage, size_t(offsets[i]), p.shape(), dt));
  }
}

void ParameterStore::zero_grad() {
  if (grads_.defined()) grads_.zero_();
}

int64_t ParameterStore::offset_of(const Tensor& param) const {
  for (const Tensor& p : params_)
    if (p.raw() == param.raw() && p.numel() == param.numel())
      return int64_t(p.offset_bytes() - values_.offset_bytes()) / int64_t(dtype_size(p.dtype()));
  fail("ParameterStore: {} is not one of its parameters", param.str());
}

int64_t ParameterStore::parameter_count() const {
  int64_t n = 0;
  for (const Tensor& p : params_) n += p.numel();
  return n;
}

}  // namespace cac
