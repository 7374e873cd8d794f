// CUDA kernel of kernels/augment.h: one thread per output pixel recomputes the pipeline's bilinear
// taps (resize to S, the crop box resized back to S, the rotation's source), as transform_image
// does with buffers; the products that pick a source pixel are rounded as on the host (no fused
// multiply-add), so the same pixels are read.
#include "data/draws.h"
#include "kernels/augment.h"
#include "kernels/cuda/common.cuh"

namespace cac::kernels::cuda {

namespace {
constexpr int kBlock = 256;

struct Taps {
  int lo, hi;
  float frac;
};
// Output index i of a bilinear resize from in_n to out_n (clamped borders, align_corners = false),
// shifted by `offset`: data/transforms.cpp's AxisTaps.
__device__ Taps taps(int i, int in_n, int out_n, int offset) {
  const float s = __fdiv_rn(float(in_n), float(out_n));
  const float c = fmaxf(0.f, __fsub_rn(__fmul_rn(float(i) + 0.5f, s), 0.5f));
  const int i0 = int(floorf(c));
  return {offset + min(max(i0, 0), in_n - 1), offset + min(max(i0 + 1, 0), in_n - 1), c - float(i0)};
}
__device__ float blend(float p00, float p01, float p10, float p11, float fy, float fx) {
  return (1 - fy) * ((1 - fx) * p00 + fx * p01) + fy * ((1 - fx) * p10 + fx * p11);
}

struct Source {
  const uint8_t* px;  // this sample's image, H x W x C
  int h, w, c, size;
};
// Stage 1: the image resized to size x size.
__device__ float stage1(const Source& s, int y, int x, int ch) {
  if (s.h == s.size && s.w == s.size) return float(s.px[(size_t(y) * s.w + x) * s.c + ch]);
  const Taps ty = taps(y, s.h, s.size, 0), tx = taps(x, s.w, s.size, 0);
  auto p = [&](int yy, int xx) { return float(s.px[(size_t(yy) * s.w + xx) * s.c + ch]); };
  return blend(p(ty.lo, tx.lo), p(ty.lo, tx.hi), p(ty.hi, tx.lo), p(ty.hi, tx.hi), ty.frac, tx.frac);
}
// Stage 2: the crop box of stage 1 resized back to size x size, mirrored when flipped.
__device__ float stage2(const Source& s, const data::TrainDraws& d, int y, int x, int ch) {
  const int xs = d.flip ? s.size - 1 - x : x;
  const data::CropBox& b = d.box;
  if (b.h == s.size && b.w == s.size) return stage1(s, b.top + y, b.left + xs, ch);
  const Taps ty = taps(y, b.h, s.size, b.top), tx = taps(xs, b.w, s.size, b.left);
  return blend(stage1(s, ty.lo, tx.lo, ch), stage1(s, ty.lo, tx.hi, ch), stage1(s, ty.hi, tx.lo, ch),
               stage1(s, ty.hi, tx.hi, ch), ty.frac, tx.frac);
}
// Stage 3: the rotation about the centre (zero outside), reading stage 2.
__device__ float stage3(const Source& s, const data::TrainDraws& d, bool bilinear, int y, int x, int ch) {
  if (d.degrees == 0) return stage2(s, d, y, x, ch);
  const double t = d.degrees * M_PI / 180.0, ct = cos(t), st = sin(t), centre = (s.size - 1) * 0.5;
  const double dx = x - centre, dy = y - centre;
  const float sx = float(__dadd_rn(__dsub_rn(__dmul_rn(ct, dx), __dmul_rn(st, dy)), centre));
  const float sy = float(__dadd_rn(__dadd_rn(__dmul_rn(st, dx), __dmul_rn(ct, dy)), centre));
  auto px = [&](int yy, int xx) {
    return yy < 0 || yy >= s.size || xx < 0 || xx >= s.size ? 0.f : stage2(s, d, yy, xx, ch);
  };
  if (!bilinear) return px(int(floorf(__fadd_rn(sy, 0.5f))), int(floorf(__fadd_rn(sx, 0.5f))));
  const int y0 = int(floorf(sy)), x0 = int(floorf(sx));
  const float fy = sy - float(y0), fx = sx - float(x0);
  return blend(px(y0, x0), px(y0, x0 + 1), px(y0 + 1, x0), px(y0 + 1, x0 + 1), fy, fx);
}

// Grid: (pixel blocks, batch). The block's first thread draws its sample's crop, flip and angle.
__global__ void augment_kernel(const uint8_t* images, int h, int w, int c, const int64_t* rows,
                               const int64_t* positions, AugmentSpec spec, float* out) {
  __shared__ int box[4];
  __shared__ int flip;
  __shared__ double degrees;
  const int b = blockIdx.y, S = spec.size;
  if (threadIdx.x == 0) {
    data::TrainDraws d;
    d.box = data::CropBox{0, 0, S, S};
    d.flip = spec.flip;
    if (spec.train) {
      Generator g(hash3(spec.seed, spec.epoch, uint64_t(positions[b])));
      d = data::draw_train(S, spec.crop_scale_min, spec.flip_p, spec.rotate_deg, g);
    }
    box[0] = d.box.top, box[1] = d.box.left, box[2] = d.box.h, box[3] = d.box.w;
    flip = d.flip;
    degrees = spec.train ? d.degrees : 0.0;
  }
  __syncthreads();
  data::TrainDraws d;
  d.box = data::CropBox{box[0], box[1], box[2], box[3]};
  d.flip = flip != 0;
  d.degrees = degrees;
  const Source s{images + size_t(rows[b]) * h * w * c, h, w, c, S};
  const int plane = S * S;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < plane; p += gridDim.x * blockDim.x) {
    const int y = p / S, x = p % S;
    for (int ch = 0; ch < c; ++ch) {
      const float v = stage3(s, d, spec.bilinear_rotation, y, x, ch);
      out[(size_t(b) * c + ch) * plane + p] = (v / 255.f - spec.mean[ch]) / spec.std[ch];
    }
  }
}
}  // namespace

void augment_gather(const Tensor& images, const Tensor& rows, const Tensor& positions, const AugmentSpec& spec,
                    Tensor& out) {
  const int64_t B = rows.numel();
  if (B == 0) return;
  CAC_CHECK(B <= 65535, "augment_gather (CUDA): {} samples in one batch (at most 65535)", B);
  const int blocks = int(std::min<int64_t>((int64_t(spec.size) * spec.size + kBlock - 1) / kBlock, 64));
  augment_kernel<<<dim3(unsigned(blocks), unsigned(B)), kBlock, 0, stream()>>>(
      images.data<uint8_t>(), int(images.dim(1)), int(images.dim(2)), int(images.dim(3)), rows.data<int64_t>(),
      positions.data<int64_t>(), spec, out.data<float>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace cac::kernels::cuda
