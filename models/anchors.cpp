#include "models/anchors.h"

#include <algorithm>

namespace cac {

ClassMeanAnchors class_mean_anchors(const std::vector<float>& logits, const std::vector<int64_t>& labels, int K,
                                    double alpha) {
  CAC_CHECK(K > 0 && logits.size() == labels.size() * size_t(K),
            "class_mean_anchors: {} logits for {} labels of {} classes", logits.size(), labels.size(), K);
  std::vector<double> sum(size_t(K) * K, 0.0);
  std::vector<int64_t> count(size_t(K), 0);
  for (size_t i = 0; i < labels.size(); ++i) {
    const float* zi = logits.data() + i * size_t(K);
    const int64_t pred = std::max_element(zi, zi + K) - zi;
    const int64_t y = labels[i];
    CAC_CHECK(y >= 0 && y < K, "class_mean_anchors: label {} outside 0..{}", y, K - 1);
    if (pred != y) continue;
    for (int k = 0; k < K; ++k) sum[size_t(y) * K + k] += zi[k];
    ++count[size_t(y)];
  }
  ClassMeanAnchors out;
  std::vector<float> anchors(size_t(K) * K, 0.f);
  for (int y = 0; y < K; ++y) {
    if (count[size_t(y)] == 0) {
      out.fallback.push_back(y);
      anchors[size_t(y) * K + y] = float(alpha);
      continue;
    }
    for (int k = 0; k < K; ++k) anchors[size_t(y) * K + k] = float(sum[size_t(y) * K + k] / double(count[size_t(y)]));
  }
  out.anchors = Tensor::from_vector(anchors, {K, K});
  return out;
}

}  // namespace cac
