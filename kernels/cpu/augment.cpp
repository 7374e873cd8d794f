// CPU twin of kernels/augment.h: the loader's own pipeline, data::transform_image, per sample.
#include "data/transforms.h"
#include "kernels/augment.h"

namespace cac::kernels::cpu {

void augment_gather(const Tensor& images, const Tensor& rows, const Tensor& positions, const AugmentSpec& spec,
                    Tensor& out) {
  const int H = int(images.dim(1)), W = int(images.dim(2)), C = int(images.dim(3)), S = spec.size;
  data::Augment a;
  a.size = S;
  a.train = spec.train;
  a.crop_scale_min = spec.crop_scale_min;
  a.flip_p = spec.flip_p;
  a.rotate_deg = spec.rotate_deg;
  a.rotate_interp = spec.bilinear_rotation ? data::Interpolation::Bilinear : data::Interpolation::Nearest;
  a.flip = spec.flip;
  a.mean.assign(spec.mean, spec.mean + C);
  a.std.assign(spec.std, spec.std + C);
  const uint8_t* px = images.data<uint8_t>();
  const int64_t* r = rows.data<int64_t>();
  const int64_t* p = positions.data<int64_t>();
  const size_t per_in = size_t(H) * W * C, per_out = size_t(C) * S * S;
  for (int64_t b = 0; b < rows.numel(); ++b) {
    CAC_CHECK(r[b] >= 0 && r[b] < images.dim(0), "augment_gather: row {} of a set of {} images", r[b], images.dim(0));
    data::transform_image(px + size_t(r[b]) * per_in, H, W, C, a, spec.seed, spec.epoch, uint64_t(p[b]),
                          out.data<float>() + size_t(b) * per_out);
  }
}

}  // namespace cac::kernels::cpu
