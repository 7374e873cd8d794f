#include "apps/scoring.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "data/json_fields.h"

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
      s.confidence.push_back(1.0 / den);
      s.pred.push_back(std::max_element(zi, zi + K) - zi);
    }
    return s;
  }
  NoGradGuard no_grad;
  Tensor zt = Tensor::from_vector(z, {N, K});
  const Tensor dt = ops::pairwise_distance(zt, anchors);
  std::vector<float> g = ops::open_set_score(dt).to_vector<float>();
  const std::vector<float> d = dt.to_vector<float>();
  const int C = int(anchors.dim(0));
  for (int64_t i = 0; i < N; ++i) {
    const float* gi = g.data() + size_t(i) * C;
    const float* di = d.data() + size_t(i) * C;
    const int64_t pred = std::min_element(gi, gi + C) - gi;
    s.score.push_back(gi[pred]);
    s.pred.push_back(pred);
    const float dmin = *std::min_element(di, di + C);
    double den = 0;
    for (int k = 0; k < C; ++k) den += std::exp(double(dmin - di[k]));
    s.confidence.push_back(std::exp(double(dmin - di[pred])) / den);
  }
  return s;
}

std::string deploy_score_file(Scorer s) {
  return reads_features(s) ? fmt::format("deploy-{}.safetensors", scorer_name(s)) : "";
}

std::string Deployment::to_json() const {
  nlohmann::json j = {{"method", method}, {"arch", arch}, {"num_classes", num_classes}, {"image_size", image_size},
                      {"channels", channels}, {"mean", mean}, {"std", std}, {"anchors", anchors},
                      {"score", scorer_name(score)}, {"score_meaning", scorer_meaning(score)},
                      {"threshold", threshold}, {"accept", accept}, {"class_names", class_names},
                      {"_comment", "written by cac_eval; threshold = the open-set score that accepts the share "
                                   "`accept` of the validation images of the known classes; higher = more unknown"}};
  if (score == Scorer::Knn) j["knn_k"] = knn_k;
  if (!score_file.empty()) j["score_file"] = score_file, j["score_id"] = score_id;
  return j.dump(2) + "\n";
}

namespace {
// The score and what it needs: the anchors (CAC runs, and the cac score of CE runs), knn's k and the
// score file (which must be the one named for the score: deploy.json never points elsewhere).
void read_score_fields(const nlohmann::json& j, const std::string& where, Deployment& d) {
  using jsonf::field;
  const bool ce = d.method == "ce";
  // Records made before cac_eval --deploy-score hold the method's own score.
  d.score = j.contains("score") ? parse_scorer(field<std::string>(j, "score", where), where + ": score")
                                : ce ? Scorer::Msp : Scorer::Cac;
  const bool anchored = !ce || d.score == Scorer::Cac;
  CAC_CHECK(anchored ? d.anchors.size() == size_t(d.num_classes) * size_t(d.num_classes) : d.anchors.empty(),
            "{}: inconsistent deployment record ({} anchor values for {} classes and the {} score); run cac_eval "
            "again", where, d.anchors.size(), d.num_classes, scorer_name(d.score));
  if (d.score == Scorer::Knn) {
    d.knn_k = field<int>(j, "knn_k", where);
    CAC_CHECK(d.knn_k >= 1, "{}: knn_k {} must be at least 1; run cac_eval again", where, d.knn_k);
  }
  const std::string file = deploy_score_file(d.score);
  if (file.empty()) return;
  d.score_file = field<std::string>(j, "score_file", where);
  d.score_id = field<std::string>(j, "score_id", where);
  CAC_CHECK(d.score_file == file, "{}: score_file '{}' is not the {} score's file ({}); run cac_eval again", where,
            d.score_file, scorer_name(d.score), file);
}
}  // namespace

Deployment Deployment::from_json(const std::string& text, const std::string& where) {
  const nlohmann::json j = jsonf::parse(text, where + " (a deployment record; run cac_eval on the run again)");
  using jsonf::field;
  using jsonf::list;
  Deployment d;
  d.method = field<std::string>(j, "method", where);
  d.arch = field<std::string>(j, "arch", where);
  d.num_classes = field<int>(j, "num_classes", where);
  d.image_size = field<int>(j, "image_size", where);
  d.channels = field<int>(j, "channels", where);
  d.mean = list<float>(j, "mean", where);
  d.std = list<float>(j, "std", where);
  d.anchors = list<float>(j, "anchors", where);
  d.threshold = field<double>(j, "threshold", where);
  d.accept = j.contains("accept") ? field<double>(j, "accept", where) : 0.95;  // records made before --accept
  CAC_CHECK(d.accept > 0 && d.accept <= 1, "{}: accept {} is outside (0, 1]; run cac_eval again", where, d.accept);
  d.class_names = list<std::string>(j, "class_names", where);
  CAC_CHECK(d.method == "ce" || d.method == "cac" || d.method == "cac-learnt", "{}: unknown method '{}'; run cac_eval "
            "again", where, d.method);
  CAC_CHECK(d.arch == "classifier32" || d.arch == "resnet18", "{}: unknown arch '{}'; run cac_eval again", where, d.arch);
  CAC_CHECK(d.image_size >= 8 && d.image_size <= 1024 && (d.channels == 1 || d.channels == 3),
            "{}: image_size {} or channels {} out of range; run cac_eval again", where, d.image_size, d.channels);
  CAC_CHECK(d.num_classes >= 2 && int64_t(d.class_names.size()) == d.num_classes &&
                int(d.mean.size()) == d.channels && int(d.std.size()) == d.channels,
            "{}: inconsistent deployment record (classes or normalisation); run cac_eval again", where);
  for (float s : d.std) CAC_CHECK(s > 0, "{}: a normalisation std of {} (must be positive); run cac_eval again", where, s);
  read_score_fields(j, where, d);
  CAC_CHECK(d.threshold >= 0 || !never_negative(d.score), "{}: threshold {} is negative ({} scores are >= 0, so every "
            "image would be called unknown); run cac_eval again, or pass cac_predict --threshold", where, d.threshold,
            scorer_name(d.score));
  return d;
}

}  // namespace cac::app
