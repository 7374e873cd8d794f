#pragma once
// Tensor: a shared handle to {storage, offset, shape, dtype, device} plus autograd metadata.
// Always contiguous row-major; views (reshape, rows of dim 0, slab slices) share storage.
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace cac {

struct Node;
struct TensorImpl;

// A block of memory owned by an allocator; the deleter returns it there.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  std::function<void(void*, size_t)> release;
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (release && data) release(data, bytes);
  }
};

std::shared_ptr<Storage> allocate_storage(size_t bytes, Device device);

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories -------------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::CPU);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device device = Device::CPU);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // A view of `count` elements of `storage` starting at element `offset` (used by slabs).
  static Tensor view_of(std::shared_ptr<Storage> storage, size_t offset_elems, const Shape& shape,
                        DType dtype);

  // ---- metadata --------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return int(shape().size()); }
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  std::string str() const;  // "f32[2, 3] cpu" for error messages

  // ---- data access (checks dtype; host pointers only make sense for CPU tensors) --------------
  void* raw();
  const void* raw() const;
  template <class T> T* data();
  template <class T> const T* data() const;
  template <class T> std::vector<T> to_vector() const;  // copies to host
  double item() const;                                   // single element, any dtype, to host

  // ---- views and copies ------------------------------------------------------------------
  Tensor view(const Shape& shape) const;  // same storage, no autograd (see ops::reshape)
  Tensor rows(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0, shared storage
  Tensor detach() const;                  // same storage, no grad_fn, no requires_grad
  Tensor clone() const;
  Tensor to(DType dtype) const;
  Tensor to(Device device) const;
  void copy_from(const Tensor& src);  // same shape and dtype; any devices
  void zero_();
  void accumulate_(const Tensor& src);  // this += src (same shape/dtype/device); autograd sums
  Storage* storage() const;
  size_t offset_bytes() const;

  // ---- autograd --------------------------------------------------------------------------
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);
  Tensor grad() const;
  void set_grad(const Tensor& g);
  const std::shared_ptr<Node>& grad_fn() const;
  void set_grad_fn(std::shared_ptr<Node> fn);
  void backward() const;                        // from a scalar: seed gradient 1
  void backward(const Tensor& grad_output) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  size_t offset_bytes = 0;
  Shape shape;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;
};

// ---- checks used at every op entry: the message names the op and the shapes ------------------
void check_defined(const char* op, const Tensor& t, const char* what);
void check_dtype(const char* op, const Tensor& t, DType want, const char* what);
void check_float(const char* op, const Tensor& t, const char* what);  // F32 or F64
void check_ndim(const char* op, const Tensor& t, int ndim, const char* what);
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);

// Calls f(T{}) with T = float or double according to the tensor's dtype.
template <class F>
void dispatch_floating(const char* op, DType dt, F&& f) {
  if (dt == DType::F32) f(float{});
  else if (dt == DType::F64) f(double{});
  else fail("{}: expected a floating-point tensor (f32 or f64), got {}", op, dtype_name(dt));
}

// ---- template definitions --------------------------------------------------------------------
template <class T>
T* Tensor::data() {
  CAC_CHECK(defined(), "data(): undefined tensor");
  CAC_CHECK(dtype() == DTypeOf<T>::value, "data<{}>() on a {} tensor", dtype_name(DTypeOf<T>::value),
            str());
  return static_cast<T*>(raw());
}
template <class T>
const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}
template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  CAC_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: {} values for shape {}",
            values.size(), shape_str(shape));
  Tensor t = empty(shape, DTypeOf<T>::value, Device::CPU);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}
template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = device() == Device::CPU ? *this : to(Device::CPU);
  const T* p = host.data<T>();
  return std::vector<T>(p, p + numel());
}

}  // namespace cac
