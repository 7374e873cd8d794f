#include "layers/ops.h"

#include "kernels/batchnorm.h"
#include "kernels/conv.h"
#include "kernels/distance.h"
#include "kernels/batchnorm_nhwc.h"
#include "kernels/elementwise.h"
#include "kernels/layout.h"
#include "kernels/losses.h"

namespace cac::ops {

namespace {
Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }
Tensor empty_as(const Shape& s, const Tensor& like) { return Tensor::empty(s, like.dtype(), like.device()); }

void check_param(const char* op, const Tensor& x, const Tensor& p, const Shape& want, const char* what) {
  check_defined(op, p, what);
  CAC_CHECK(p.shape() == want, "{}: {} must have shape {} for input {}, got {}", op, what,
            shape_str(want), shape_str(x.shape()), shape_str(p.shape()));
  check_same_dtype(op, x, p);
  check_same_device(op, x, p);
}

// Ops that also run on mixed precision's bf16 activations.
void check_float_or_bf16(const char* op, const Tensor& t, const char* what) {
  if (t.dtype() == DType::BF16) return check_defined(op, t, what);
  check_float(op, t, what);
}

void check_labels(const char* op, const Tensor& scores, const Tensor& labels) {
  check_dtype(op, labels, DType::I64, "labels");
  CAC_CHECK(labels.ndim() == 1 && labels.dim(0) == scores.dim(0),
            "{}: labels {} do not match scores {} (want [{}])", op, shape_str(labels.shape()),
            shape_str(scores.shape()), scores.dim(0));
  check_same_device(op, scores, labels);
}
}  // namespace

// ---- conv2d ---------------------------------------------------------------------------------------
// bf16 tensors are channels last (x [N, H, W, C], w [O, kh, kw, C]) and have no bias.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, int stride, int pad) {
  const char* op = "conv2d";
  const bool last = x.dtype() == DType::BF16;
  const int c = last ? 3 : 1, h = last ? 1 : 2, wd = last ? 2 : 3;  // axes of x and of w
  if (last) CAC_CHECK(!bias.defined(), "conv2d: bf16 convolutions have no bias");
  else check_float(op, x, "input");
  check_ndim(op, x, 4, "input");
  check_ndim(op, w, 4, "weight");
  check_same_dtype(op, x, w);
  check_same_device(op, x, w);
  CAC_CHECK(w.dim(c) == x.dim(c), "conv2d: weight {} expects {} input channels, input is {}{}", shape_str(w.shape()),
            w.dim(c), shape_str(x.shape()), last ? " (channels last)" : "");
  CAC_CHECK(stride >= 1 && pad >= 0, "conv2d: stride {} / padding {} invalid", stride, pad);
  if (bias.defined()) check_param(op, x, bias, {w.dim(0)}, "bias");
  const int64_t Ho = (x.dim(h) + 2 * pad - w.dim(h)) / stride + 1;
  const int64_t Wo = (x.dim(wd) + 2 * pad - w.dim(wd)) / stride + 1;
  CAC_CHECK(Ho > 0 && Wo > 0, "conv2d: input {} too small for kernel {} with padding {}",
            shape_str(x.shape()), shape_str(w.shape()), pad);
  const kernels::ConvGeometry geo{stride, pad};
  Tensor y = empty_as(last ? Shape{x.dim(0), Ho, Wo, w.dim(0)} : Shape{x.dim(0), w.dim(0), Ho, Wo}, x);
  kernels::conv2d_forward(x, w, bias, geo, y);

  record(y, op, {x, w, bias}, [x, w, geo, has_bias = bias.defined()](const Tensor& gy, const std::vector<bool>& need) {
    Tensor gx = need[0] ? empty_like(x) : Tensor();
    Tensor gw = need[1] ? empty_like(w) : Tensor();
    Tensor gb = has_bias && need[2] ? empty_as({w.dim(0)}, w) : Tensor();
    kernels::conv2d_backward(x, w, gy, geo, gx.defined() ? &gx : nullptr,
                             gw.defined() ? &gw : nullptr, gb.defined() ? &gb : nullptr);
    return std::vector<Tensor>{gx, gw, gb};
  });
  return y;
}

// ---- layout changes -------------------------------------------------------------------------------
namespace {
using LayoutKernel = void (*)(const Tensor&, Tensor&);
// y's gradient back through `back` into x's shape and dtype.
void record_layout_change(Tensor& y, const char* op, const Tensor& x, LayoutKernel back) {
  record(y, op, {x}, [in = x.shape(), dt = x.dtype(), device = x.device(), back](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = Tensor::empty(in, dt, device);
    back(gy, gx);
    return std::vector<Tensor>{gx};
  });
}
// y = there(x) into `shape` of `dtype`; the gradient comes back through `back`.
Tensor layout_change(const char* op, const Tensor& x, const Shape& shape, DType dtype, LayoutKernel there,
                     LayoutKernel back) {
  Tensor y = Tensor::empty(shape, dtype, x.device());
  there(x, y);
  record_layout_change(y, op, x, back);
  return y;
}
}  // namespace

Tensor channels_last_bf16_copy(const Tensor& w, const Tensor& copy) {
  CAC_CHECK(w.dtype() == DType::F32 && w.ndim() == 4 && copy.dtype() == DType::BF16 &&
                copy.shape() == Shape({w.dim(0), w.dim(2), w.dim(3), w.dim(1)}) && copy.device() == w.device(),
            "channels_last_bf16_copy: expected an f32 [K, C, R, S] weight and its bf16 [K, R, S, C] copy on one "
            "device, got {} and {}", w.str(), copy.str());
  Tensor y = copy.detach();
  record_layout_change(y, "channels_last_bf16_copy", w, kernels::nhwc_bf16_to_nchw);
  return y;
}

Tensor to_channels_last_bf16(const Tensor& x) {
  CAC_CHECK(x.dtype() == DType::F32 && x.ndim() == 4, "to_channels_last_bf16: expected f32 [N, C, H, W], got {}",
            x.str());
  return layout_change("to_channels_last_bf16", x, {x.dim(0), x.dim(2), x.dim(3), x.dim(1)}, DType::BF16,
                       kernels::nchw_to_nhwc_bf16, kernels::nhwc_bf16_to_nchw);
}

Tensor to_nchw_f32(const Tensor& x) {
  CAC_CHECK(x.dtype() == DType::BF16 && x.ndim() == 4, "to_nchw_f32: expected bf16 [N, H, W, C], got {}", x.str());
  return layout_change("to_nchw_f32", x, {x.dim(0), x.dim(3), x.dim(1), x.dim(2)}, DType::F32,
                       kernels::nhwc_bf16_to_nchw, kernels::nchw_to_nhwc_bf16);
}

// ---- linear ---------------------------------------------------------------------------------------
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "linear";
  check_float(op, x, "input");
  check_ndim(op, x, 2, "input");
  check_ndim(op, w, 2, "weight");
  check_same_dtype(op, x, w);
  check_same_device(op, x, w);
  CAC_CHECK(w.dim(1) == x.dim(1), "linear: weight {} expects {} features, input is {}",
            shape_str(w.shape()), w.dim(1), shape_str(x.shape()));
  if (bias.defined()) check_param(op, x, bias, {w.dim(0)}, "bias");
  Tensor y = empty_as({x.dim(0), w.dim(0)}, x);
  kernels::linear_forward(x, w, bias, y);

  record(y, op, {x, w, bias}, [x, w, has_bias = bias.defined()](const Tensor& gy, const std::vector<bool>& need) {
    Tensor gx = need[0] ? empty_like(x) : Tensor();
    Tensor gw = need[1] ? empty_like(w) : Tensor();
    Tensor gb = has_bias && need[2] ? empty_as({w.dim(0)}, w) : Tensor();
    kernels::linear_backward(x, w, gy, gx.defined() ? &gx : nullptr, gw.defined() ? &gw : nullptr,
                             gb.defined() ? &gb : nullptr);
    return std::vector<Tensor>{gx, gw, gb};
  });
  return y;
}

// ---- batch_norm2d (optionally with a fused LeakyReLU) ---------------------------------------------
namespace {
// bf16 channels-last activations, float32 parameters and statistics (kernels/batchnorm_nhwc.h). Eval
// mode has no backward here: mixed precision trains in training mode and evaluates without gradients.
Tensor batch_norm_channels_last(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                Tensor& running_mean, Tensor& running_var, bool training, double momentum,
                                double eps, kernels::BnActivation act) {
  check_ndim(op, x, 4, "input");
  const Shape c{x.dim(3)};
  for (const auto& [t, what] : {std::pair<const Tensor*, const char*>{&gamma, "weight"}, {&beta, "bias"},
                                {&running_mean, "running_mean"}, {&running_var, "running_var"}}) {
    check_defined(op, *t, what);
    CAC_CHECK(t->shape() == c && t->dtype() == DType::F32 && t->device() == x.device(),
              "{}: {} must be f32 {} on the input's device for bf16 input {} (channels last), got {}", op, what,
              shape_str(c), shape_str(x.shape()), t->str());
  }
  Tensor y = empty_like(x);
  if (!training) {
    CAC_CHECK(!grad_enabled() || !(needs_grad(x) || needs_grad(gamma) || needs_grad(beta)),
              "{}: a bf16 eval-mode forward has no backward (evaluate under NoGradGuard)", op);
    kernels::batchnorm_nhwc_forward_eval(x, gamma, beta, running_mean, running_var, eps, act, y);
    return y;
  }
  CAC_CHECK(x.numel() / x.dim(3) > 1, "{}: training needs more than one value per channel, got input {}", op,
            shape_str(x.shape()));
  Tensor mean = Tensor::empty(c, DType::F32, x.device()), invstd = Tensor::empty(c, DType::F32, x.device());
  kernels::batchnorm_nhwc_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, act, y, mean, invstd);
  record(y, op, {x, gamma, beta}, [x, gamma, beta, mean, invstd, act](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = empty_like(x), gg = empty_like(gamma), gb = empty_like(gamma);
    kernels::batchnorm_nhwc_backward(x, gamma, beta, mean, invstd, gy, act, gx, gg, gb);
    return std::vector<Tensor>{gx, gg, gb};
  });
  return y;
}

Tensor batch_norm_impl(const char* op, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                       Tensor& running_mean, Tensor& running_var, bool training, double momentum,
                       double eps, kernels::BnActivation act) {
  if (x.dtype() == DType::BF16)
    return batch_norm_channels_last(op, x, gamma, beta, running_mean, running_var, training, momentum, eps, act);
  check_float(op, x, "input");
  check_ndim(op, x, 4, "input");
  const Shape c{x.dim(1)};
  check_param(op, x, gamma, c, "weight");
  check_param(op, x, beta, c, "bias");
  check_param(op, x, running_mean, c, "running_mean");
  check_param(op, x, running_var, c, "running_var");
  if (training)
    CAC_CHECK(x.dim(0) * x.dim(2) * x.dim(3) > 1,
              "{}: training needs more than one value per channel, got input {}", op,
              shape_str(x.shape()));
  Tensor y = empty_like(x);
  Tensor mean, invstd;
  if (training) {
    mean = empty_as(c, x);
    invstd = empty_as(c, x);
    kernels::batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, act,
                                     y, mean, invstd);
  } else {
    kernels::batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, act, y);
    if (!grad_enabled() || !(needs_grad(x) || needs_grad(gamma) || needs_grad(beta))) return y;
    // Backward through eval-mode BN treats the running statistics as constants.
    std::vector<double> rm = running_mean.to(DType::F64).to_vector<double>();
    std::vector<double> rv = running_var.to(DType::F64).to_vector<double>();
    for (double& v : rv) v = 1.0 / std::sqrt(v + eps);
    mean = Tensor::from_vector(rm, c).to(x.dtype()).to(x.device());
    invstd = Tensor::from_vector(rv, c).to(x.dtype()).to(x.device());
  }

  record(y, op, {x, gamma, beta},
         [x, gamma, beta, mean, invstd, training, act](const Tensor& gy, const std::vector<bool>& need) {
           Tensor gx = need[0] ? empty_like(x) : Tensor();
           Tensor gg = empty_like(gamma), gb = empty_like(gamma);
           kernels::batchnorm_backward(x, gamma, beta, mean, invstd, gy, act, training,
                                       gx.defined() ? &gx : nullptr, gg, gb);
           return std::vector<Tensor>{gx, gg, gb};
         });
  return y;
}
}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                    Tensor& running_var, bool training, double momentum, double eps) {
  return batch_norm_impl("batch_norm2d", x, gamma, beta, running_mean, running_var, training,
                         momentum, eps, kernels::BnActivation{});
}

Tensor batch_norm2d_leaky_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                               Tensor& running_mean, Tensor& running_var, bool training,
                               double slope, double momentum, double eps) {
  CAC_CHECK(slope >= 0, "batch_norm2d_leaky_relu: slope {} must be >= 0", slope);
  return batch_norm_impl("batch_norm2d_leaky_relu", x, gamma, beta, running_mean, running_var,
                         training, momentum, eps, kernels::BnActivation{true, slope});
}

// ---- activations ----------------------------------------------------------------------------------
Tensor leaky_relu(const Tensor& x, double slope) {
  check_float_or_bf16("leaky_relu", x, "input");
  Tensor y = empty_like(x);
  kernels::leaky_relu_forward(x, slope, y);

  record(y, "leaky_relu", {x}, [x, slope](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = empty_like(x);
    kernels::leaky_relu_backward(x, gy, slope, gx);
    return std::vector<Tensor>{gx};
  });
  return y;
}

Tensor relu(const Tensor& x) { return leaky_relu(x, 0.0); }

// ---- dropout2d ------------------------------------------------------------------------------------
Tensor dropout2d(const Tensor& x, double p, bool training, uint64_t seed, uint64_t counter,
                 const Tensor* counter_at) {
  check_float_or_bf16("dropout2d", x, "input");
  CAC_CHECK(x.ndim() >= 2, "dropout2d: input must be [B, C, ...], got {}", shape_str(x.shape()));
  CAC_CHECK(p >= 0 && p < 1, "dropout2d: probability {} outside [0, 1)", p);
  if (!training || p == 0) return x;
  // bf16 is channels last (issue 25): the same mask, f32 [B, C], drawn and applied over [B, H, W, C].
  const bool last = x.dtype() == DType::BF16;
  Tensor y = empty_like(x);
  Tensor mask = last ? Tensor::empty({x.dim(0), x.dim(3)}, DType::F32, x.device()) : empty_as({x.dim(0), x.dim(1)}, x);
  (last ? kernels::dropout2d_nhwc_forward : kernels::dropout2d_forward)(x, p, seed, counter, counter_at, y, mask);

  record(y, "dropout2d", {x}, [mask, last](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = empty_like(gy);
    (last ? kernels::dropout2d_nhwc_backward : kernels::dropout2d_backward)(gy, mask, gx);
    return std::vector<Tensor>{gx};
  });
  return y;
}

// ---- shape ----------------------------------------------------------------------------------------
Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x, "input");
  CAC_CHECK(shape_numel(shape) == x.numel(), "reshape: cannot reshape {} to {}", shape_str(x.shape()),
            shape_str(shape));
  Tensor y = x.view(shape);

  record(y, "reshape", {x}, [in_shape = x.shape()](const Tensor& gy, const std::vector<bool>&) {
    return std::vector<Tensor>{gy.view(in_shape)};
  });
  return y;
}

Tensor flatten(const Tensor& x) {
  CAC_CHECK(x.defined() && x.ndim() >= 1, "flatten: input must have a batch dimension, got {}",
            x.str());
  return reshape(x, {x.dim(0), x.numel() / std::max<int64_t>(x.dim(0), 1)});
}

// ---- add ------------------------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b) {
  check_float_or_bf16("add", a, "lhs");
  check_same_shape("add", a, b);
  check_same_dtype("add", a, b);
  check_same_device("add", a, b);
  Tensor y = empty_like(a);
  kernels::add_forward(a, b, y);

  record(y, "add", {a, b}, [](const Tensor& gy, const std::vector<bool>&) {
    return std::vector<Tensor>{gy, gy};  // autograd clones before accumulating in place
  });
  return y;
}

// ---- global average pooling -----------------------------------------------------------------------
Tensor global_avg_pool(const Tensor& x) {
  check_float("global_avg_pool", x, "input");
  check_ndim("global_avg_pool", x, 4, "input");
  Tensor y = empty_as({x.dim(0), x.dim(1)}, x);
  kernels::global_avg_pool_forward(x, y);

  record(y, "global_avg_pool", {x}, [in_shape = x.shape()](const Tensor& gy, const std::vector<bool>&) {
    Tensor gx = empty_as(in_shape, gy);
    kernels::global_avg_pool_backward(gy, gx);
    return std::vector<Tensor>{gx};
  });
  return y;
}

// ---- pairwise distance ----------------------------------------------------------------------------
namespace {
// z [B, N] and centres [K, N]: float, same dtype and device, same width.
void check_z_and_centres(const char* op, const Tensor& z, const Tensor& centres) {
  check_float(op, z, "z");
  check_ndim(op, z, 2, "z");
  check_ndim(op, centres, 2, "centres");
  check_same_dtype(op, z, centres);
  check_same_device(op, z, centres);
  CAC_CHECK(z.dim(1) == centres.dim(1), "{}: z {} and centres {} differ in width", op, shape_str(z.shape()),
            shape_str(centres.shape()));
}
}  // namespace

Tensor pairwise_distance(const Tensor& z, const Tensor& centres) {
  const char* op = "pairwise_distance";
  check_z_and_centres(op, z, centres);
  Tensor d = empty_as({z.dim(0), centres.dim(0)}, z);
  kernels::distance_forward(z, centres, d);

  // d.detach() shares storage but not the graph, so the closure holds no cycle through d.
  record(d, op, {z, centres}, [z, centres, dv = d.detach()](const Tensor& gd, const std::vector<bool>& need) {
    Tensor gz = need[0] ? empty_like(z) : Tensor();
    Tensor gc = need[1] ? empty_like(centres) : Tensor();
    kernels::distance_backward(z, centres, dv, gd, gz.defined() ? &gz : nullptr,
                               gc.defined() ? &gc : nullptr);
    return std::vector<Tensor>{gz, gc};
  });
  return d;
}

// ---- losses and scores ----------------------------------------------------------------------------
CacHead cac_head(const Tensor& z, const Tensor& centres, const Tensor& labels, double lambda) {
  const char* op = "cac_head";
  check_z_and_centres(op, z, centres);
  CAC_CHECK(z.dim(0) > 0, "cac_head: empty batch {}", shape_str(z.shape()));
  check_labels(op, z, labels);
  Tensor d = empty_as({z.dim(0), centres.dim(0)}, z);
  Tensor parts = empty_as({3}, z);
  kernels::cac_head_forward(z, centres, labels, lambda, d, parts);
  Tensor loss = parts.rows(0, 1).view({});
  d = d.detach();

  record(loss, op, {z, centres}, [z, centres, d, labels, lambda](const Tensor& gl, const std::vector<bool>& need) {
    Tensor gz = need[0] ? empty_like(z) : Tensor();
    Tensor gc = need[1] ? empty_like(centres) : Tensor();
    kernels::cac_head_backward(z, centres, d, labels, lambda, gl, gz.defined() ? &gz : nullptr,
                               gc.defined() ? &gc : nullptr);
    return std::vector<Tensor>{gz, gc};
  });
  return {d, loss, parts.detach()};
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, double smoothing) {
  const char* op = "cross_entropy";
  check_float(op, logits, "logits");
  check_ndim(op, logits, 2, "logits");
  check_labels(op, logits, labels);
  CAC_CHECK(logits.dim(0) > 0, "cross_entropy: empty batch {}", shape_str(logits.shape()));
  CAC_CHECK(smoothing >= 0 && smoothing < 1, "cross_entropy: label smoothing {} is outside [0, 1)", smoothing);
  Tensor loss = empty_as({}, logits);
  kernels::cross_entropy_forward(logits, labels, smoothing, loss);

  record(loss, op, {logits}, [logits, labels, smoothing](const Tensor& gl, const std::vector<bool>&) {
    Tensor g = empty_like(logits);
    kernels::cross_entropy_backward(logits, labels, smoothing, gl, g);
    return std::vector<Tensor>{g};
  });
  return loss;
}

Tensor open_set_score(const Tensor& distances) {
  check_float("open_set_score", distances, "distances");
  check_ndim("open_set_score", distances, 2, "distances");
  Tensor gamma = empty_like(distances);
  kernels::open_set_score_forward(distances, gamma);
  return gamma;
}

Tensor argmin(const Tensor& x) {
  check_float("argmin", x, "input");
  check_ndim("argmin", x, 2, "input");
  Tensor idx = Tensor::empty({x.dim(0)}, DType::I64, x.device());
  kernels::argmin_rows(x, idx);
  return idx;
}

Tensor argmax(const Tensor& x) {
  check_float("argmax", x, "input");
  check_ndim("argmax", x, 2, "input");
  Tensor idx = Tensor::empty({x.dim(0)}, DType::I64, x.device());
  kernels::argmax_rows(x, idx);
  return idx;
}

}  // namespace cac::ops
