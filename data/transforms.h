#pragma once
// Image transforms on one image (uint8 HWC in, float out) with torchvision's semantics where the
// protocol names them: resize (bilinear), random resized crop (area scale [s, 1], aspect ratio
// [3/4, 4/3], 10 tries then a centre crop), horizontal flip, random rotation (nearest neighbour as
// torchvision's RandomRotation by default, or bilinear; zero fill),
// centre crop, to [0, 1], per-channel normalisation. Random draws are a pure function of
// (seed, epoch, sample index), so results do not depend on threads or on the order of work.
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "data/draws.h"  // CropBox, random_resized_crop_box, draw_train

namespace cac::data {

struct FloatImage {
  int h = 0, w = 0, c = 0;
  std::vector<float> px;  // HWC, values in [0, 255] until normalised
  float& at(int y, int x, int ch) { return px[(size_t(y) * w + x) * c + ch]; }
  float at(int y, int x, int ch) const { return px[(size_t(y) * w + x) * c + ch]; }
};

FloatImage to_float(const uint8_t* hwc, int h, int w, int c);
FloatImage resize_bilinear(const FloatImage& in, int out_h, int out_w);
FloatImage crop(const FloatImage& in, const CropBox& box);
FloatImage hflip(const FloatImage& in);
// How a rotation samples the source: the nearest pixel (torchvision's RandomRotation default, on
// PIL images: the pixel that contains the source point) or a bilinear blend of four.
enum class Interpolation { Nearest, Bilinear };
// Counter-clockwise by `degrees` about the image centre; pixels from outside are 0.
FloatImage rotate(const FloatImage& in, double degrees, Interpolation interp = Interpolation::Nearest);
CropBox centre_crop_box(int h, int w, int size);

struct Augment {
  int size = 32;       // output is size x size
  bool train = false;  // random resized crop + flip + rotation; else resize only
  double crop_scale_min = 1.0, flip_p = 0.0, rotate_deg = 0.0;
  Interpolation rotate_interp = Interpolation::Nearest;
  bool flip = false;   // eval only: a deterministic horizontal flip (class means use flipped copies)
  int randaugment_n = 0, randaugment_m = 0;  // training: RandAugment's N operations at magnitude M (0 = none)
  std::vector<float> mean, std;  // per channel, on the [0, 1] scale
};

// The whole pipeline for one sample, written as normalised float CHW (c * size * size values):
// resize to size x size; when training, random resized crop back to size x size, flip, rotation,
// RandAugment (data/randaugment.h) when asked.
// Fused (no copies, per-thread scratch) for the loader's workers.
void transform_image(const uint8_t* hwc, int h, int w, int c, const Augment& a, uint64_t seed,
                     uint64_t epoch, uint64_t index, float* out_chw);
// The same pipeline as a plain chain of the transforms above: the reference that transform_image
// is tested against (same draws, same values).
void transform_image_reference(const uint8_t* hwc, int h, int w, int c, const Augment& a, uint64_t seed,
                               uint64_t epoch, uint64_t index, float* out_chw);

}  // namespace cac::data
