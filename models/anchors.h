#pragma once
// CAC's deploy anchors: after training, each class's anchor becomes the mean logit vector of the
// training images of that class that the network classifies correctly (argmax of the logits), as
// the CAC authors' evaluation does. Used by cac_eval (and anything else that needs deploy anchors).
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace cac {

struct ClassMeanAnchors {
  Tensor anchors;             // [K, K] f32 on the CPU
  std::vector<int> fallback;  // classes with no correctly classified image: their anchor stays alpha * e_i
};

// `logits`: host [n, K] logits of the training images, row i labelled labels[i] (several passes
// may be concatenated, e.g. the images and their flipped copies); sums in double, in row order.
ClassMeanAnchors class_mean_anchors(const std::vector<float>& logits, const std::vector<int64_t>& labels, int K,
                                    double alpha);

}  // namespace cac
