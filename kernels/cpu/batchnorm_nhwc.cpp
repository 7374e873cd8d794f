// CPU twin of the channels-last bf16 batch norm: statistics in double (two passes: mean, then
// centred squares), the per-element expressions of kernels/batchnorm_nhwc_math.h, bf16 outputs.
#include <cmath>
#include <vector>

#include "kernels/batchnorm_nhwc.h"
#include "kernels/batchnorm_nhwc_math.h"

namespace cac::kernels::cpu {

namespace {
struct Rows {
  int64_t R, C;  // rows (N * H * W) of C channels
  explicit Rows(const Tensor& x) : R(x.numel() / x.dim(3)), C(x.dim(3)) {}
};
float at(const bf16* p, int64_t i) { return float(p[i]); }
}  // namespace

void batchnorm_nhwc_forward_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                                  Tensor& running_var, double momentum, double eps, BnActivation act, Tensor& y,
                                  Tensor& save_mean, Tensor& save_invstd) {
  const Rows L(x);
  const bf16* xp = x.data<bf16>();
  std::vector<double> sum(size_t(L.C), 0.0), sq(size_t(L.C), 0.0);
  for (int64_t r = 0; r < L.R; ++r)
    for (int64_t c = 0; c < L.C; ++c) sum[size_t(c)] += at(xp, r * L.C + c);
  const double M = double(L.R);
  for (int64_t r = 0; r < L.R; ++r)
    for (int64_t c = 0; c < L.C; ++c) {
      const double d = at(xp, r * L.C + c) - sum[size_t(c)] / M;
      sq[size_t(c)] += d * d;
    }
  std::vector<BnAffine> aff(size_t(L.C));
  for (int64_t c = 0; c < L.C; ++c) {
    const double mean = sum[size_t(c)] / M, var = sq[size_t(c)] / M;
    const double unbiased = M > 1 ? sq[size_t(c)] / (M - 1) : var;
    float& rm = running_mean.data<float>()[c];
    float& rv = running_var.data<float>()[c];
    rm = float((1 - momentum) * rm + momentum * mean);
    rv = float((1 - momentum) * rv + momentum * unbiased);
    save_mean.data<float>()[c] = float(mean);
    save_invstd.data<float>()[c] = float(1.0 / std::sqrt(var + eps));
    aff[size_t(c)] = bn_affine(gamma.data<float>()[c], beta.data<float>()[c], float(mean),
                               save_invstd.data<float>()[c]);
  }
  bf16* yp = y.data<bf16>();
  const float slope = float(act.slope);
  for (int64_t r = 0; r < L.R; ++r)
    for (int64_t c = 0; c < L.C; ++c) {
      const int64_t i = r * L.C + c;
      yp[i] = bf16(bn_act(bn_pre(at(xp, i), aff[size_t(c)]), act.leaky, slope));
    }
}

void batchnorm_nhwc_forward_eval(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& running_mean,
                                 const Tensor& running_var, double eps, BnActivation act, Tensor& y) {
  const Rows L(x);
  std::vector<BnAffine> aff(size_t(L.C));
  for (int64_t c = 0; c < L.C; ++c) {
    const float is = float(1.0 / std::sqrt(double(running_var.data<float>()[c]) + eps));
    aff[size_t(c)] = bn_affine(gamma.data<float>()[c], beta.data<float>()[c], running_mean.data<float>()[c], is);
  }
  const bf16* xp = x.data<bf16>();
  bf16* yp = y.data<bf16>();
  for (int64_t r = 0; r < L.R; ++r)
    for (int64_t c = 0; c < L.C; ++c) {
      const int64_t i = r * L.C + c;
      yp[i] = bf16(bn_act(bn_pre(at(xp, i), aff[size_t(c)]), act.leaky, float(act.slope)));
    }
}

void batchnorm_nhwc_backward(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                             const Tensor& invstd, const Tensor& gy, BnActivation act, Tensor& gx, Tensor& ggamma,
                             Tensor& gbeta) {
  const Rows L(x);
  const bf16 *xp = x.data<bf16>(), *gp = gy.data<bf16>();
  const float slope = float(act.slope);
  std::vector<BnAffine> aff(size_t(L.C));
  for (int64_t c = 0; c < L.C; ++c)
    aff[size_t(c)] = bn_affine(gamma.data<float>()[c], beta.data<float>()[c], mean.data<float>()[c],
                               invstd.data<float>()[c]);
  std::vector<double> sg(size_t(L.C), 0.0), sgx(size_t(L.C), 0.0);
  for (int64_t r = 0; r < L.R; ++r)
    for (int64_t c = 0; c < L.C; ++c) {
      const int64_t i = r * L.C + c;
      const float g = bn_grad_pre(at(gp, i), at(xp, i), aff[size_t(c)], act.leaky, slope);
      sg[size_t(c)] += g;
      sgx[size_t(c)] += double(g) * double(at(xp, i) - mean.data<float>()[c]);
    }
  const double M = double(L.R);
  std::vector<BnBackwardCoef> k(size_t(L.C));
  for (int64_t c = 0; c < L.C; ++c) {
    const float is = invstd.data<float>()[c];
    gbeta.data<float>()[c] = float(sg[size_t(c)]);
    ggamma.data<float>()[c] = float(sgx[size_t(c)] * is);
    k[size_t(c)] = {gamma.data<float>()[c] * is, float(sg[size_t(c)] / M), float(sgx[size_t(c)] * is / M),
                    mean.data<float>()[c], is};
  }
  bf16* out = gx.data<bf16>();
  for (int64_t r = 0; r < L.R; ++r)
    for (int64_t c = 0; c < L.C; ++c) {
      const int64_t i = r * L.C + c;
      const float g = bn_grad_pre(at(gp, i), at(xp, i), aff[size_t(c)], act.leaky, slope);
      out[i] = bf16(bn_grad_input(g, at(xp, i), k[size_t(c)]));
    }
}

}  // namespace cac::kernels::cpu
