#include "apps/scoring.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/autograd.h"
#include "layers/ops.h"

namespace cac::app {

Scored score_logits(Method method, const std::vector<float>& z, int K, const Tensor& anchors) {
  Scored s;
  const int64_t N = int64_t(z.size()) / K;
  if (method == Method::CE) {
    for (int64_t i = 0; i < N; ++i) {
      const float* zi = z.data() + size_t(i) * K;
      const float m = *std::max_element(zi, zi + K);
      double den = 0;
      for (int k = 0; k < K; ++k) den += std::exp(double(zi[k] - m));
      s.score.push_back(1.0 - 1.0 / den);
      s.logit_score.push_back(-double(m));
      s.pred.push_back(std::max_element(zi, zi + K) - zi);
    }
    return s;
  }
  NoGradGuard no_grad;
  Tensor zt = Tensor::from_vector(z, {N, K});
  std::vector<float> g = ops::open_set_score(ops::pairwise_distance(zt, anchors)).to_vector<float>();
  for (int64_t i = 0; i < N; ++i) {
    const float* gi = g.data() + size_t(i) * K;
    s.score.push_back(*std::min_element(gi, gi + K));
    s.pred.push_back(std::min_element(gi, gi + K) - gi);
  }
  return s;
}

std::string Deployment::to_json() const {
  nlohmann::json j = {{"method", method}, {"arch", arch}, {"num_classes", num_classes}, {"image_size", image_size},
                      {"channels", channels}, {"mean", mean}, {"std", std}, {"anchors", anchors},
                      {"threshold", threshold}, {"class_names", class_names},
                      {"_comment", "written by cac_eval; threshold = open-set score accepting 95% of the "
                                   "validation images of the known classes"}};
  return j.dump(2) + "\n";
}

Deployment Deployment::from_json(const std::string& text, const std::string& where) {
  Deployment d;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    d.method = j.at("method");
    d.arch = j.at("arch");
    d.num_classes = j.at("num_classes");
    d.image_size = j.at("image_size");
    d.channels = j.at("channels");
    d.mean = j.at("mean").get<std::vector<float>>();
    d.std = j.at("std").get<std::vector<float>>();
    d.anchors = j.at("anchors").get<std::vector<float>>();
    d.threshold = j.at("threshold");
    d.class_names = j.at("class_names").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a valid deployment record ({}); run cac_eval on the run again", where, e.what());
  }
  CAC_CHECK(d.num_classes >= 2 && int(d.class_names.size()) == d.num_classes &&
                (d.anchors.empty() || d.anchors.size() == size_t(d.num_classes) * d.num_classes) &&
                int(d.mean.size()) == d.channels && int(d.std.size()) == d.channels,
            "{}: inconsistent deployment record (classes, anchors or normalisation); run cac_eval again", where);
  return d;
}

}  // namespace cac::app
