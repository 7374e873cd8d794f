#include "apps/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/run.h"
#include "core/autograd.h"
#include "data/loader.h"
#include "data/openset.h"
#include "eval/metrics.h"
#include "layers/ops.h"
#include "models/checkpoint.h"

namespace cac::app {

using json = nlohmann::json;

namespace {
std::string read_text(const std::string& path) {
  std::ifstream f(path);
  CAC_CHECK(f.good(), "{}: not found (is this a cac_train run folder?)", path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Logits of every image of `s`, in order, as a host [N, K] array.
std::vector<float> all_logits(OpenSetClassifier& model, const data::Subset& s, const data::Augment& a,
                              Device dev, int workers) {
  data::Loader::Options lo;
  lo.batch = 256;
  lo.shuffle = false;
  lo.workers = workers;
  lo.device = dev;
  data::Loader loader(s, a, lo);
  loader.start_epoch(0);
  std::vector<float> out;
  data::Batch b;
  NoGradGuard no_grad;
  while (loader.next(&b)) {
    std::vector<float> z = model.logits(b.images).to_vector<float>();
    out.insert(out.end(), z.begin(), z.end());
  }
  return out;
}

struct RunResult {
  std::string run;
  std::map<std::string, double> metrics;
};
}  // namespace

int run_eval(const EvalOptions& o) {
  CAC_CHECK(!o.runs.empty(), "no runs given: pass --run RUN_DIR (repeatable)");
  const Device dev = resolve_device(o.device);
  std::vector<RunResult> results;
  std::ofstream scores;
  if (!o.scores_csv.empty()) {
    scores.open(o.scores_csv + ".tmp");
    CAC_CHECK(scores.good(), "{}: cannot write", o.scores_csv);
    scores << "run,split,label,prediction,score\n";
  }
  for (const std::string& run : o.runs) {
    RunConfig c = RunConfig::from_json(read_text(run + "/config.json"), run + "/config.json");
    if (!o.data_dir.empty()) c.data_dir = o.data_dir;
    const Method method = parse_method(c.method);
    data::OpenSetData d = load_run_data(c);
    const int K = d.num_classes();
    auto model = build_model(c, K);
    model->to(dev);
    const std::string ckpt = run + "/best.safetensors";
    Safetensors st = load_safetensors(ckpt);
    restore_tensors(st, model->state_dict(), ckpt);
    model->eval();
    data::Augment a;
    a.size = c.image_size;
    a.mean = d.norm.mean;
    a.std = d.norm.std;

    if (method != Method::CE) {
      // Anchors := mean logit of the correctly classified (argmax z) training images per class,
      // with horizontally flipped copies for CIFAR and TinyImageNet; alpha*e_i where a class has none.
      std::vector<double> sum(size_t(K) * K, 0.0);
      std::vector<int64_t> count(size_t(K), 0);
      std::vector<bool> flips = {false};
      if (c.flip_for_class_means) flips.push_back(true);
      for (bool flip : flips) {
        data::Augment af = a;
        af.flip = flip;
        std::vector<float> z = all_logits(*model, d.train, af, dev, o.workers);
        for (int64_t i = 0; i < d.train.size(); ++i) {
          const float* zi = z.data() + size_t(i) * K;
          const int64_t pred = std::max_element(zi, zi + K) - zi;
          const int64_t y = d.train.labels[size_t(i)];
          if (pred != y) continue;
          for (int k = 0; k < K; ++k) sum[size_t(y) * K + k] += zi[k];
          ++count[size_t(y)];
        }
      }
      std::vector<float> anchors(size_t(K) * K, 0.f);
      for (int y = 0; y < K; ++y) {
        if (count[size_t(y)] == 0) {
          std::fprintf(stderr, "cac_eval: warning: %s: no training image of class %d is classified correctly; "
                       "its anchor stays alpha*e_%d\n", run.c_str(), y, y);
          anchors[size_t(y) * K + y] = float(c.alpha);
          continue;
        }
        for (int k = 0; k < K; ++k) anchors[size_t(y) * K + k] = float(sum[size_t(y) * K + k] / double(count[size_t(y)]));
      }
      model->set_anchors(Tensor::from_vector(anchors, {K, K}));
    }

    // Scores: CAC min_j gamma_j (prediction argmin gamma); CE 1 - max softmax (prediction argmax z)
    // and, as a second CE score, minus the max logit.
    std::vector<double> ks_logit, us_logit;
    auto score_set = [&](const data::Subset& s, std::vector<double>* score, std::vector<int64_t>* pred,
                         std::vector<double>* logit_score) {
      std::vector<float> z = all_logits(*model, s, a, dev, o.workers);
      Tensor zt = Tensor::from_vector(z, {s.size(), K});
      NoGradGuard no_grad;
      if (method == Method::CE) {
        for (int64_t i = 0; i < s.size(); ++i) {
          const float* zi = z.data() + size_t(i) * K;
          const float m = *std::max_element(zi, zi + K);
          double den = 0;
          for (int k = 0; k < K; ++k) den += std::exp(double(zi[k] - m));
          score->push_back(1.0 - 1.0 / den);
          logit_score->push_back(-double(m));
          pred->push_back(std::max_element(zi, zi + K) - zi);
        }
        return;
      }
      Tensor gamma = ops::open_set_score(ops::pairwise_distance(zt, model->anchors.to(Device::CPU)));
      std::vector<float> g = gamma.to_vector<float>();
      for (int64_t i = 0; i < s.size(); ++i) {
        const float* gi = g.data() + size_t(i) * K;
        score->push_back(*std::min_element(gi, gi + K));
        pred->push_back(std::min_element(gi, gi + K) - gi);
      }
    };
    std::vector<double> ks, us;
    std::vector<int64_t> kp, up;
    score_set(d.test_known, &ks, &kp, &ks_logit);
    for (auto& [name, subset] : d.test_unknown) score_set(subset, &us, &up, &us_logit);
    std::vector<bool> correct;
    int64_t nc = 0;
    for (size_t i = 0; i < ks.size(); ++i) {
      correct.push_back(kp[i] == d.test_known.labels[i]);
      nc += correct.back();
    }
    RunResult r;
    r.run = run;
    r.metrics["accuracy"] = double(nc) / double(ks.size());
    r.metrics["auroc"] = eval::auroc(ks, us);
    if (method == Method::CE) r.metrics["auroc_max_logit"] = eval::auroc(ks_logit, us_logit);
    r.metrics["aupr_in"] = eval::aupr_in(ks, us);
    r.metrics["aupr_out"] = eval::aupr_out(ks, us);
    r.metrics["fpr_at_95_tpr"] = eval::fpr_at_95_tpr(ks, us);
    const auto curve = eval::oscr_curve(ks, correct, us);
    r.metrics["oscr"] = eval::oscr_area(curve);
    for (double t : {1e-1, 1e-2, 1e-3, 1e-4}) {
      auto v = eval::ccr_at_fpr(curve, t, us.size());
      r.metrics[fmt::format("ccr_at_fpr_{:g}", t)] = v ? *v : NAN;  // NaN = the set cannot resolve it
    }
    results.push_back(r);
    if (scores.is_open()) {
      for (size_t i = 0; i < ks.size(); ++i)
        scores << run << ",known," << d.test_known.labels[i] << "," << kp[i] << "," << ks[i] << "\n";
      size_t at = 0;
      for (auto& [name, subset] : d.test_unknown)
        for (int64_t i = 0; i < subset.size(); ++i, ++at)
          scores << run << ",unknown," << subset.labels[size_t(i)] << "," << up[at] << "," << us[at] << "\n";
    }
  }

  // Table and JSON: per run, then mean and standard deviation over runs.
  json out = json::object();
  out["runs"] = json::array();
  std::vector<std::string> names;  // the union over runs (CE runs add auroc_max_logit)
  for (auto& r : results)
    for (auto& [k, v] : r.metrics)
      if (std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
  std::sort(names.begin(), names.end());
  for (auto& r : results)
    for (auto& n : names) r.metrics.emplace(n, NAN);  // absent for this run's method
  std::printf("\n%-34s", "run");
  for (auto& n : names) std::printf(" %12s", n.c_str());
  std::printf("\n");
  for (auto& r : results) {
    json jr = {{"run", r.run}};
    std::printf("%-34s", r.run.substr(std::max<size_t>(r.run.size(), 34) - 34).c_str());
    for (auto& n : names) {
      std::printf(" %12.4f", r.metrics[n]);
      jr[n] = std::isnan(r.metrics[n]) ? json(nullptr) : json(r.metrics[n]);
    }
    std::printf("\n");
    out["runs"].push_back(jr);
  }
  json mean = json::object(), stdev = json::object();
  std::printf("%-34s", "mean +- std");
  for (auto& n : names) {
    double s = 0, s2 = 0;
    for (auto& r : results) s += r.metrics[n], s2 += r.metrics[n] * r.metrics[n];
    const double m = s / double(results.size());
    const double sd = std::sqrt(std::max(0.0, s2 / double(results.size()) - m * m));
    mean[n] = std::isnan(m) ? json(nullptr) : json(m);
    stdev[n] = std::isnan(sd) ? json(nullptr) : json(sd);
    std::printf(" %6.4f+-%4.3f", m, sd);
  }
  std::printf("\n");
  out["mean"] = mean;
  out["std"] = stdev;
  if (!o.json_out.empty()) write_file_atomic(o.json_out, out.dump(2) + "\n");
  if (scores.is_open()) {
    scores.close();
    std::rename((o.scores_csv + ".tmp").c_str(), o.scores_csv.c_str());
  }
  return 0;
}

}  // namespace cac::app
