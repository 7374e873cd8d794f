#pragma once
// Open-set scores from logits, shared by cac_eval and cac_predict. Higher = more likely unknown.
//   CAC (anchored or learnt centres): score = min_j gamma_j, gamma = d * (1 - softmin(d)), d the
//   distances to the anchors; predicted class = argmin gamma.
//   CE baseline: score = 1 - max softmax(z); predicted class = argmax z.
// `confidence` is the closed-set prediction's probability (calibration): CE the maximum softmax,
// CAC softmin(d) of the predicted class.
#include <cstdint>
#include <string>
#include <vector>

#include "apps/posthoc.h"
#include "core/tensor.h"
#include "models/training.h"

namespace cac::app {

struct Scored {
  std::vector<double> score, confidence;
  std::vector<int64_t> pred;
};
// z: N x K logits (row-major); anchors: K x K on the CPU (ignored for CE).
Scored score_logits(Method method, const std::vector<float>& z, int K, const Tensor& anchors);

// The run's deployment record, written by cac_eval next to best.safetensors (RUN/deploy.json): what
// cac_predict needs to score new images without the training data. The knn and mahalanobis scores
// keep what they fitted on the training images in a safetensors file beside it
// (deploy_score_file), tagged with score_id so a file from another evaluation is refused.
struct Deployment {
  std::string method, arch;
  int num_classes = 0, image_size = 32, channels = 3;
  std::vector<float> mean, std, anchors;  // anchors: K x K (class means of training logits); CE: only for the cac score
  Scorer score = Scorer::Cac;              // the open-set score the threshold applies to
  int knn_k = 0;                           // knn: its k
  std::string score_file, score_id;        // knn, mahalanobis: the file beside deploy.json and its tag
  double threshold = 0;                    // score above it = unknown
  double accept = 0.95;                    // the share of the validation knowns that threshold accepts
  std::vector<std::string> class_names;    // network class k -> a name (folder name or dataset label)
  std::string to_json() const;
  static Deployment from_json(const std::string& text, const std::string& where);
};
// The score file a deployment with score `s` keeps beside deploy.json ("" for the logit scores).
std::string deploy_score_file(Scorer s);

}  // namespace cac::app
