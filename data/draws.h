#pragma once
// The random draws of the training augmentation, one definition for the CPU pipeline
// (transforms.cpp) and the CUDA kernel that augments batches on the device (kernels/augment.h):
// a pure function of (seed, epoch, sample position) through the counter-based Generator, so both
// give each image the same crop, flip and rotation. Host and device math (log, exp, sqrt) are
// plain C calls: on the device the CUDA library's, within an ulp of the host's, which moves a crop
// edge only where a box side lands on .5 of a pixel.
#include <math.h>

#include "core/rng.h"

namespace cac::data {

struct CropBox {
  int top = 0, left = 0, h = 0, w = 0;
};

// torchvision's RandomResizedCrop.get_params: area scale in [scale_min, 1], log-uniform aspect ratio
// in [3/4, 4/3], 10 tries, then the whole image clamped to the ratio range, centred.
CAC_HD CropBox random_resized_crop_box(int h, int w, double scale_min, Generator& g) {
  const double area = double(h) * w;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (scale_min + (1.0 - scale_min) * g.uniform());
    const double log_r = log(3.0 / 4.0) + (log(4.0 / 3.0) - log(3.0 / 4.0)) * g.uniform();
    const double ratio = exp(log_r);
    const int cw = int(llround(sqrt(target * ratio))), ch = int(llround(sqrt(target / ratio)));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      CropBox b;
      b.h = ch;
      b.w = cw;
      b.top = int(g.below(uint64_t(h - ch + 1)));
      b.left = int(g.below(uint64_t(w - cw + 1)));
      return b;
    }
  }
  const double in_ratio = double(w) / h;
  CropBox b;
  if (in_ratio < 3.0 / 4.0) {
    b.w = w;
    b.h = int(llround(w / (3.0 / 4.0)));
  } else if (in_ratio > 4.0 / 3.0) {
    b.h = h;
    b.w = int(llround(h * (4.0 / 3.0)));
  } else {
    b.w = w;
    b.h = h;
  }
  b.top = (h - b.h) / 2;
  b.left = (w - b.w) / 2;
  return b;
}

// One training image's draws, in the pipeline's order: the crop of the S x S resized image, the
// flip (always drawn), the rotation in [-rotate_deg, rotate_deg] (drawn when rotate_deg > 0).
// `g` goes on to RandAugment's draws.
struct TrainDraws {
  CropBox box;
  bool flip = false;
  double degrees = 0;
};
CAC_HD TrainDraws draw_train(int size, double crop_scale_min, double flip_p, double rotate_deg, Generator& g) {
  TrainDraws d;
  d.box = random_resized_crop_box(size, size, crop_scale_min, g);
  d.flip = g.uniform() < flip_p;
  if (rotate_deg > 0) d.degrees = (2 * g.uniform() - 1) * rotate_deg;
  return d;
}

}  // namespace cac::data
