#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace cac::data {

FloatImage to_float(const uint8_t* hwc, int h, int w, int c) {
  FloatImage f{h, w, c, std::vector<float>(size_t(h) * w * c)};
  for (size_t i = 0; i < f.px.size(); ++i) f.px[i] = hwc[i];
  return f;
}

namespace {
// Bilinear sample at continuous source coordinates; out-of-image neighbours count as `fill`
// (zero) when `zero_outside`, else are clamped to the border.
float sample(const FloatImage& in, float sy, float sx, int ch, bool zero_outside) {
  const int y0 = int(std::floor(sy)), x0 = int(std::floor(sx));
  const float fy = sy - y0, fx = sx - x0;
  auto px = [&](int y, int x) -> float {
    if (zero_outside && (y < 0 || y >= in.h || x < 0 || x >= in.w)) return 0.f;
    return in.at(std::clamp(y, 0, in.h - 1), std::clamp(x, 0, in.w - 1), ch);
  };
  return (1 - fy) * ((1 - fx) * px(y0, x0) + fx * px(y0, x0 + 1)) +
         fy * ((1 - fx) * px(y0 + 1, x0) + fx * px(y0 + 1, x0 + 1));
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

FloatImage rotate(const FloatImage& in, double degrees) {
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
      for (int ch = 0; ch < in.c; ++ch) out.at(y, x, ch) = sample(in, sy, sx, ch, true);
    }
  return out;
}

CropBox random_resized_crop_box(int h, int w, double scale_min, Generator& g) {
  const double area = double(h) * w;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (scale_min + (1.0 - scale_min) * g.uniform());
    const double log_r = std::log(3.0 / 4.0) + (std::log(4.0 / 3.0) - std::log(3.0 / 4.0)) * g.uniform();
    const double ratio = std::exp(log_r);
    const int cw = int(std::lround(std::sqrt(target * ratio))), ch = int(std::lround(std::sqrt(target / ratio)));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      CropBox b;
      b.h = ch;
      b.w = cw;
      b.top = int(g.below(uint64_t(h - ch + 1)));
      b.left = int(g.below(uint64_t(w - cw + 1)));
      return b;
    }
  }
  // Fallback (torchvision): the whole image clamped to the ratio range, centred.
  const double in_ratio = double(w) / h;
  CropBox b;
  if (in_ratio < 3.0 / 4.0) {
    b.w = w;
    b.h = int(std::lround(w / (3.0 / 4.0)));
  } else if (in_ratio > 4.0 / 3.0) {
    b.h = h;
    b.w = int(std::lround(h * (4.0 / 3.0)));
  } else {
    b.w = w;
    b.h = h;
  }
  b.top = (h - b.h) / 2;
  b.left = (w - b.w) / 2;
  return b;
}

CropBox centre_crop_box(int h, int w, int size) {
  CAC_CHECK(size > 0 && size <= h && size <= w, "centre crop of {} from a {}x{} image", size, h, w);
  return CropBox{int(std::lround((h - size) / 2.0)), int(std::lround((w - size) / 2.0)), size, size};
}

void transform_image(const uint8_t* hwc, int h, int w, int c, const Augment& a, uint64_t seed,
                     uint64_t epoch, uint64_t index, float* out) {
  CAC_CHECK(int(a.mean.size()) == c && int(a.std.size()) == c,
            "transform: {} channels but normalisation for {}", c, a.mean.size());
  FloatImage img = resize_bilinear(to_float(hwc, h, w, c), a.size, a.size);
  if (a.train) {
    Generator g(hash3(seed, epoch, index));
    img = resize_bilinear(crop(img, random_resized_crop_box(img.h, img.w, a.crop_scale_min, g)), a.size, a.size);
    if (g.uniform() < a.flip_p) img = hflip(img);
    if (a.rotate_deg > 0) img = rotate(img, (2 * g.uniform() - 1) * a.rotate_deg);
  } else if (a.flip) {
    img = hflip(img);
  }
  const size_t plane = size_t(a.size) * a.size;
  for (int ch = 0; ch < c; ++ch) {
    const float m = a.mean[size_t(ch)], s = a.std[size_t(ch)];
    for (size_t p = 0; p < plane; ++p) out[size_t(ch) * plane + p] = (img.px[p * size_t(c) + size_t(ch)] / 255.f - m) / s;
  }
}

}  // namespace cac::data
