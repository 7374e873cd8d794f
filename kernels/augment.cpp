// Dispatch point of the augmentation kernel: device -> CPU twin or CUDA kernel.
#include "kernels/augment.h"

namespace cac::kernels {

void augment_gather(const Tensor& images, const Tensor& rows, const Tensor& positions, const AugmentSpec& spec,
                    Tensor& out) {
  CAC_CHECK(images.dtype() == DType::U8 && images.ndim() == 4 && (images.dim(3) == 1 || images.dim(3) == 3),
            "augment_gather: images must be u8 [N, H, W, 1 or 3], got {}", images.str());
  CAC_CHECK(rows.dtype() == DType::I64 && positions.dtype() == DType::I64 && rows.numel() == positions.numel(),
            "augment_gather: rows {} and positions {} must be i64 of one length", rows.str(), positions.str());
  CAC_CHECK(out.dtype() == DType::F32 && out.ndim() == 4 && out.dim(0) == rows.numel() &&
                out.dim(1) == images.dim(3) && out.dim(2) == spec.size && out.dim(3) == spec.size,
            "augment_gather: out {} must be f32 [{}, {}, {}, {}]", out.str(), rows.numel(), images.dim(3), spec.size,
            spec.size);
  CAC_CHECK(images.device() == rows.device() && rows.device() == positions.device() &&
                positions.device() == out.device(),
            "augment_gather: images, rows, positions and out must be on one device");
  CAC_DISPATCH(images.device(), augment_gather, images, rows, positions, spec, out);
}

}  // namespace cac::kernels
