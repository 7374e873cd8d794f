#include "data/randaugment.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/error.h"

namespace cac::data {

namespace {
struct OpInfo {
  RandOp op;
  const char* name;
  bool is_signed;
};
constexpr OpInfo kOps[kRandOps] = {
    {RandOp::Identity, "identity", false},   {RandOp::ShearX, "shear_x", true},
    {RandOp::ShearY, "shear_y", true},       {RandOp::TranslateX, "translate_x", true},
    {RandOp::TranslateY, "translate_y", true}, {RandOp::Rotate, "rotate", true},
    {RandOp::Brightness, "brightness", true}, {RandOp::Color, "color", true},
    {RandOp::Contrast, "contrast", true},    {RandOp::Sharpness, "sharpness", true},
    {RandOp::Posterize, "posterize", false}, {RandOp::Solarize, "solarize", false},
    {RandOp::AutoContrast, "autocontrast", false}, {RandOp::Equalize, "equalize", false},
};

// A result as an 8-bit image holds it: clamped, then truncated (torchvision's uint8 cast). The
// arithmetic before it is float, as torchvision's on float32 tensors, so that values at a rounding
// edge ((150 - 50) * 2.55) land where its do.
float to_u8(float v) { return std::trunc(std::clamp(v, 0.f, 255.f)); }

// out(x, y) = in(src(x, y)), 0 where the source pixel is outside the image.
template <class Src>
void remap(FloatImage& img, Src src) {
  FloatImage out = img;
  for (int y = 0; y < img.h; ++y)
    for (int x = 0; x < img.w; ++x) {
      const auto [sx, sy] = src(x, y);
      const bool inside = sx >= 0 && sx < img.w && sy >= 0 && sy < img.h;
      for (int ch = 0; ch < img.c; ++ch) out.at(y, x, ch) = inside ? img.at(sy, sx, ch) : 0.f;
    }
  img = std::move(out);
}

void geometric(FloatImage& img, RandOp op, double v) {
  const int t = int(v);  // torchvision translates by int(magnitude)
  switch (op) {
    case RandOp::ShearX:
      return remap(img, [&](int x, int y) { return std::pair<int, int>(int(std::floor(x + 0.5 + v * (y + 0.5))), y); });
    case RandOp::ShearY:
      return remap(img, [&](int x, int y) { return std::pair<int, int>(x, int(std::floor(y + 0.5 + v * (x + 0.5)))); });
    case RandOp::TranslateX: return remap(img, [&](int x, int y) { return std::pair<int, int>(x - t, y); });
    case RandOp::TranslateY: return remap(img, [&](int x, int y) { return std::pair<int, int>(x, y - t); });
    default: img = rotate(img, v, Interpolation::Nearest);
  }
}

// trunc(0.2989 R + 0.587 G + 0.114 B) per pixel (the pixel itself for one channel).
std::vector<float> grey(const FloatImage& img) {
  std::vector<float> g(size_t(img.h) * img.w);
  for (int y = 0; y < img.h; ++y)
    for (int x = 0; x < img.w; ++x)
      g[size_t(y) * img.w + x] = img.c == 1 ? img.at(y, x, 0)
                                            : std::trunc(0.2989f * img.at(y, x, 0) + 0.587f * img.at(y, x, 1) +
                                                         0.114f * img.at(y, x, 2));
  return g;
}

// The sharpness op's degenerate image: the rounded 3 x 3 blur inside, the border as it was.
FloatImage blurred(const FloatImage& img) {
  FloatImage out = img;
  for (int y = 1; y + 1 < img.h; ++y)
    for (int x = 1; x + 1 < img.w; ++x)
      for (int ch = 0; ch < img.c; ++ch) {
        float s = 4 * img.at(y, x, ch);  // the centre's weight is 5: 4 more than the other eight
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) s += img.at(y + dy, x + dx, ch);
        out.at(y, x, ch) = std::nearbyint(s / 13);
      }
  return out;
}

// f in + (1 - f) other, other given per pixel and channel.
template <class Other>
void blend_with(FloatImage& img, float f, Other other) {
  for (int y = 0; y < img.h; ++y)
    for (int x = 0; x < img.w; ++x)
      for (int ch = 0; ch < img.c; ++ch)
        img.at(y, x, ch) = to_u8(f * img.at(y, x, ch) + (1 - f) * other(y, x, ch));
}

void enhance(FloatImage& img, RandOp op, double v) {
  const float f = float(1 + v);
  if (op == RandOp::Brightness) return blend_with(img, f, [](int, int, int) { return 0.f; });
  if (op == RandOp::Sharpness) {
    const FloatImage b = blurred(img);
    return blend_with(img, f, [&](int y, int x, int ch) { return b.at(y, x, ch); });
  }
  const std::vector<float> g = grey(img);
  if (op == RandOp::Color) return blend_with(img, f, [&](int y, int x, int) { return g[size_t(y) * img.w + x]; });
  double sum = 0;
  for (float p : g) sum += p;
  const float mean = float(sum / double(g.size()));
  blend_with(img, f, [&](int, int, int) { return mean; });
}

// Each channel's values through a table (or a rule) of its own.
template <class Map>
void per_channel(FloatImage& img, Map map) {
  for (int ch = 0; ch < img.c; ++ch) {
    std::array<int64_t, 256> hist{};
    for (int y = 0; y < img.h; ++y)
      for (int x = 0; x < img.w; ++x) ++hist[size_t(img.at(y, x, ch))];
    const std::array<float, 256> lut = map(hist);
    for (int y = 0; y < img.h; ++y)
      for (int x = 0; x < img.w; ++x) img.at(y, x, ch) = lut[size_t(img.at(y, x, ch))];
  }
}

std::array<float, 256> autocontrast_table(const std::array<int64_t, 256>& hist) {
  int lo = 0, hi = 255;
  while (lo < 255 && hist[size_t(lo)] == 0) ++lo;
  while (hi > 0 && hist[size_t(hi)] == 0) --hi;
  std::array<float, 256> lut{};
  const float scale = hi > lo ? 255.f / float(hi - lo) : 1.f;
  for (int v = 0; v < 256; ++v) lut[size_t(v)] = hi <= lo ? float(v) : to_u8(float(v - lo) * scale);
  return lut;
}

// PIL's equalisation: step = (pixels - the count of the last used value) / 255, each value mapped
// to (pixels below it + step / 2) / step; unchanged when step is 0.
std::array<float, 256> equalize_table(const std::array<int64_t, 256>& hist) {
  int64_t total = 0, last = 0;
  for (int64_t h : hist) total += h, last = h > 0 ? h : last;
  const int64_t step = (total - last) / 255;
  std::array<float, 256> lut{};
  int64_t below = 0;
  for (int v = 0; v < 256; ++v) {
    lut[size_t(v)] = step == 0 ? float(v) : float(std::min<int64_t>(255, (below + step / 2) / step));
    below += hist[size_t(v)];
  }
  return lut;
}
}  // namespace

const char* rand_op_name(RandOp op) { return kOps[int(op)].name; }
bool rand_op_signed(RandOp op) { return kOps[int(op)].is_signed; }

double rand_op_value(RandOp op, int m, int h, int w) {
  CAC_CHECK(m >= 0 && m < kRandMagnitudeBins, "RandAugment: magnitude {} is outside 0..30", m);
  const double at = double(m) / (kRandMagnitudeBins - 1);  // torchvision's linspace over 31 bins
  switch (op) {
    case RandOp::ShearX:
    case RandOp::ShearY: return 0.3 * at;
    case RandOp::TranslateX: return std::trunc(150.0 / 331.0 * w * at);
    case RandOp::TranslateY: return std::trunc(150.0 / 331.0 * h * at);
    case RandOp::Rotate: return 30.0 * at;
    case RandOp::Brightness:
    case RandOp::Color:
    case RandOp::Contrast:
    case RandOp::Sharpness: return 0.9 * at;
    case RandOp::Posterize: return 8 - std::lround(m / 7.5);
    case RandOp::Solarize: return 255.0 * (1 - at);
    default: return 0;
  }
}

void apply_rand_op(FloatImage& img, RandOp op, double v) {
  switch (op) {
    case RandOp::Identity: return;
    case RandOp::ShearX:
    case RandOp::ShearY:
    case RandOp::TranslateX:
    case RandOp::TranslateY:
    case RandOp::Rotate: return geometric(img, op, v);
    case RandOp::Brightness:
    case RandOp::Color:
    case RandOp::Contrast:
    case RandOp::Sharpness: return enhance(img, op, v);
    case RandOp::Posterize: {
      const int keep = 0xFF & ~((1 << (8 - int(v))) - 1);
      for (float& p : img.px) p = float(int(p) & keep);
      return;
    }
    case RandOp::Solarize:
      for (float& p : img.px) p = p >= v ? 255 - p : p;
      return;
    case RandOp::AutoContrast: return per_channel(img, autocontrast_table);
    case RandOp::Equalize: return per_channel(img, equalize_table);
  }
}

void rand_augment(FloatImage& img, int n, int m, Generator& g) {
  for (float& p : img.px) p = std::clamp(std::nearbyint(p), 0.f, 255.f);  // an 8-bit image, as PIL's
  for (int i = 0; i < n; ++i) {
    const RandOp op = RandOp(g.below(kRandOps));
    double v = rand_op_value(op, m, img.h, img.w);
    if (rand_op_signed(op) && g.below(2) == 1) v = -v;
    apply_rand_op(img, op, v);
  }
}

}  // namespace cac::data
