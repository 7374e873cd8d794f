#pragma once
// cac_eval's post-hoc open-set scores (issue 24): the run's own and those researchers compare it
// against, fitted on the run's training images and applied to any set on the run's device (the
// matrix products through the engine's linear op: OpenBLAS or cuBLAS). eval/scores.h holds the
// host references they are tested against. Every score is higher for "more likely unknown".
#include <string>
#include <vector>

#include "core/tensor.h"

namespace cac::app {

enum class Scorer { Cac, Msp, Mls, Energy, Knn, Mahalanobis };
const std::vector<Scorer>& all_scorers();
const char* scorer_name(Scorer s);
// What the score is, in one line (the JSON and the report state it).
const char* scorer_meaning(Scorer s);
// "all", or names separated by commas ("cac,mls"); an unknown name is an error listing the names.
std::vector<Scorer> parse_scorers(const std::string& list);

// One set's network outputs on the host: logits (rows of num_classes) and penultimate features
// (rows of dim).
struct SetOutputs {
  std::vector<float> logits, features;
  int dim = 0;
  size_t size(int num_classes) const { return logits.size() / size_t(num_classes); }
};

// What the scores need from the training images (the run's train split: labels are known-class
// indices), fitted once per run.
class PosthocScorers {
 public:
  struct Training {
    const SetOutputs* outputs;
    const std::vector<int64_t>* labels;
    Tensor anchors;  // [K, K] on the CPU: the class-mean anchors the cac score measures from
  };
  // knn_k above the number of training images is lowered to it (knn_k() says what was used).
  PosthocScorers(std::vector<Scorer> scorers, const Training& train, int num_classes, Device dev, int knn_k);
  const std::vector<Scorer>& scorers() const { return scorers_; }
  int knn_k() const { return knn_k_; }
  std::vector<double> score(Scorer s, const SetOutputs& set) const;

 private:
  std::vector<double> knn(const SetOutputs& set) const;
  std::vector<double> mahalanobis(const SetOutputs& set) const;
  void fit_mahalanobis(const SetOutputs& train, const std::vector<int64_t>& labels);

  std::vector<Scorer> scorers_;
  int K_, knn_k_ = 0;
  Device dev_;
  Tensor anchors_;
  Tensor bank_;              // knn: the training features, L2-normalised, [N, dim] on dev
  Tensor whiten_, wmeans_;   // mahalanobis: W [dim, dim] and W mu_c [K, dim] on dev
};

// Rows of x (n x dim) scaled to unit length (a zero row stays zero): k-NN's normalisation.
std::vector<float> l2_normalised_rows(const std::vector<float>& x, int dim);

}  // namespace cac::app
