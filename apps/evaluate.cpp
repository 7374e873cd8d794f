#include "apps/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <tuple>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "apps/run.h"
#include "apps/scoring.h"
#include "core/build_info.h"
#include "core/files.h"
#include "core/autograd.h"
#include "data/loader.h"
#include "data/openset.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "layers/ops.h"
#include "models/checkpoint.h"

namespace cac::app {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Logits of every image of `s`, in order, as a host [N, K] array; `what` names the pass in the
// progress line.
std::vector<float> all_logits(OpenSetClassifier& model, const data::Subset& s, const data::Augment& a,
                              Device dev, int workers, const std::string& what) {
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
  ProgressLine progress("cac_eval: ", what, s.size());  // on stderr: stdout keeps the results table
  int64_t done = 0;
  while (loader.next(&b)) {
    std::vector<float> z = model.logits(b.images).to_vector<float>();
    out.insert(out.end(), z.begin(), z.end());
    progress.update(done += b.images.dim(0));
  }
  return out;
}

}  // namespace

int run_eval(const EvalOptions& o) {
  CAC_CHECK(!o.runs.empty(), "no runs given: pass --run RUN_DIR (repeatable)");
  CAC_CHECK(o.accept > 0 && o.accept <= 1, "--accept {} is outside (0, 1] (the share of validation knowns to accept)",
            o.accept);
  std::vector<data::UnknownSource> extra;  // checked before any run is loaded
  for (const std::string& spec : o.unknowns) {
    extra.push_back(data::parse_unknown_source(spec));
    for (size_t i = 0; i + 1 < extra.size(); ++i)
      CAC_CHECK(extra[i].name != extra.back().name, "--unknown: two sets named '{}' (give each a NAME=)", extra.back().name);
  }
  // Read once per image size and channel count (runs of one benchmark share them).
  struct ExtraSet {
    std::shared_ptr<data::ImageSet> images;
    std::vector<std::string> label_names;
  };
  std::map<std::tuple<size_t, int, int>, ExtraSet> extra_sets;
  const Device dev = resolve_device(o.device);
  std::vector<eval::ReportEntry> entries;
  std::ofstream scores;
  std::string scores_tmp;
  // Scores are written in the shortest form that reads back to the same double, so a threshold
  // applied to the file gives what cac_eval computed.
  if (!o.scores_csv.empty()) {
    scores_tmp = temp_path_for(o.scores_csv);
    scores.open(scores_tmp);
    CAC_CHECK(scores.good(), "{}: cannot write", o.scores_csv);
    scores << "run,split,set,label,prediction,score\n";
  }
  for (const std::string& run : o.runs) {
    RunConfig c = RunConfig::from_json(read_text(run + "/config.json", " (is this a cac_train run folder?)"), run + "/config.json");
    if (!o.data_dir.empty()) c.data_dir = o.data_dir;
    CAC_CHECK(o.arch.empty() || o.arch == c.arch, "{}: trained with --arch {}, but --arch {} was asked for", run, c.arch, o.arch);
    const Method method = parse_method(c.method);
    data::OpenSetData d = load_run_data(c);
    for (size_t i = 0; i < extra.size(); ++i) {
      for (const auto& [name, subset] : d.test_unknown)
        CAC_CHECK(name != extra[i].name, "--unknown: {} already has an unknown set named '{}' (give yours another NAME=)",
                  run, name);
      ExtraSet& set = extra_sets[{i, c.image_size, c.channels}];
      if (!set.images)
        set.images = std::make_shared<data::ImageSet>(
            data::read_unknown_source(extra[i], c.image_size, c.channels, &set.label_names));
      d.unknown_label_names[extra[i].name] = set.label_names;
      data::Subset all;
      all.source = set.images.get();
      const int64_t* labels = set.images->labels.data<int64_t>();
      for (int64_t k = 0; k < set.images->size(); ++k) {
        all.indices.push_back(k);
        all.labels.push_back(labels[k]);
      }
      d.test_unknown.push_back({extra[i].name, std::move(all)});
    }
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
        std::vector<float> z = all_logits(*model, d.train, af, dev, o.workers,
                                          run + ": class means" + (flip ? " (flipped copies)" : ""));
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
      std::vector<int> fallback;
      for (int y = 0; y < K; ++y) {
        if (count[size_t(y)] == 0) {
          fallback.push_back(y);
          anchors[size_t(y) * K + y] = float(c.alpha);
          continue;
        }
        for (int k = 0; k < K; ++k) anchors[size_t(y) * K + k] = float(sum[size_t(y) * K + k] / double(count[size_t(y)]));
      }
      if (!fallback.empty())
        std::fprintf(stderr, "cac_eval: warning: %s: classes %s have no correctly classified training image; "
                     "their anchors stay alpha * e_i (train longer?)\n", run.c_str(), fmt::format("{}", fmt::join(fallback, ", ")).c_str());
      model->set_anchors(Tensor::from_vector(anchors, {K, K}));
    }

    // Scores (apps/scoring.h): CAC min_j gamma_j, CE 1 - max softmax (and minus the max logit).
    const Tensor anchors_cpu = model->anchors.to(Device::CPU);
    std::vector<double> ks_logit;
    auto score_set = [&](const std::string& what, const data::Subset& s, std::vector<double>* score,
                         std::vector<int64_t>* pred, std::vector<double>* logit_score, std::vector<float>* logits = nullptr) {
      std::vector<float> z = all_logits(*model, s, a, dev, o.workers, run + ": " + what);
      Scored r = score_logits(method, z, K, anchors_cpu);
      if (logits) *logits = std::move(z);
      *score = std::move(r.score);
      *pred = std::move(r.pred);
      *logit_score = std::move(r.logit_score);
    };

    // RUN/deploy.json: anchors, normalisation and the threshold that accepts o.accept of the validation knowns, so
    // cac_predict can score new images without the training data.
    double threshold = 0;
    std::vector<std::string> class_names;
    {
      std::vector<double> vs, vl;
      std::vector<int64_t> vp;
      score_set("validation", d.val, &vs, &vp, &vl);
      Deployment dep;
      dep.method = c.method;
      dep.arch = c.arch.empty() ? "classifier32" : c.arch;
      dep.num_classes = K;
      dep.image_size = c.image_size;
      dep.channels = c.channels;
      dep.mean = d.norm.mean;
      dep.std = d.norm.std;
      if (method != Method::CE) dep.anchors = anchors_cpu.to_vector<float>();
      dep.threshold = threshold = eval::accept_threshold(vs, o.accept);  // 0.95: the FPR@95%TPR convention
      dep.accept = o.accept;
      for (int k = 0; k < K; ++k)
        dep.class_names.push_back(d.class_names.empty() ? std::to_string(d.classes.known[size_t(k)])
                                                        : d.class_names[size_t(d.classes.known[size_t(k)])]);
      class_names = dep.class_names;
      write_file_atomic(run + "/deploy.json", dep.to_json());
    }
    std::vector<double> ks;
    std::vector<int64_t> kp;
    std::vector<float> known_logits;  // for the report's picture of the logit space
    score_set("known test", d.test_known, &ks, &kp, &ks_logit, &known_logits);
    std::vector<bool> correct;
    int64_t nc = 0;
    for (size_t i = 0; i < ks.size(); ++i) {
      correct.push_back(kp[i] == d.test_known.labels[i]);
      nc += correct.back();
    }
    if (scores.is_open())
      for (size_t i = 0; i < ks.size(); ++i)
        scores << fmt::format("{},known,known,{},{},{}\n", run, d.test_known.labels[i], kp[i], ks[i]);
    const std::string metrics_csv = fs::exists(run + "/metrics.csv") ? read_text(run + "/metrics.csv") : "";
    // Each unknown set is its own open-set problem (the FP experiment has two).
    for (auto& [set_name, subset] : d.test_unknown) {
      std::vector<double> us, us_logit;
      std::vector<int64_t> up;
      std::vector<float> unknown_logits;
      score_set("unknown test (" + set_name + ")", subset, &us, &up, &us_logit,
                o.report_html.empty() ? nullptr : &unknown_logits);
      eval::ReportEntry e;
      e.run = run;
      e.unknown_set = set_name;
      e.method = c.method;
      e.dataset = c.dataset;
      e.metrics_csv = metrics_csv;
      auto put = [&](const std::string& n, double v) { e.metrics.push_back({n, v}); };
      put("accuracy", double(nc) / double(ks.size()));
      put("auroc", eval::auroc(ks, us));
      if (method == Method::CE) put("auroc_max_logit", eval::auroc(ks_logit, us_logit));
      put("aupr_in", eval::aupr_in(ks, us));
      put("aupr_out", eval::aupr_out(ks, us));
      put("fpr_at_95_tpr", eval::fpr_at_95_tpr(ks, us));
      const auto curve = eval::oscr_curve(ks, correct, us);
      put("oscr", eval::oscr_area(curve));
      for (double t : {1e-1, 1e-2, 1e-3, 1e-4}) {
        auto v = eval::ccr_at_fpr(curve, t, us.size());
        put(fmt::format("ccr_at_fpr_{:g}", t), v ? *v : NAN);  // NaN = the set cannot resolve it
      }
      if (scores.is_open())
        for (size_t i = 0; i < us.size(); ++i)
          scores << fmt::format("{},unknown,{},{},{},{}\n", run, set_name, subset.labels[i], up[i], us[i]);
      // What cac_predict would say of each test image, as a table: at the deploy threshold.
      e.class_names = class_names;
      e.threshold = threshold;
      e.accept = o.accept;
      e.confusion = eval::open_set_confusion(K, d.test_known.labels, kp, ks, up, us, threshold);
      e.unknown_classes = eval::unknown_class_breakdown(K, ks, subset.labels, up, us, threshold);
      if (auto it = d.unknown_label_names.find(set_name); it != d.unknown_label_names.end())
        e.unknown_label_names = it->second;
      if (!o.report_html.empty()) {
        e.num_classes = K;
        e.known_logits = known_logits;
        e.unknown_logits = std::move(unknown_logits);
        e.known_labels = d.test_known.labels;
        if (method != Method::CE) e.anchors = anchors_cpu.to_vector<float>();
      }
      e.known_scores = ks;
      e.known_correct = correct;
      e.unknown_scores = std::move(us);
      entries.push_back(std::move(e));
    }
  }

  // Table and JSON: per (run, unknown set), then mean and std per method and unknown set.
  std::vector<std::string> names;  // in first-seen order; CE runs add auroc_max_logit
  for (auto& e : entries)
    for (auto& [k, v] : e.metrics)
      if (std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
  auto value = [](const eval::ReportEntry& e, const std::string& n) {
    for (auto& [k, v] : e.metrics)
      if (k == n) return v;
    return double(NAN);
  };
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };  // null = n/a
  const size_t w = 8;
  std::printf("\n%-40s", "run");
  for (auto& n : names) std::printf(" %*s", int(std::max(w, n.size())), n.c_str());
  std::printf("\n");
  json out = json::object();
  out["engine"] = engine_version();
  out["runs"] = json::array();
  for (auto& e : entries) {
    const std::string name = eval::entry_name(e);
    std::printf("%-40s", name.size() > 40 ? ("..." + name.substr(name.size() - 37)).c_str() : name.c_str());
    json jr = {{"run", e.run}, {"unknown_set", e.unknown_set}, {"method", e.method}};
    for (auto& n : names) {
      const double v = value(e, n);
      std::printf(" %*s", int(std::max(w, n.size())), std::isfinite(v) ? fmt::format("{:.4f}", v).c_str() : "n/a");
      jr[n] = num(v);
    }
    std::vector<std::string> labels = e.class_names;
    labels.push_back("unknown");
    jr["threshold"] = num(e.threshold);
    jr["accept"] = e.accept;
    jr["confusion"] = {{"labels", labels}, {"rows", e.confusion}};
    jr["unknown_classes"] = json::array();
    for (const auto& b : e.unknown_classes)
      jr["unknown_classes"].push_back({{"label", b.label}, {"name", eval::unknown_label_name(e, b.label)},
                                       {"images", b.images}, {"auroc", num(b.auroc)}, {"accepted", b.accepted},
                                       {"accepted_as", b.accepted_as}});
    std::printf("\n");
    out["runs"].push_back(jr);
  }
  const auto groups = eval::summarise(entries, names);
  out["groups"] = json::array();
  for (auto& g : groups) {
    json mean = json::object(), stdev = json::object();
    for (size_t i = 0; i < names.size(); ++i) mean[names[i]] = num(g.mean[i]), stdev[names[i]] = num(g.stdev[i]);
    out["groups"].push_back({{"dataset", g.dataset}, {"method", g.method}, {"unknown_set", g.unknown_set}, {"runs", g.runs},
                             {"mean", mean}, {"std", stdev}});
    if (groups.size() == 1) out["mean"] = mean, out["std"] = stdev;
    if (g.runs < 2) continue;
    std::printf("%-40s", fmt::format("mean+-std {} {}{} ({} runs)", g.dataset, g.method,
                                     g.unknown_set == "unknown" ? "" : " " + g.unknown_set, g.runs).c_str());
    for (size_t i = 0; i < names.size(); ++i)
      std::printf(" %*s", int(std::max(w, names[i].size())),
                  std::isfinite(g.mean[i]) ? fmt::format("{:.4f}+-{:.3f}", g.mean[i], g.stdev[i]).c_str() : "n/a");
    std::printf("\n");
  }
  // Where the open-set errors come from: the hardest unknown class of each set that has several.
  bool heading = false;
  for (const auto& e : entries) {
    const eval::UnknownClassBreakdown* worst = nullptr;
    for (const auto& b : e.unknown_classes)
      if (std::isfinite(b.auroc) && (!worst || b.auroc < worst->auroc)) worst = &b;
    if (e.unknown_classes.size() < 2 || !worst) continue;
    if (!heading) std::printf("\nhardest unknown class (AUROC against the knowns; accepted at the deploy threshold):\n");
    heading = true;
    const auto most = std::max_element(worst->accepted_as.begin(), worst->accepted_as.end());
    const size_t k = size_t(most - worst->accepted_as.begin());
    std::printf("  %s: %s  AUROC %.4f, %.1f%% accepted%s\n", eval::entry_name(e).c_str(),
                eval::unknown_label_name(e, worst->label).c_str(), worst->auroc,
                100.0 * double(worst->accepted) / double(std::max<int64_t>(worst->images, 1)),
                worst->accepted > 0 ? fmt::format(", most as {}", eval::known_class_name(e, k)).c_str() : "");
  }
  if (!o.json_out.empty()) write_file_atomic(o.json_out, out.dump(2) + "\n");
  if (scores.is_open()) {
    scores.close();
    CAC_CHECK(!scores.fail(), "{}: write failed", o.scores_csv);
    commit_file(scores_tmp, o.scores_csv);
  }
  if (!o.report_html.empty()) {
    write_file_atomic(o.report_html, eval::html_report(o.report_title.empty() ? "CAC open-set evaluation" : o.report_title,
                                                       entries, names, o.command_line, engine_version()));
    std::printf("report: %s\n", o.report_html.c_str());
  }
  return 0;
}

}  // namespace cac::app
