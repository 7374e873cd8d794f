#include "apps/predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "apps/run.h"
#include "apps/scoring.h"
#include "core/autograd.h"
#include "core/files.h"
#include "data/readers.h"
#include "data/transforms.h"
#include "models/checkpoint.h"

namespace fs = std::filesystem;

namespace cac::app {

namespace {
// Files as given, folders searched recursively for JPEGs and PNGs (sorted, so the output order is stable).
std::vector<std::string> collect_images(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(in, ec);
    CAC_CHECK(fs::exists(st), "{}: no such file or folder{}", in, ec ? " (" + ec.message() + ")" : "");
    if (!fs::is_directory(st)) {
      files.push_back(in);
      continue;
    }
    const std::vector<std::string> found = data::list_images(in);
    CAC_CHECK(!found.empty(), "{}: no JPEG or PNG images in this folder", in);
    files.insert(files.end(), found.begin(), found.end());
  }
  CAC_CHECK(!files.empty(), "no images given");
  return files;
}

// One image's verdict, or why it has none.
struct Prediction {
  std::string path, error;  // error: "" when the image was read
  int64_t pred = -1;
  double score = 0;
};

// The deployed score, and for knn and mahalanobis what they fitted on the training images (the
// score file beside deploy.json, which must carry the record's score_id).
PosthocScorers deployed_score(const std::string& run, const Deployment& dep, const Tensor& anchors, int feature_dim,
                              Device dev) {
  std::map<std::string, Tensor> state;
  if (!dep.score_file.empty()) {
    const std::string path = run + "/" + dep.score_file;
    CAC_CHECK(fs::exists(path), "{}: missing (deploy.json's {} score needs it); run cac_eval --run {} again", path,
              scorer_name(dep.score), run);
    Safetensors f = load_safetensors(path);
    const auto id = f.metadata.find("score_id");
    CAC_CHECK(id != f.metadata.end() && id->second == dep.score_id, "{}: written by another evaluation than {}/deploy.json "
              "(score_id {} against {}); run cac_eval --run {} again", path, run,
              id == f.metadata.end() ? "none" : id->second, dep.score_id, run);
    state = std::move(f.tensors);
  }
  return PosthocScorers::deployed(dep.score, state, anchors, dep.num_classes, feature_dim, dev, dep.knn_k,
                                  run + "/" + dep.score_file);
}

// The run's network, anchors, deployed score and evaluation pipeline, from deploy.json (and its score
// file), config.json and best.safetensors.
class Predictor {
 public:
  Predictor(const std::string& run, const Deployment& dep, Device dev) : dep_(dep), dev_(dev) {
    RunConfig c = RunConfig::from_json(read_text(run + "/config.json", " (is this a cac_train run folder?)"),
                                       run + "/config.json");
    method_ = parse_method(dep.method);
    model_ = build_model(c, dep.num_classes);
    model_->to(dev);
    const std::string ckpt = run + "/best.safetensors";
    restore_tensors(load_safetensors(ckpt), model_->state_dict(), ckpt);
    model_->eval();
    if (!dep.anchors.empty()) anchors_ = Tensor::from_vector(dep.anchors, {dep.num_classes, dep.num_classes});
    aug_.size = dep.image_size;  // evaluation pipeline: resize, to [0, 1], normalise
    aug_.mean = dep.mean;
    aug_.std = dep.std;
    const int64_t dim = reads_features(dep.score) ? feature_dim() : 0;
    score_ = std::make_unique<PosthocScorers>(deployed_score(run, dep, anchors_, int(dim), dev));
  }
  // Scores the images of `batch` that can be read; the others get their reason.
  void score(std::vector<Prediction*>& batch) {
    const int S = dep_.image_size, C = dep_.channels;
    const size_t per = size_t(C) * S * S;
    std::vector<float> x;
    std::vector<Prediction*> read;
    for (Prediction* p : batch) {
      x.resize(x.size() + per);
      try {
        load(p->path, x.data() + x.size() - per);
        read.push_back(p);
      } catch (const Error& e) {
        p->error = e.what();
        x.resize(x.size() - per);
      }
    }
    if (read.empty()) return;
    NoGradGuard no_grad;
    Tensor t = Tensor::from_vector(x, {int64_t(read.size()), C, S, S}).to(dev_);
    const OpenSetClassifier::Outputs o = model_->outputs(t);
    SetOutputs out;
    out.logits = o.logits.to_vector<float>();
    if (reads_features(dep_.score)) out.features = o.features.to_vector<float>(), out.dim = int(o.features.dim(1));
    const Scored own = score_logits(method_, out.logits, dep_.num_classes, anchors_);  // the prediction
    const std::vector<double> s = score_->score(dep_.score, out);
    for (size_t i = 0; i < read.size(); ++i) read[i]->pred = own.pred[i], read[i]->score = s[i];
  }

 private:
  // The network's penultimate feature size, from one blank image.
  int64_t feature_dim() {
    NoGradGuard no_grad;
    const Tensor blank = Tensor::zeros({1, dep_.channels, dep_.image_size, dep_.image_size}).to(dev_);
    return model_->outputs(blank).features.dim(1);
  }

  void load(const std::string& path, float* out) const {
    int w = 0, h = 0;
    std::vector<uint8_t> px = data::decode_image_rgb(path, &w, &h);
    if (dep_.channels == 1) {  // greyscale networks (MNIST-style)
      std::vector<uint8_t> g(size_t(w) * h);
      data::rgb_to_grey(px.data(), g.size(), g.data());
      px = std::move(g);
    }
    data::transform_image(px.data(), h, w, dep_.channels, aug_, 0, 0, 0, out);
  }

  const Deployment& dep_;
  Device dev_;
  Method method_;
  std::shared_ptr<OpenSetClassifier> model_;
  Tensor anchors_;
  data::Augment aug_;
  std::unique_ptr<PosthocScorers> score_;
};
}  // namespace

int run_predict(const PredictOptions& o) {
  const std::string dep_path = o.run + "/deploy.json";
  const Deployment dep = Deployment::from_json(
      read_text(dep_path, fmt::format(" (run `cac_eval --run {}` first: it writes the anchors and the threshold)", o.run)),
      dep_path);
  CAC_CHECK(!o.threshold || std::isfinite(*o.threshold), "--threshold {} is not a number", *o.threshold);
  CAC_CHECK(!o.threshold || *o.threshold >= 0 || !never_negative(dep.score), "--threshold {} is negative: the run's "
            "{} scores are >= 0, so every image would be unknown", *o.threshold, scorer_name(dep.score));
  Predictor predictor(o.run, dep, resolve_device(o.device));
  const double threshold = o.threshold ? *o.threshold : dep.threshold;
  std::vector<Prediction> all;
  for (const std::string& f : collect_images(o.inputs)) all.push_back({f, "", -1, 0});
  for (size_t b0 = 0; b0 < all.size(); b0 += size_t(o.batch)) {
    std::vector<Prediction*> batch;
    for (size_t i = b0; i < std::min(all.size(), b0 + size_t(o.batch)); ++i) batch.push_back(&all[i]);
    predictor.score(batch);
  }

  std::string csv = "path,prediction,class,score,verdict,error\n";
  int unknown = 0, failed = 0;
  std::printf("%-48s %-16s %10s  %s\n", "image", "class", "score", "verdict");
  for (const Prediction& p : all) {
    if (!p.error.empty()) {
      ++failed;
      std::fprintf(stderr, "cac_predict: %s\n", p.error.c_str());
      csv += fmt::format("{},,,,error,{}\n", csv_field(p.path), csv_field(p.error));
      continue;
    }
    const bool is_unknown = p.score > threshold;
    unknown += is_unknown;
    const std::string& name = dep.class_names[size_t(p.pred)];
    const std::string shown = p.path.size() > 48 ? "..." + p.path.substr(p.path.size() - 45) : p.path;
    std::printf("%-48s %-16s %10.4f  %s\n", shown.c_str(), name.c_str(), p.score, is_unknown ? "unknown" : "known");
    csv += fmt::format("{},{},{},{:.6g},{},\n", csv_field(p.path), p.pred, csv_field(name), p.score,
                       is_unknown ? "unknown" : "known");
  }
  const std::string why = o.threshold ? std::string("--threshold")
                                      : fmt::format("accepts {:g}% of the validation knowns", 100 * dep.accept);
  const size_t read = all.size() - size_t(failed);
  std::printf("%zu images: %zu known, %d unknown (%s score above %.4f: %s)\n", read, read - size_t(unknown), unknown,
              scorer_name(dep.score), threshold, why.c_str());
  if (!o.csv.empty()) write_file_atomic(o.csv, csv);
  if (failed == 0) return 0;
  std::fprintf(stderr, "cac_predict: %d of %zu images could not be read (named above%s); exit code 2\n", failed,
               all.size(), o.csv.empty() ? "" : "; their CSV rows say why");
  return 2;
}

}  // namespace cac::app
