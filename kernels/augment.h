#pragma once
// The protocol's image pipeline for a batch gathered from a uint8 image set held on the device
// (issue 23: the training data uploaded once, each batch augmented where it is trained): every
// sample as data::transform_image makes it (resize to size x size, and when training the random
// resized crop back to size, the flip and the rotation; then to [0, 1] and normalised), its draws
// from (seed, epoch, sample position) by data/draws.h, so the CPU twin is transform_image itself.
// RandAugment stays on the host loader.
#include <cstdint>

#include "kernels/dispatch.h"

namespace cac::kernels {

struct AugmentSpec {
  int size = 32;
  bool train = true;
  double crop_scale_min = 1, flip_p = 0, rotate_deg = 0;
  bool bilinear_rotation = false;  // else the nearest pixel (torchvision's RandomRotation default)
  bool flip = false;               // evaluation only: a deterministic horizontal flip
  float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};  // per channel, on the [0, 1] scale
  uint64_t seed = 0, epoch = 0;
};

// images: u8 [N, H, W, C] (C = 1 or 3); rows: i64 [B], which images (each < N: the CPU twin checks,
// the CUDA kernel cannot without a host wait); positions: i64 [B], each sample's position (the
// draws' index, as the loader passes it); out: f32 [B, C, size, size].
CAC_DECLARE_KERNEL(void augment_gather(const Tensor& images, const Tensor& rows, const Tensor& positions,
                                       const AugmentSpec& spec, Tensor& out))

}  // namespace cac::kernels
