#include "apps/posthoc.h"

#include <algorithm>
#include <cmath>
#include <fmt/ranges.h>

#include "apps/scoring.h"
#include "core/autograd.h"
#include "eval/scores.h"
#include "layers/ops.h"

namespace cac::app {

namespace {
struct ScorerInfo {
  Scorer scorer;
  const char* name;
  const char* meaning;
};
constexpr ScorerInfo kScorers[] = {
    {Scorer::Cac, "cac", "min over classes of d_j (1 - softmin(d)_j), d the distances of the logits to the class-mean "
                         "anchors (Miller et al. 2021)"},
    {Scorer::Msp, "msp", "1 - the maximum softmax probability of the logits (Hendrycks & Gimpel 2017)"},
    {Scorer::Mls, "mls", "minus the maximum logit (Vaze et al. 2022)"},
    {Scorer::Energy, "energy", "-logsumexp of the logits, T = 1 (Liu et al. 2020)"},
    {Scorer::Knn, "knn", "distance of the L2-normalised penultimate feature to the k-th nearest normalised training "
                         "feature (Sun et al. 2022)"},
    {Scorer::Mahalanobis, "mahalanobis", "smallest squared Mahalanobis distance of the penultimate feature to a class "
                                         "mean, one covariance shared by the classes (Lee et al. 2018)"},
};
const ScorerInfo& info(Scorer s) {
  for (const ScorerInfo& i : kScorers)
    if (i.scorer == s) return i;
  return kScorers[0];
}
// The k-th largest of n values (k >= 1).
float kth_largest(std::vector<float>& v, int k) {
  std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
  return v[size_t(k - 1)];
}
}  // namespace

const std::vector<Scorer>& all_scorers() {
  static const std::vector<Scorer> all = [] {
    std::vector<Scorer> v;
    for (const ScorerInfo& i : kScorers) v.push_back(i.scorer);
    return v;
  }();
  return all;
}
const char* scorer_name(Scorer s) { return info(s).name; }
const char* scorer_meaning(Scorer s) { return info(s).meaning; }

namespace {
Scorer parse_scorer_or(const std::string& name, const std::string& what, const char* or_else) {
  std::vector<std::string> names;
  for (const ScorerInfo& i : kScorers) {
    if (name == i.name) return i.scorer;
    names.push_back(i.name);
  }
  fail("{}: '{}' is not a score (the scores: {}{})", what, name, fmt::join(names, ", "), or_else);
}
}  // namespace

Scorer parse_scorer(const std::string& name, const std::string& what) { return parse_scorer_or(name, what, ""); }

std::vector<Scorer> parse_scorers(const std::string& list) {
  if (list == "all") return all_scorers();
  std::vector<Scorer> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string name = list.substr(start, comma - start);
    const Scorer s = parse_scorer_or(name, "--scores", ", or all");
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
    start = comma + 1;
  }
  return out;
}

bool reads_features(Scorer s) { return s == Scorer::Knn || s == Scorer::Mahalanobis; }
bool never_negative(Scorer s) { return s != Scorer::Mls && s != Scorer::Energy; }

std::vector<float> l2_normalised_rows(const std::vector<float>& x, int dim) {
  std::vector<float> out(x);
  for (size_t i = 0; i < out.size(); i += size_t(dim)) {
    double s = 0;
    for (int j = 0; j < dim; ++j) s += double(out[i + size_t(j)]) * out[i + size_t(j)];
    const double inv = s > 0 ? 1 / std::sqrt(s) : 0;
    for (int j = 0; j < dim; ++j) out[i + size_t(j)] = float(out[i + size_t(j)] * inv);
  }
  return out;
}

PosthocScorers::PosthocScorers(std::vector<Scorer> scorers, const Training& train, int K, Device dev, int knn_k)
    : scorers_(std::move(scorers)), K_(K), dev_(dev), anchors_(train.anchors) {
  const SetOutputs& t = *train.outputs;
  const int64_t n = int64_t(t.size(K));
  auto wants = [&](Scorer s) { return std::find(scorers_.begin(), scorers_.end(), s) != scorers_.end(); };
  if (wants(Scorer::Knn)) {
    CAC_CHECK(n > 0 && knn_k >= 1, "knn: needs training images and k >= 1 (k = {})", knn_k);
    knn_k_ = int(std::min<int64_t>(knn_k, n));
    bank_ = Tensor::from_vector(l2_normalised_rows(t.features, t.dim), {n, t.dim}).to(dev);
  }
  if (wants(Scorer::Mahalanobis)) fit_mahalanobis(t, *train.labels);
}

void PosthocScorers::fit_mahalanobis(const SetOutputs& t, const std::vector<int64_t>& labels) {
  const int dim = t.dim;
  const size_t n = labels.size();
  std::vector<double> mean(size_t(K_) * dim, 0);
  std::vector<int64_t> count(size_t(K_), 0);
  for (size_t i = 0; i < n; ++i) {
    ++count[size_t(labels[i])];
    for (int j = 0; j < dim; ++j) mean[size_t(labels[i]) * dim + size_t(j)] += t.features[i * dim + size_t(j)];
  }
  for (int c = 0; c < K_; ++c) {
    CAC_CHECK(count[size_t(c)] > 0, "mahalanobis: known class {} has no training image", c);
    for (int j = 0; j < dim; ++j) mean[size_t(c) * dim + size_t(j)] /= double(count[size_t(c)]);
  }
  // The covariance as one matrix product: (features - class mean)^T (features - class mean) / n.
  std::vector<float> centred_t(n * dim);  // dim x n
  for (size_t i = 0; i < n; ++i)
    for (int j = 0; j < dim; ++j)
      centred_t[size_t(j) * n + i] = float(t.features[i * dim + size_t(j)] - mean[size_t(labels[i]) * dim + size_t(j)]);
  NoGradGuard no_grad;
  const Tensor ct = Tensor::from_vector(centred_t, {dim, int64_t(n)}).to(dev_);
  const std::vector<float> sums = ops::linear(ct, ct, Tensor()).to_vector<float>();
  std::vector<double> cov(sums.begin(), sums.end());
  for (double& v : cov) v /= double(n);
  const eval::MahalanobisScorer m = eval::MahalanobisScorer::from_moments(mean, std::move(cov), K_, dim);
  const std::vector<float> w(m.whitening().begin(), m.whitening().end());
  const std::vector<float> wm(m.whitened_means().begin(), m.whitened_means().end());
  whiten_ = Tensor::from_vector(w, {dim, dim}).to(dev_);
  wmeans_ = Tensor::from_vector(wm, {K_, dim}).to(dev_);
}

std::vector<std::pair<std::string, Tensor>> PosthocScorers::state(Scorer s) const {
  switch (s) {
    case Scorer::Knn: return {{"bank", bank_.to(Device::CPU)}};
    case Scorer::Mahalanobis: return {{"whitening", whiten_.to(Device::CPU)}, {"whitened_means", wmeans_.to(Device::CPU)}};
    default: return {};
  }
}

PosthocScorers PosthocScorers::deployed(Scorer s, const std::map<std::string, Tensor>& state, const Tensor& anchors,
                                        int K, int dim, Device dev, int knn_k, const std::string& where) {
  PosthocScorers p({s}, K, dev, anchors);
  auto take = [&](const char* name, int64_t rows, int64_t cols) {
    const auto it = state.find(name);
    CAC_CHECK(it != state.end(), "{}: no tensor '{}' (the {} score needs it); run cac_eval again", where, name,
              scorer_name(s));
    const Tensor& t = it->second;
    CAC_CHECK(t.dtype() == DType::F32 && t.ndim() == 2 && (rows < 0 || t.dim(0) == rows) && t.dim(1) == cols &&
                  t.dim(0) > 0,
              "{}: tensor '{}' has shape [{}] (expected {} x {} floats for this network); run cac_eval again", where,
              name, fmt::join(t.shape(), ", "), rows < 0 ? std::string("N") : std::to_string(rows), cols);
    return t.to(dev);
  };
  if (s == Scorer::Knn) {
    p.bank_ = take("bank", -1, dim);
    p.knn_k_ = int(std::min<int64_t>(knn_k, p.bank_.dim(0)));
  } else if (s == Scorer::Mahalanobis) {
    p.whiten_ = take("whitening", dim, dim);
    p.wmeans_ = take("whitened_means", K, dim);
  }
  return p;
}

std::vector<double> PosthocScorers::score(Scorer s, const SetOutputs& set) const {
  switch (s) {
    case Scorer::Cac: return score_logits(Method::CAC, set.logits, K_, anchors_).score;
    case Scorer::Msp: return eval::msp_scores(set.logits, K_);
    case Scorer::Mls: return eval::mls_scores(set.logits, K_);
    case Scorer::Energy: return eval::energy_scores(set.logits, K_);
    case Scorer::Knn: return knn(set);
    case Scorer::Mahalanobis: return mahalanobis(set);
  }
  fail("unknown scorer");
}

// Cosine similarities to the whole bank in blocks of rows (one matrix product each); the k-th
// largest similarity s gives the k-th smallest distance sqrt(2 - 2 s) between unit vectors.
std::vector<double> PosthocScorers::knn(const SetOutputs& set) const {
  CAC_CHECK(bank_.defined(), "knn: not fitted");
  const int dim = set.dim;
  const int64_t n = int64_t(set.features.size()) / dim, bank = bank_.dim(0);
  const std::vector<float> q = l2_normalised_rows(set.features, dim);
  const int64_t block = std::max<int64_t>(1, (int64_t(1) << 26) / std::max<int64_t>(bank, 1));  // 256 MiB of sims
  std::vector<double> out;
  NoGradGuard no_grad;
  for (int64_t r0 = 0; r0 < n; r0 += block) {
    const int64_t rows = std::min(block, n - r0);
    const std::vector<float> part(q.begin() + r0 * dim, q.begin() + (r0 + rows) * dim);
    const std::vector<float> sims =
        ops::linear(Tensor::from_vector(part, {rows, dim}).to(dev_), bank_, Tensor()).to_vector<float>();
    std::vector<float> row(static_cast<size_t>(bank));
    for (int64_t r = 0; r < rows; ++r) {
      std::copy(sims.begin() + r * bank, sims.begin() + (r + 1) * bank, row.begin());
      out.push_back(std::sqrt(std::max(0.0, 2.0 - 2.0 * double(kth_largest(row, knn_k_)))));
    }
  }
  return out;
}

// ||W f - W mu_c||^2, minimised over the classes: W f for every row in one matrix product.
std::vector<double> PosthocScorers::mahalanobis(const SetOutputs& set) const {
  CAC_CHECK(whiten_.defined(), "mahalanobis: not fitted");
  const int64_t n = int64_t(set.features.size()) / set.dim;
  NoGradGuard no_grad;
  const Tensor g = ops::linear(Tensor::from_vector(set.features, {n, set.dim}).to(dev_), whiten_, Tensor());
  const std::vector<float> d = ops::pairwise_distance(g, wmeans_).to_vector<float>();
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) {
    const float m = *std::min_element(d.begin() + i * K_, d.begin() + (i + 1) * K_);
    out.push_back(double(m) * m);
  }
  return out;
}

}  // namespace cac::app
