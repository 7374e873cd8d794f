#pragma once
// RandAugment (Cubuk et al. 2020) as torchvision.transforms.RandAugment defines it: N operations
// drawn uniformly (with replacement) from the 14 below, each at magnitude M of 31 bins (0..30),
// signed ones negated with probability 1/2. The operations act on 8-bit images, as torchvision's
// do on uint8 tensors: results are clamped to [0, 255] and truncated to integers (blends), rounded
// where torchvision rounds (the sharpness blur), and the geometric ones sample the nearest pixel
// with zero fill. Part of the strong-baseline recipe of Vaze et al. 2022 (cac_train --randaugment).
#include <cstdint>

#include "core/rng.h"
#include "data/transforms.h"

namespace cac::data {

enum class RandOp {
  Identity, ShearX, ShearY, TranslateX, TranslateY, Rotate, Brightness, Color, Contrast, Sharpness,
  Posterize, Solarize, AutoContrast, Equalize
};
constexpr int kRandOps = 14;
constexpr int kRandMagnitudeBins = 31;  // M in 0..30
const char* rand_op_name(RandOp op);
// Whether the op's value is negated with probability 1/2.
bool rand_op_signed(RandOp op);
// The op's value at magnitude m (0..30) for an h x w image, before the sign: shear factor (0.3 at
// 30), pixels (150/331 of the width or height at 30, truncated), degrees (30 at 30), enhance factor
// minus 1 (0.9 at 30), bits kept (8 down to 4), solarize threshold (255 down to 0); 0 for the rest.
double rand_op_value(RandOp op, int m, int h, int w);

// One operation with value v (as rand_op_value gives it, signed) on an image of integer values in
// [0, 255]:
//   ShearX: out(x, y) = in(floor(x + 0.5 + v (y + 0.5)), y), about the top-left corner; ShearY alike.
//   TranslateX: out(x, y) = in(x - v, y) (content moves right for v > 0); TranslateY alike.
//   Rotate: rotate() by v degrees counter-clockwise, nearest pixel.
//   Brightness: f in, f = 1 + v; Color: f in + (1 - f) grey(in), grey = trunc(0.2989 R + 0.587 G +
//   0.114 B) (a one-channel image is its own grey); Contrast: f in + (1 - f) mean(grey(in));
//   Sharpness: f in + (1 - f) blur(in), blur = round of the 3 x 3 kernel [1 1 1; 1 5 1; 1 1 1] / 13
//   inside, the border pixels kept; each clamped to [0, 255] and truncated.
//   Posterize: keep the top v bits; Solarize: 255 - in where in >= v.
//   AutoContrast: each channel stretched to [0, 255] from its min and max (unchanged if flat).
//   Equalize: each channel through PIL's histogram-equalisation table.
void apply_rand_op(FloatImage& img, RandOp op, double v);

// The whole RandAugment step: the image rounded to integers in [0, 255], then n operations at
// magnitude m drawn from g (op, then the sign of a signed op).
void rand_augment(FloatImage& img, int n, int m, Generator& g);

}  // namespace cac::data
