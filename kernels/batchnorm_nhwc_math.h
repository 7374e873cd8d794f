#pragma once
// The per-element expressions of the channels-last bf16 batch norm (kernels/batchnorm_nhwc.h),
// shared by the CPU twin and the CUDA kernels so both evaluate them identically: every multiply-add
// is an explicit fused one (a compiler may otherwise fuse on one side and not the other), every
// output rounded to bf16 once.
#include <cmath>

#include "core/bf16.h"

namespace cac::kernels {

struct BnAffine {
  float scale, shift;
};
CAC_HD BnAffine bn_affine(float gamma, float beta, float mean, float invstd) {
  const float scale = gamma * invstd;
  return {scale, fmaf(-mean, scale, beta)};
}
// The activation's input, and its output (LeakyReLU with `slope` where leaky; slope 0 is ReLU).
CAC_HD float bn_pre(float x, BnAffine a) { return fmaf(x, a.scale, a.shift); }
CAC_HD float bn_act(float v, bool leaky, float slope) { return leaky && !(v > 0.f) ? v * slope : v; }
// The gradient at the activation's input: gy where it passed, gy * slope where it was scaled.
CAC_HD float bn_grad_pre(float gy, float x, BnAffine a, bool leaky, float slope) {
  return leaky && !(bn_pre(x, a) > 0.f) ? gy * slope : gy;
}
// What the backward's second pass needs per channel: gx = k1 * (g - mean_g - xhat * mean_gx).
struct BnBackwardCoef {
  float k1, mean_g, mean_gx, mean, invstd;
};
CAC_HD float bn_grad_input(float g, float x, const BnBackwardCoef& k) {
  const float xhat = (x - k.mean) * k.invstd;
  return k.k1 * fmaf(-xhat, k.mean_gx, g - k.mean_g);
}

}  // namespace cac::kernels
