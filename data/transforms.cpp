#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "data/randaugment.h"

namespace cac::data {

FloatImage to_float(const uint8_t* hwc, int h, int w, int c) {
  FloatImage f{h, w, c, std::vector<float>(size_t(h) * w * c)};
  for (size_t i = 0; i < f.px.size(); ++i) f.px[i] = hwc[i];
  return f;
}

namespace {
// The bilinear blend of four neighbours, shared by the reference transforms below and the fused
// pipeline (transform_image), so that both round the same way.
inline float blend(float p00, float p01, float p10, float p11, float fy, float fx) {
  return (1 - fy) * ((1 - fx) * p00 + fx * p01) + fy * ((1 - fx) * p10 + fx * p11);
}

// Bilinear sample at continuous source coordinates; out-of-image neighbours count as `fill`
// (zero) when `zero_outside`, else are clamped to the border.
float sample(const FloatImage& in, float sy, float sx, int ch, bool zero_outside) {
  const int y0 = int(std::floor(sy)), x0 = int(std::floor(sx));
  const float fy = sy - y0, fx = sx - x0;
  auto px = [&](int y, int x) -> float {
    if (zero_outside && (y < 0 || y >= in.h || x < 0 || x >= in.w)) return 0.f;
    return in.at(std::clamp(y, 0, in.h - 1), std::clamp(x, 0, in.w - 1), ch);
  };
  return blend(px(y0, x0), px(y0, x0 + 1), px(y0 + 1, x0), px(y0 + 1, x0 + 1), fy, fx);
}
}  // namespace

FloatImage resize_bilinear(const FloatImage& in, int out_h, int out_w) {
  if (out_h == in.h && out_w == in.w) return in;
  FloatImage out{out_h, out_w, in.c, std::vector<float>(size_t(out_h) * out_w * in.c)};
  const float sy = float(in.h) / out_h, sx = float(in.w) / out_w;
  for (int y = 0; y < out_h; ++y)
    for (int x = 0; x < out_w; ++x)
      for (int ch = 0; ch < in.c; ++ch)  // half-pixel centres (align_corners = false)
        out.at(y, x, ch) = sample(in, std::max(0.f, (y + 0.5f) * sy - 0.5f), std::max(0.f, (x + 0.5f) * sx - 0.5f), ch, false);
  return out;
}

FloatImage crop(const FloatImage& in, const CropBox& b) {
  CAC_CHECK(b.top >= 0 && b.left >= 0 && b.h > 0 && b.w > 0 && b.top + b.h <= in.h && b.left + b.w <= in.w,
            "crop: box ({}, {}, {}x{}) outside a {}x{} image", b.top, b.left, b.h, b.w, in.h, in.w);
  FloatImage out{b.h, b.w, in.c, std::vector<float>(size_t(b.h) * b.w * in.c)};
  for (int y = 0; y < b.h; ++y)
    for (int x = 0; x < b.w; ++x)
      for (int ch = 0; ch < in.c; ++ch) out.at(y, x, ch) = in.at(b.top + y, b.left + x, ch);
  return out;
}

FloatImage hflip(const FloatImage& in) {
  FloatImage out = in;
  for (int y = 0; y < in.h; ++y)
    for (int x = 0; x < in.w; ++x)
      for (int ch = 0; ch < in.c; ++ch) out.at(y, x, ch) = in.at(y, in.w - 1 - x, ch);
  return out;
}

namespace {
// The nearest source pixel of continuous coordinates (pixel centres at integers): the pixel whose
// square contains the point, 0 outside the image.
float nearest(const FloatImage& in, float sy, float sx, int ch) {
  const int y = int(std::floor(sy + 0.5f)), x = int(std::floor(sx + 0.5f));
  return y < 0 || y >= in.h || x < 0 || x >= in.w ? 0.f : in.at(y, x, ch);
}
}  // namespace

FloatImage rotate(const FloatImage& in, double degrees, Interpolation interp) {
  if (degrees == 0) return in;
  FloatImage out{in.h, in.w, in.c, std::vector<float>(in.px.size())};
  const double t = degrees * M_PI / 180.0, ct = std::cos(t), st = std::sin(t);
  const double cy = (in.h - 1) * 0.5, cx = (in.w - 1) * 0.5;
  for (int y = 0; y < in.h; ++y)
    for (int x = 0; x < in.w; ++x) {
      // Inverse map: the source of output pixel (x, y) is it rotated by -t (image y points down,
      // so a counter-clockwise turn on screen is this sign pattern).
      const double dx = x - cx, dy = y - cy;
      const float sx = float(ct * dx - st * dy + cx), sy = float(st * dx + ct * dy + cy);
      for (int ch = 0; ch < in.c; ++ch)
        out.at(y, x, ch) = interp == Interpolation::Nearest ? nearest(in, sy, sx, ch) : sample(in, sy, sx, ch, true);
    }
  return out;
}

CropBox centre_crop_box(int h, int w, int size) {
  CAC_CHECK(size > 0 && size <= h && size <= w, "centre crop of {} from a {}x{} image", size, h, w);
  return CropBox{int(std::lround((h - size) / 2.0)), int(std::lround((w - size) / 2.0)), size, size};
}

void transform_image_reference(const uint8_t* hwc, int h, int w, int c, const Augment& a, uint64_t seed,
                               uint64_t epoch, uint64_t index, float* out) {
  CAC_CHECK(int(a.mean.size()) == c && int(a.std.size()) == c,
            "transform: {} channels but normalisation for {}", c, a.mean.size());
  FloatImage img = resize_bilinear(to_float(hwc, h, w, c), a.size, a.size);
  if (a.train) {
    Generator g(hash3(seed, epoch, index));
    const TrainDraws d = draw_train(a.size, a.crop_scale_min, a.flip_p, a.rotate_deg, g);
    img = resize_bilinear(crop(img, d.box), a.size, a.size);
    if (d.flip) img = hflip(img);
    if (a.rotate_deg > 0) img = rotate(img, d.degrees, a.rotate_interp);
    if (a.randaugment_n > 0) rand_augment(img, a.randaugment_n, a.randaugment_m, g);
  } else if (a.flip) {
    img = hflip(img);
  }
  const size_t plane = size_t(a.size) * a.size;
  for (int ch = 0; ch < c; ++ch) {
    const float m = a.mean[size_t(ch)], s = a.std[size_t(ch)];
    for (size_t p = 0; p < plane; ++p) out[size_t(ch) * plane + p] = (img.px[p * size_t(c) + size_t(ch)] / 255.f - m) / s;
  }
}

namespace {
// One axis of a bilinear resize with clamped borders (align_corners = false), as resize_bilinear
// computes it per pixel: output i reads source lo[i] and hi[i] and weighs hi[i] by frac[i].
// `offset` shifts the taps into a crop box that starts there.
struct AxisTaps {
  std::vector<int> lo, hi;
  std::vector<float> frac;
  void build(int in_n, int out_n, int offset) {
    lo.resize(size_t(out_n));
    hi.resize(size_t(out_n));
    frac.resize(size_t(out_n));
    const float s = float(in_n) / out_n;
    for (int i = 0; i < out_n; ++i) {
      const float c = std::max(0.f, (i + 0.5f) * s - 0.5f);
      const int i0 = int(std::floor(c));
      frac[size_t(i)] = c - i0;
      lo[size_t(i)] = offset + std::clamp(i0, 0, in_n - 1);
      hi[size_t(i)] = offset + std::clamp(i0 + 1, 0, in_n - 1);
    }
  }
};

// Per-thread scratch of the fused pipeline: no allocation per image once the sizes are seen.
struct TransformScratch {
  std::vector<float> in, a, b;
  AxisTaps ty, tx;
};

// dst (out x out x c) = the box (top, left, bh, bw) of src (width src_w) resized bilinearly, its
// columns mirrored when `flip`: resize_bilinear(crop(src, box)) [then hflip], without the copies.
void resize_box(const float* src, int src_w, int c, const CropBox& box, int out, bool flip,
                TransformScratch& s, float* dst) {
  const size_t row = size_t(src_w) * c;
  const bool identity = box.h == out && box.w == out;  // resize_bilinear returns its input
  if (!identity) {
    s.ty.build(box.h, out, box.top);
    s.tx.build(box.w, out, box.left);
  }
  for (int y = 0; y < out; ++y) {
    float* d = dst + size_t(y) * out * c;
    if (identity) {
      const float* r = src + size_t(box.top + y) * row + size_t(box.left) * c;
      if (!flip) {
        std::copy_n(r, size_t(out) * c, d);
      } else {
        for (int x = 0; x < out; ++x) std::copy_n(r + size_t(out - 1 - x) * c, c, d + size_t(x) * c);
      }
      continue;
    }
    const float* r0 = src + size_t(s.ty.lo[size_t(y)]) * row;
    const float* r1 = src + size_t(s.ty.hi[size_t(y)]) * row;
    const float fy = s.ty.frac[size_t(y)];
    for (int x = 0; x < out; ++x) {
      const size_t x0 = size_t(s.tx.lo[size_t(x)]) * c, x1 = size_t(s.tx.hi[size_t(x)]) * c;
      const float fx = s.tx.frac[size_t(x)];
      float* o = d + size_t(flip ? out - 1 - x : x) * c;
      for (int ch = 0; ch < c; ++ch) o[ch] = blend(r0[x0 + ch], r0[x1 + ch], r1[x0 + ch], r1[x1 + ch], fy, fx);
    }
  }
}

// dst = rotate(src) for an n x n x c image, as the reference computes each pixel (the same source
// coordinates and blend), with the neighbour tests done once per pixel instead of per channel.
void rotate_square(const float* src, int n, int c, double degrees, Interpolation interp, float* dst) {
  const double t = degrees * M_PI / 180.0, ct = std::cos(t), st = std::sin(t);
  const double centre = (n - 1) * 0.5;
  const size_t row = size_t(n) * c;
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const double dx = x - centre, dy = y - centre;
      const float sx = float(ct * dx - st * dy + centre), sy = float(st * dx + ct * dy + centre);
      float* o = dst + (size_t(y) * n + x) * c;
      if (interp == Interpolation::Nearest) {
        const int yn = int(std::floor(sy + 0.5f)), xn = int(std::floor(sx + 0.5f));
        const bool inside = yn >= 0 && yn < n && xn >= 0 && xn < n;
        for (int ch = 0; ch < c; ++ch) o[ch] = inside ? src[size_t(yn) * row + size_t(xn) * c + ch] : 0.f;
        continue;
      }
      const int y0 = int(std::floor(sy)), x0 = int(std::floor(sx));
      const float fy = sy - y0, fx = sx - x0;
      if (y0 >= 0 && x0 >= 0 && y0 + 1 < n && x0 + 1 < n) {
        const float* p0 = src + size_t(y0) * row + size_t(x0) * c;
        const float* p1 = p0 + row;
        for (int ch = 0; ch < c; ++ch) o[ch] = blend(p0[ch], p0[c + ch], p1[ch], p1[c + ch], fy, fx);
        continue;
      }
      // Near the border: neighbours outside the image are 0 (zero fill).
      auto px = [&](int yy, int xx, int ch) -> float {
        return yy < 0 || yy >= n || xx < 0 || xx >= n ? 0.f : src[size_t(yy) * row + size_t(xx) * c + ch];
      };
      for (int ch = 0; ch < c; ++ch)
        o[ch] = blend(px(y0, x0, ch), px(y0, x0 + 1, ch), px(y0 + 1, x0, ch), px(y0 + 1, x0 + 1, ch), fy, fx);
    }
}
}  // namespace

// The same steps as transform_image_reference (same random draws in the same order, same
// arithmetic per pixel), fused: the crop is an offset into the resized image, the flip a mirrored
// write, and every buffer is per-thread scratch. DataTransforms.FusedPipelineMatchesTheReference
// holds the two together.
void transform_image(const uint8_t* hwc, int h, int w, int c, const Augment& a, uint64_t seed,
                     uint64_t epoch, uint64_t index, float* out) {
  CAC_CHECK(int(a.mean.size()) == c && int(a.std.size()) == c,
            "transform: {} channels but normalisation for {}", c, a.mean.size());
  thread_local TransformScratch s;
  const int S = a.size;
  const size_t n = size_t(S) * S * c;
  // Stage 1: to float, resized to S x S (a plain conversion when the image already is).
  s.a.resize(n);
  s.b.resize(n);
  float* cur = s.a.data();
  if (h == S && w == S) {
    std::copy_n(hwc, n, cur);
  } else {
    s.in.assign(hwc, hwc + size_t(h) * w * c);
    resize_box(s.in.data(), w, c, CropBox{0, 0, h, w}, S, false, s, cur);
  }
  float* spare = s.b.data();
  if (a.train) {
    Generator g(hash3(seed, epoch, index));
    const TrainDraws d = draw_train(S, a.crop_scale_min, a.flip_p, a.rotate_deg, g);
    // Stage 2: crop + resize back to S x S (+ flip) into the spare buffer.
    resize_box(cur, S, c, d.box, S, d.flip, s, spare);
    std::swap(cur, spare);
    if (a.rotate_deg > 0) {
      if (d.degrees != 0) {  // rotate() returns its input unchanged at 0
        rotate_square(cur, S, c, d.degrees, a.rotate_interp, spare);
        std::swap(cur, spare);
      }
    }
    if (a.randaugment_n > 0) {  // on whole images (its ops are not pixel-local): one copy in and out
      thread_local FloatImage img;
      img.h = img.w = S;
      img.c = c;
      img.px.assign(cur, cur + n);
      rand_augment(img, a.randaugment_n, a.randaugment_m, g);
      std::copy(img.px.begin(), img.px.end(), cur);
    }
  } else if (a.flip) {
    resize_box(cur, S, c, CropBox{0, 0, S, S}, S, true, s, spare);
    std::swap(cur, spare);
  }
  const size_t plane = size_t(S) * S;
  for (int ch = 0; ch < c; ++ch) {
    const float m = a.mean[size_t(ch)], sd = a.std[size_t(ch)];
    float* o = out + size_t(ch) * plane;
    for (size_t p = 0; p < plane; ++p) o[p] = (cur[p * size_t(c) + size_t(ch)] / 255.f - m) / sd;
  }
}

}  // namespace cac::data
