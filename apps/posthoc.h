#pragma once
// cac_eval's post-hoc open-set scores (issue 24): the run's own and those researchers compare it
// against, fitted on the run's training images and applied to any set on the run's device (the
// matrix products through the engine's linear op: OpenBLAS or cuBLAS). eval/scores.h holds the
// host references they are tested against. Every score is higher for "more likely unknown".
#include <map>
#include <string>
#include <utility>
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
// One score's name; `what` names the flag or file in the error.
Scorer parse_scorer(const std::string& name, const std::string& what);
// Whether the score reads the penultimate features (knn, mahalanobis) rather than the logits.
bool reads_features(Scorer s);
// Whether the score is >= 0 for every input (all but mls and energy).
bool never_negative(Scorer s);

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

  // What score `s` keeps from the training images (knn: the normalised bank; mahalanobis: the
  // whitening and the whitened class means; the logit scores: nothing), as named CPU tensors: what
  // deploy.json's score file holds, so cac_predict scores new images without the training data.
  std::vector<std::pair<std::string, Tensor>> state(Scorer s) const;
  // Score `s` alone, from state(s) as saved (`where` names the file in errors: a missing tensor or
  // a shape that does not fit num_classes or the network's features).
  static PosthocScorers deployed(Scorer s, const std::map<std::string, Tensor>& state, const Tensor& anchors,
                                 int num_classes, int feature_dim, Device dev, int knn_k, const std::string& where);

 private:
  PosthocScorers(std::vector<Scorer> scorers, int num_classes, Device dev, Tensor anchors)
      : scorers_(std::move(scorers)), K_(num_classes), dev_(dev), anchors_(std::move(anchors)) {}
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
