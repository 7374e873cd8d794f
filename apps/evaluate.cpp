#include "apps/evaluate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "apps/run.h"
#include "apps/posthoc.h"
#include "apps/run_folder.h"
#include "apps/scoring.h"
#include "core/build_info.h"
#include "core/cuda_runtime.h"
#include "core/files.h"
#include "core/autograd.h"
#include "core/stop.h"
#include "data/loader.h"
#include "data/openset.h"
#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/scores.h"
#include "layers/ops.h"
#include "models/anchors.h"
#include "models/checkpoint.h"
#include "models/forward_replay.h"

namespace cac::app {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The logits of every image of `s`, in order, as a host [N, K] array, and with `features` its
// penultimate features [N, dim]; `what` names the pass in the progress line. The forward passes run
// through `forward` (replayed from a CUDA graph on a GPU unless cac_eval --graph off).
SetOutputs all_outputs(ForwardReplay& forward, const data::Subset& s, const data::Augment& a, Device dev,
                       int workers, const std::string& what, bool features) {
  data::Loader::Options lo;
  lo.batch = 256;
  lo.shuffle = false;
  lo.workers = workers;
  lo.device = dev;
  data::Loader loader(s, a, lo);
  loader.start_epoch(0);
  SetOutputs out;
  data::Batch b;
  NoGradGuard no_grad;
  ProgressLine progress("cac_eval: ", what, s.size());  // on stderr: stdout keeps the results table
  int64_t done = 0;
  while (loader.next(&b)) {
    throw_if_stopped();  // cac_eval writes nothing until every pass is done: a stop loses nothing
    const OpenSetClassifier::Outputs o = forward.outputs(b.images);
    const std::vector<float> z = o.logits.to_vector<float>();
    out.logits.insert(out.logits.end(), z.begin(), z.end());
    if (features) {
      const std::vector<float> f = o.features.to_vector<float>();
      out.features.insert(out.features.end(), f.begin(), f.end());
      out.dim = int(o.features.dim(1));
    }
    progress.update(done += b.images.dim(0));
  }
  return out;
}

// The --unknown sources, read once per image size and channel count (runs of one benchmark share them).
class ExtraUnknowns {
 public:
  explicit ExtraUnknowns(const std::vector<std::string>& specs) {
    for (const std::string& spec : specs) {  // checked before any run is loaded
      sources_.push_back(data::parse_unknown_source(spec));
      for (size_t i = 0; i + 1 < sources_.size(); ++i)
        CAC_CHECK(sources_[i].name != sources_.back().name, "--unknown: two sets named '{}' (give each a NAME=)",
                  sources_.back().name);
    }
  }
  // Appends every source to the run's unknown test sets.
  void add_to(data::OpenSetData& d, const RunConfig& c, const std::string& run) {
    for (size_t i = 0; i < sources_.size(); ++i) {
      for (const auto& [name, subset] : d.test_unknown)
        CAC_CHECK(name != sources_[i].name, "--unknown: {} already has an unknown set named '{}' (give yours another NAME=)",
                  run, name);
      Set& set = sets_[{i, c.image_size, c.channels}];
      if (!set.images)
        set.images = std::make_shared<data::ImageSet>(
            data::read_unknown_source(sources_[i], c.image_size, c.channels, &set.label_names));
      d.unknown_label_names[sources_[i].name] = set.label_names;
      data::Subset all;
      all.source = set.images.get();
      const int64_t* labels = set.images->labels.data<int64_t>();
      for (int64_t k = 0; k < set.images->size(); ++k) {
        all.indices.push_back(k);
        all.labels.push_back(labels[k]);
      }
      d.test_unknown.push_back({sources_[i].name, std::move(all)});
    }
  }

 private:
  struct Set {
    std::shared_ptr<data::ImageSet> images;
    std::vector<std::string> label_names;
  };
  std::vector<data::UnknownSource> sources_;
  std::map<std::tuple<size_t, int, int>, Set> sets_;
};

// scores.csv, written to a temporary beside it and renamed when complete. Scores are written in the
// shortest form that reads back to the same double, so a threshold applied to the file gives what
// cac_eval computed.
class ScoresCsv {
 public:
  explicit ScoresCsv(const std::string& path) {
    if (path.empty()) return;
    tmp_ = std::make_unique<TempFile>(path);
    f_.open(tmp_->path());
    CAC_CHECK(f_.good(), "{}: cannot write", path);
    f_ << "run,split,set,scorer,label,prediction,score\n";
  }
  void add(const std::string& run, const std::string& split, const std::string& set, const char* scorer,
           const std::vector<int64_t>& labels, const std::vector<int64_t>& pred, const std::vector<double>& score) {
    if (!f_.is_open()) return;
    for (size_t i = 0; i < score.size(); ++i)
      f_ << fmt::format("{},{},{},{},{},{},{}\n", csv_field(run), split, csv_field(set), scorer, labels[i], pred[i],
                        score[i]);
  }
  void commit() {
    if (!f_.is_open()) return;
    f_.close();
    CAC_CHECK(!f_.fail(), "{}: write failed (disk full?)", tmp_->target());
    tmp_->commit();
  }

 private:
  std::unique_ptr<TempFile> tmp_;  // removed unless committed: a failed or stopped evaluation leaves none
  std::ofstream f_;
};

// The run's network with its best checkpoint, in eval mode.
std::shared_ptr<OpenSetClassifier> load_trained(const std::string& run, const RunConfig& c, int K, Device dev) {
  auto model = build_model(c, K);
  model->to(dev);
  const std::string ckpt = run + "/best.safetensors";
  restore_tensors(load_safetensors(ckpt), model->state_dict(), ckpt);
  model->eval();
  return model;
}

// CAC's deploy anchors: the class means of the correctly classified training logits (`train`), with
// horizontally flipped copies where the protocol says (CIFAR, TinyImageNet); models/anchors.h. CE
// runs get them too, for the cac score of their logits.
Tensor class_mean_anchors_of(ForwardReplay& forward, const RunConfig& c, const data::Subset& train,
                             const SetOutputs& outputs, const data::Augment& a, Device dev, int workers,
                             const std::string& run) {
  std::vector<float> z = outputs.logits;
  std::vector<int64_t> labels = train.labels;
  if (c.flip_for_class_means) {
    data::Augment af = a;
    af.flip = true;
    const SetOutputs flipped = all_outputs(forward, train, af, dev, workers, run + ": class means (flipped copies)", false);
    z.insert(z.end(), flipped.logits.begin(), flipped.logits.end());
    labels.insert(labels.end(), train.labels.begin(), train.labels.end());
  }
  const ClassMeanAnchors means = class_mean_anchors(z, labels, forward.model().num_classes(), c.alpha);
  if (!means.fallback.empty())
    std::fprintf(stderr, "cac_eval: warning: %s: classes %s have no correctly classified training image; "
                 "their anchors stay alpha * e_i (train longer?)\n", run.c_str(), fmt::format("{}", fmt::join(means.fallback, ", ")).c_str());
  return means.anchors;
}

// One set's network outputs and, per score, the scores; the predictions and their confidences are
// the run's own (CAC: nearest by gamma; CE: the largest logit).
struct SetScores {
  SetOutputs outputs;
  std::vector<int64_t> pred;
  std::vector<double> confidence;
  std::map<Scorer, std::vector<double>> by;
};

// Whether any of `scorers` reads the penultimate features (else a pass keeps only the logits).
bool needs_features(const std::vector<Scorer>& scorers) { return std::any_of(scorers.begin(), scorers.end(), reads_features); }

// One run under evaluation: its settings, data, network, anchors and post-hoc scores, and the
// scoring passes.
struct RunUnderEval {
  std::string run;
  RunConfig c;
  std::string benchmark;  // what the entries report: the run's dataset, or cac_eval --benchmark
  Method method;
  data::OpenSetData d;
  std::shared_ptr<OpenSetClassifier> model;
  std::unique_ptr<ForwardReplay> forward;  // the model's forward passes (CUDA graphs)
  data::Augment eval_aug;
  Tensor anchors;  // [K, K] on the CPU: the class-mean anchors
  std::unique_ptr<PosthocScorers> posthoc;
  Device dev;
  int workers;

  Scorer deploy;  // the score deploy.json thresholds (cac_eval --deploy-score)

  int K() const { return d.num_classes(); }
  // The score the run is judged with: its own method's (the protocol's CE baseline is max softmax).
  Scorer own() const { return method == Method::CE ? Scorer::Msp : Scorer::Cac; }
  // With `all`, every asked-for score; else the run's own and the deployed.
  SetScores score_set(const std::string& what, const data::Subset& s, bool all) const {
    SetScores out;
    const std::vector<Scorer> wanted = all ? posthoc->scorers() : std::vector<Scorer>{deploy};
    out.outputs = all_outputs(*forward, s, eval_aug, dev, workers, run + ": " + what, needs_features(wanted));
    Scored r = score_logits(method, out.outputs.logits, K(), anchors);
    out.pred = std::move(r.pred);
    out.confidence = std::move(r.confidence);
    out.by[own()] = std::move(r.score);
    for (Scorer x : wanted)
      if (!out.by.count(x)) out.by[x] = posthoc->score(x, out.outputs);
    return out;
  }
};

// cac_eval --benchmark: the run's unknown test set replaced by that benchmark's of the same trial.
// The protocol has one such pair: CIFAR+50 is evaluated with the CIFAR+10 networks (the same four
// known CIFAR-10 classes), never trained on its own.
void use_unknowns_of(const std::string& benchmark, RunUnderEval& r) {
  CAC_CHECK(benchmark == "CIFAR+50" && r.c.dataset == "CIFAR+10",
            "{}: --benchmark {} with a {} run: the one benchmark evaluated with another's networks is CIFAR+50, "
            "with the CIFAR+10 runs of the same trials", r.run, benchmark, r.c.dataset);
  CAC_CHECK(r.c.split_json.empty(), "{}: --benchmark {} needs a run of a standard trial (this one used --split {})",
            r.run, benchmark, r.c.split_json);
  data::OpenSetData as = data::load_benchmark(benchmark, r.c.trial, r.c.data_dir, r.c.seed, "", r.c.image_size,
                                              r.c.split_set);
  CAC_CHECK(as.classes.known == r.d.classes.known, "{}: {} trial {} has other known classes than the run", r.run,
            benchmark, r.c.trial);
  r.d.test_unknown = std::move(as.test_unknown);
  r.d.unknown_label_names = std::move(as.unknown_label_names);
  for (auto& images : as.storage) r.d.storage.push_back(std::move(images));  // the unknowns' images live on
  r.benchmark = benchmark;
}

// The precision a run is evaluated in (cac_eval --precision; TF32 convolutions unless fp32), said
// where it is not the one the run trained in.
void use_precision(const std::string& asked, RunConfig& c, Device dev, const std::string& run) {
  if (asked != "auto") {
    const Precision p = parse_precision(asked);
    if (p != c.precision)
      std::fprintf(stderr, "cac_eval: %s: evaluating in %s (trained in %s)\n", run.c_str(), precision_name(p),
                   precision_name(c.precision));
    c.precision = p;
  }
  if (dev == Device::CUDA) cuda::set_allow_tf32(c.precision != Precision::FP32);
}

RunUnderEval load_run(const std::string& run, const EvalOptions& o, ExtraUnknowns& extra, Device dev) {
  RunUnderEval r;
  r.run = run;
  r.c = RunConfig::from_json(read_text(run + "/config.json", " (is this a cac_train run folder?)"), run + "/config.json");
  if (!o.data_dir.empty()) r.c.data_dir = o.data_dir;
  use_precision(o.precision, r.c, dev, run);
  const std::string arch = arch_name(r.c.arch_or_default());
  CAC_CHECK(o.arch.empty() || o.arch == arch, "{}: trained with --arch {}, but --arch {} was asked for", run, arch, o.arch);
  r.method = r.c.method;
  r.d = load_run_data(r.c);
  r.benchmark = r.c.dataset;
  if (!o.benchmark.empty() && o.benchmark != r.c.dataset) use_unknowns_of(o.benchmark, r);
  extra.add_to(r.d, r.c, run);
  // A split may name no unknown classes (the user's unknowns are images of their own): its own set
  // is then empty and --unknown gives the sets to score.
  auto& sets = r.d.test_unknown;
  sets.erase(std::remove_if(sets.begin(), sets.end(), [](const auto& s) { return s.second.indices.empty(); }), sets.end());
  CAC_CHECK(!sets.empty(), "{}: its split names no unknown classes, so there is nothing to tell the known classes "
            "from: pass --unknown NAME=FOLDER (images of none of the known classes) or --unknown DATASET:PATH", run);
  r.model = load_trained(run, r.c, r.K(), dev);
  r.forward = std::make_unique<ForwardReplay>(
      *r.model, o.graph, [run](const std::string& s) { std::fprintf(stderr, "cac_eval: %s: %s\n", run.c_str(), s.c_str()); });
  r.eval_aug.size = r.c.image_size;
  r.eval_aug.mean = r.d.norm.mean;
  r.eval_aug.std = r.d.norm.std;
  r.dev = dev;
  r.workers = o.workers;
  r.deploy = o.deploy_score != "auto" ? parse_scorer(o.deploy_score, "--deploy-score")
             : r.method == Method::CE ? Scorer::Mls : Scorer::Cac;  // Vaze et al.: CE networks deploy best by mls
  std::vector<Scorer> scorers = parse_scorers(o.scores);
  for (Scorer x : {r.deploy, r.own()})
    if (std::find(scorers.begin(), scorers.end(), x) == scorers.end()) scorers.insert(scorers.begin(), x);
  const bool features = needs_features(scorers);
  const SetOutputs train = all_outputs(*r.forward, r.d.train, r.eval_aug, dev, o.workers, run + ": training images",
                                       features);
  if (o.scores == "all" && r.deploy != Scorer::Mahalanobis && features && train.size(r.K()) <= size_t(train.dim)) {
    // Mahalanobis needs a covariance of full rank: more training images than feature dimensions.
    std::fprintf(stderr, "cac_eval: %s: no mahalanobis score: %zu training images for %d feature dimensions (ask "
                 "for it with --scores to use a ridged covariance)\n", run.c_str(), train.size(r.K()), train.dim);
    scorers.erase(std::remove(scorers.begin(), scorers.end(), Scorer::Mahalanobis), scorers.end());
  }
  r.anchors = class_mean_anchors_of(*r.forward, r.c, r.d.train, train, r.eval_aug, dev, o.workers, run).to(Device::CPU);
  if (r.method != Method::CE) r.model->set_anchors(r.anchors);
  r.posthoc = std::make_unique<PosthocScorers>(scorers, PosthocScorers::Training{&train, &r.d.train.labels, r.anchors},
                                               r.K(), dev, o.knn_k);
  if (r.posthoc->knn_k() > 0 && r.posthoc->knn_k() < o.knn_k)
    std::fprintf(stderr, "cac_eval: %s: k-NN with k = %d, the number of training images (--knn-k %d)\n",
                 run.c_str(), r.posthoc->knn_k(), o.knn_k);
  return r;
}

// A tag shared by deploy.json and its score file: 64 random bits.
std::string new_score_id() {
  std::random_device rd;
  return fmt::format("{:08x}{:08x}", rd(), rd());
}

// RUN/deploy.json and what its score keeps from the training images (knn, mahalanobis: the score
// file's tensors).
struct DeployRecord {
  Deployment dep;
  NamedTensorList state;
};

// The deployment: anchors, normalisation, the deployed score and the threshold that accepts o.accept
// of the validation knowns, so cac_predict can score new images without the training data. Written
// by run_eval once every run is evaluated, so a failure anywhere leaves every deploy.json as it was.
DeployRecord make_deployment(const RunUnderEval& r, double accept) {
  const SetScores v = r.score_set("validation", r.d.val, false);
  DeployRecord rec;
  Deployment& dep = rec.dep;
  dep.method = method_name(r.c.method);
  dep.arch = arch_name(r.c.arch_or_default());
  dep.num_classes = r.K();
  dep.image_size = r.c.image_size;
  dep.channels = r.c.channels;
  dep.mean = r.d.norm.mean;
  dep.std = r.d.norm.std;
  if (r.method != Method::CE || r.deploy == Scorer::Cac) dep.anchors = r.anchors.to_vector<float>();
  dep.score = r.deploy;
  dep.threshold = eval::accept_threshold(v.by.at(r.deploy), accept);  // 0.95: the FPR@95%TPR convention
  dep.accept = accept;
  if (r.deploy == Scorer::Knn) dep.knn_k = r.posthoc->knn_k();
  rec.state = r.posthoc->state(r.deploy);
  if (!rec.state.empty()) dep.score_file = deploy_score_file(r.deploy), dep.score_id = new_score_id();
  const data::OpenSetData& d = r.d;
  for (int k = 0; k < r.K(); ++k)
    dep.class_names.push_back(d.class_names.empty() ? std::to_string(d.classes.known[size_t(k)])
                                                    : d.class_names[size_t(d.classes.known[size_t(k)])]);
  return rec;
}

// deploy.json, after its score file (a crash in between leaves a file whose score_id the old
// deploy.json refuses, never a silently mismatched pair); score files of other scores are removed.
void write_deployment(const std::string& run, const DeployRecord& rec) {
  const Deployment& dep = rec.dep;
  CAC_CHECK(std::isfinite(dep.threshold), "{}: the deployment threshold is {}: not writing deploy.json", run,
            dep.threshold);
  if (!dep.score_file.empty()) save_safetensors(run + "/" + dep.score_file, rec.state, {{"score_id", dep.score_id}});
  write_file_atomic(run + "/deploy.json", dep.to_json());
  for (Scorer x : all_scorers()) {
    const std::string other = deploy_score_file(x);
    std::error_code ec;
    if (!other.empty() && other != dep.score_file) fs::remove(run + "/" + other, ec);
  }
}

// The known test set's scores and which predictions are right.
struct KnownScores {
  SetScores s;
  std::vector<bool> correct;
  int64_t right = 0;
};

// One unknown set's entry for one score: every metric, and for the run's own score the deployed
// score's threshold tables and the report's data.
eval::ReportEntry unknown_set_entry(const RunUnderEval& r, const KnownScores& known, const SetScores& u, Scorer scorer,
                                    const std::string& set_name, const data::Subset& subset, const Deployment& dep,
                                    const std::string& metrics_csv, bool for_report) {
  eval::ReportEntry e;
  e.run = r.run;
  e.unknown_set = set_name;
  e.method = method_name(r.c.method);
  e.dataset = r.benchmark;
  e.scorer = scorer_name(scorer);
  e.own = scorer == r.own();
  e.metrics_csv = metrics_csv;
  const std::vector<double>& ks = known.s.by.at(scorer);
  const std::vector<double>& us = u.by.at(scorer);
  auto put = [&](const std::string& n, double v) { e.metrics.push_back({n, v}); };
  put("accuracy", double(known.right) / double(ks.size()));
  put("ece", eval::expected_calibration_error(known.s.confidence, known.correct));
  put("auroc", eval::auroc(ks, us));
  put("aupr_in", eval::aupr_in(ks, us));
  put("aupr_out", eval::aupr_out(ks, us));
  put("fpr_at_95_tpr", eval::fpr_at_95_tpr(ks, us));
  const auto curve = eval::oscr_curve(ks, known.correct, us);
  put("oscr", eval::oscr_area(curve));
  for (double t : {1e-1, 1e-2, 1e-3, 1e-4}) {
    auto v = eval::ccr_at_fpr(curve, t, us.size());
    put(fmt::format("ccr_at_fpr_{:g}", t), v ? *v : NAN);  // NaN = the set cannot resolve it
  }
  e.known_scores = ks;
  e.known_correct = known.correct;
  e.unknown_scores = us;
  if (!e.own) return e;
  // What cac_predict would say of each test image, as a table: the deployed score at its threshold.
  const std::vector<double>& dks = known.s.by.at(dep.score);
  const std::vector<double>& dus = u.by.at(dep.score);
  e.deploy_score = scorer_name(dep.score);
  e.class_names = dep.class_names;
  e.threshold = dep.threshold;
  e.accept = dep.accept;
  e.confusion = eval::open_set_confusion(r.K(), r.d.test_known.labels, known.s.pred, dks, u.pred, dus, dep.threshold);
  e.unknown_classes = eval::unknown_class_breakdown(r.K(), dks, subset.labels, u.pred, dus, dep.threshold);
  if (auto it = r.d.unknown_label_names.find(set_name); it != r.d.unknown_label_names.end())
    e.unknown_label_names = it->second;
  if (for_report) {
    e.num_classes = r.K();
    e.known_logits = known.s.outputs.logits;
    e.unknown_logits = u.outputs.logits;
    e.known_labels = r.d.test_known.labels;
    if (r.method != Method::CE) e.anchors = r.anchors.to_vector<float>();
  }
  return e;
}

// Scores one run's test sets (each unknown set is its own open-set problem; the FP experiment has
// two) with every score, appends an entry per unknown set and score (the run's own first) and
// returns the run's deployment record (written by run_eval).
DeployRecord evaluate_run(const RunUnderEval& r, const EvalOptions& o, ScoresCsv& scores,
                          std::vector<eval::ReportEntry>& entries) {
  DeployRecord rec = make_deployment(r, o.accept);
  const Deployment& dep = rec.dep;
  const bool for_report = !o.report_html.empty();
  KnownScores known;
  known.s = r.score_set("known test", r.d.test_known, true);
  for (size_t i = 0; i < known.s.pred.size(); ++i) {
    known.correct.push_back(known.s.pred[i] == r.d.test_known.labels[i]);
    known.right += known.correct.back();
  }
  std::vector<Scorer> order = {r.own()};
  for (Scorer x : r.posthoc->scorers())
    if (x != r.own()) order.push_back(x);
  for (Scorer x : order)
    scores.add(r.run, "known", "known", scorer_name(x), r.d.test_known.labels, known.s.pred, known.s.by.at(x));
  const std::string metrics_csv = fs::exists(r.run + "/metrics.csv") ? read_text(r.run + "/metrics.csv") : "";
  for (const auto& [set_name, subset] : r.d.test_unknown) {
    const SetScores u = r.score_set("unknown test (" + set_name + ")", subset, true);
    for (Scorer x : order) {
      scores.add(r.run, "unknown", set_name, scorer_name(x), subset.labels, u.pred, u.by.at(x));
      entries.push_back(unknown_set_entry(r, known, u, x, set_name, subset, dep, metrics_csv, for_report));
    }
  }
  return rec;
}

// Every metric name, in first-seen order, and one entry's value.
std::vector<std::string> metric_names(const std::vector<eval::ReportEntry>& entries) {
  std::vector<std::string> names;
  for (auto& e : entries)
    for (auto& [k, v] : e.metrics)
      if (std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
  return names;
}
double metric_value(const eval::ReportEntry& e, const std::string& n) {
  for (auto& [k, v] : e.metrics)
    if (k == n) return v;
  return double(NAN);
}
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }  // null = n/a

constexpr size_t kColumn = 8;
void print_cell(const std::string& name, const std::string& text) {
  std::printf(" %*s", int(std::max(kColumn, name.size())), text.c_str());
}

// One entry as JSON: its metrics, and for the run's own score the deploy-threshold tables.
json entry_json(const eval::ReportEntry& e, const std::vector<std::string>& names) {
  json jr = {{"run", e.run}, {"unknown_set", e.unknown_set}, {"method", e.method}, {"scorer", e.scorer}};
  for (auto& n : names) jr[n] = number_or_null(metric_value(e, n));
  if (!e.own) return jr;
  std::vector<std::string> labels = e.class_names;
  labels.push_back("unknown");
  jr["deploy_score"] = e.deploy_score;
  jr["threshold"] = number_or_null(e.threshold);
  jr["accept"] = e.accept;
  jr["confusion"] = {{"labels", labels}, {"rows", e.confusion}};
  jr["unknown_classes"] = json::array();
  for (const auto& b : e.unknown_classes)
    jr["unknown_classes"].push_back({{"label", b.label}, {"name", eval::unknown_label_name(e, b.label)},
                                     {"images", b.images}, {"auroc", number_or_null(b.auroc)}, {"accepted", b.accepted},
                                     {"accepted_as", b.accepted_as}});
  return jr;
}

// The table's rows per (run, unknown set), of the runs' own scores; the JSON's "runs" (those) and
// "by_score.runs" (every score's).
void print_runs(const std::vector<eval::ReportEntry>& entries, const std::vector<std::string>& names, json& out) {
  std::printf("\n%-40s", "run");
  for (auto& n : names) print_cell(n, n);
  std::printf("\n");
  out["runs"] = json::array();
  out["by_score"]["runs"] = json::array();
  for (auto& e : entries) {
    out["by_score"]["runs"].push_back(entry_json(e, names));
    if (!e.own) continue;
    out["runs"].push_back(entry_json(e, names));
    const std::string name = eval::entry_name(e);
    std::printf("%-40s", name.size() > 40 ? ("..." + name.substr(name.size() - 37)).c_str() : name.c_str());
    for (auto& n : names) {
      const double v = metric_value(e, n);
      print_cell(n, std::isfinite(v) ? fmt::format("{:.4f}", v) : "n/a");
    }
    std::printf("\n");
  }
}

// Mean and std per benchmark, method, unknown set and score: the table's last rows and the JSON's
// "groups" (the runs' own scores; "mean"/"std" when they make one group) and "by_score.groups".
void print_groups(const std::vector<eval::ReportEntry>& entries, const std::vector<std::string>& names, json& out) {
  const auto groups = eval::summarise(entries, names);
  out["groups"] = json::array();
  out["by_score"]["groups"] = json::array();
  const auto deployed = std::count_if(groups.begin(), groups.end(), [](const auto& g) { return g.own; });
  for (auto& g : groups) {
    json mean = json::object(), stdev = json::object();
    for (size_t i = 0; i < names.size(); ++i) mean[names[i]] = number_or_null(g.mean[i]), stdev[names[i]] = number_or_null(g.stdev[i]);
    const json jg = {{"dataset", g.dataset}, {"method", g.method}, {"unknown_set", g.unknown_set}, {"scorer", g.scorer},
                     {"runs", g.runs}, {"mean", mean}, {"std", stdev}};
    out["by_score"]["groups"].push_back(jg);
    if (!g.own) continue;
    out["groups"].push_back(jg);
    if (deployed == 1) out["mean"] = mean, out["std"] = stdev;
    if (g.runs < 2) continue;
    std::printf("%-40s", fmt::format("mean+-std {} {}{} ({} runs)", g.dataset, g.method,
                                     g.unknown_set == "unknown" ? "" : " " + g.unknown_set, g.runs).c_str());
    for (size_t i = 0; i < names.size(); ++i)
      print_cell(names[i], std::isfinite(g.mean[i]) ? fmt::format("{:.4f}+-{:.3f}", g.mean[i], g.stdev[i]) : "n/a");
    std::printf("\n");
  }
}

// Score x metric: each score's open-set metrics per benchmark, method and unknown set (the mean
// over runs), the run's own marked with *.
void print_score_table(const std::vector<eval::ReportEntry>& entries, const std::vector<std::string>& names) {
  const std::vector<std::string> shown = {"auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "oscr"};
  const auto groups = eval::summarise(entries, names);
  std::string last;
  for (const auto& g : groups) {
    const std::string head = fmt::format("{} {}{}", g.dataset, g.method, g.unknown_set == "unknown" ? "" : " " + g.unknown_set);
    if (head != last) {
      std::printf("\nscores (%s, %d run%s; higher = more unknown; * the run's own):\n%-14s", head.c_str(), g.runs,
                  g.runs == 1 ? "" : "s", "score");
      for (const auto& n : shown) print_cell(n, n);
      std::printf("\n");
      last = head;
    }
    std::printf("%-14s", (g.scorer + (g.own ? " *" : "")).c_str());
    for (const auto& n : shown) {
      const auto at = std::find(names.begin(), names.end(), n) - names.begin();
      const double v = size_t(at) < g.mean.size() ? g.mean[size_t(at)] : NAN;
      print_cell(n, std::isfinite(v) ? fmt::format("{:.4f}", v) : "n/a");
    }
    std::printf("\n");
  }
}

// Where the open-set errors come from: the hardest unknown class of each set that has several.
void print_hardest_unknowns(const std::vector<eval::ReportEntry>& entries) {
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
}

}  // namespace

int run_eval(const EvalOptions& o) {
  CAC_CHECK(!o.runs.empty(), "no runs given: pass --run RUN_DIR (repeatable)");
  CAC_CHECK(o.accept > 0 && o.accept <= 1, "--accept {} is outside (0, 1] (the share of validation knowns to accept)",
            o.accept);
  ExtraUnknowns extra(o.unknowns);
  std::vector<std::unique_ptr<RunFolderLock>> locks;  // deploy.json is written into each
  for (const std::string& run : o.runs) locks.push_back(std::make_unique<RunFolderLock>(run, "cac_eval"));
  const Device dev = resolve_device(o.device);
  std::vector<eval::ReportEntry> entries;
  ScoresCsv scores(o.scores_csv);
  std::vector<std::pair<std::string, DeployRecord>> deployments;
  for (const std::string& run : o.runs)
    deployments.emplace_back(run, evaluate_run(load_run(run, o, extra, dev), o, scores, entries));
  // Table and JSON: per (run, unknown set), then mean and std per method and unknown set.
  const std::vector<std::string> names = metric_names(entries);
  json out = json::object();
  out["engine"] = engine_version();
  out["precision"] = o.precision;  // "auto": each run's own (config.json)
  out["by_score"]["orientation"] = "higher = more likely unknown, for every score";
  for (Scorer x : all_scorers()) out["by_score"]["meaning"][scorer_name(x)] = scorer_meaning(x);
  out["by_score"]["knn_k"] = o.knn_k;
  print_runs(entries, names, out);
  print_groups(entries, names, out);
  print_score_table(entries, names);
  print_hardest_unknowns(entries);
  for (const auto& [run, rec] : deployments) write_deployment(run, rec);
  if (!o.json_out.empty()) write_file_atomic(o.json_out, out.dump(2) + "\n");
  scores.commit();
  if (!o.report_html.empty()) {
    write_file_atomic(o.report_html, eval::html_report(o.report_title.empty() ? "CAC open-set evaluation" : o.report_title,
                                                       entries, names, o.command_line, engine_version()));
    std::printf("report: %s\n", o.report_html.c_str());
  }
  return 0;
}

}  // namespace cac::app
