#include "apps/predict.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

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
    CAC_CHECK(fs::exists(in), "{}: no such file or folder", in);
    if (!fs::is_directory(in)) {
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
}  // namespace

int run_predict(const PredictOptions& o) {
  const std::string dep_path = o.run + "/deploy.json";
  const Deployment dep = Deployment::from_json(
      read_text(dep_path, fmt::format(" (run `cac_eval --run {}` first: it writes the anchors and the threshold)", o.run)),
      dep_path);
  RunConfig c = RunConfig::from_json(read_text(o.run + "/config.json", " (is this a cac_train run folder?)"), o.run + "/config.json");
  const Method method = parse_method(dep.method);
  const int K = dep.num_classes;
  const Device dev = resolve_device(o.device);
  auto model = build_model(c, K);
  model->to(dev);
  const std::string ckpt = o.run + "/best.safetensors";
  restore_tensors(load_safetensors(ckpt), model->state_dict(), ckpt);
  model->eval();
  const Tensor anchors = method == Method::CE ? Tensor() : Tensor::from_vector(dep.anchors, {K, K});
  const double threshold = o.threshold >= 0 ? o.threshold : dep.threshold;

  const std::vector<std::string> files = collect_images(o.inputs);
  data::Augment a;  // evaluation pipeline: resize, to [0, 1], normalise
  a.size = dep.image_size;
  a.mean = dep.mean;
  a.std = dep.std;
  const int S = dep.image_size, C = dep.channels;
  Scored all;
  NoGradGuard no_grad;
  for (size_t b0 = 0; b0 < files.size(); b0 += size_t(o.batch)) {
    const size_t n = std::min(files.size() - b0, size_t(o.batch));
    std::vector<float> x(n * size_t(C) * S * S);
    for (size_t i = 0; i < n; ++i) {
      int w = 0, h = 0;
      std::vector<uint8_t> px = data::decode_image_rgb(files[b0 + i], &w, &h);
      if (C == 1) {  // greyscale networks (MNIST-style)
        std::vector<uint8_t> g(size_t(w) * h);
        data::rgb_to_grey(px.data(), g.size(), g.data());
        px = std::move(g);
      }
      data::transform_image(px.data(), h, w, C, a, 0, 0, 0, x.data() + i * size_t(C) * S * S);
    }
    Tensor batch = Tensor::from_vector(x, {int64_t(n), C, S, S}).to(dev);
    Scored s = score_logits(method, model->logits(batch).to_vector<float>(), K, anchors);
    all.score.insert(all.score.end(), s.score.begin(), s.score.end());
    all.pred.insert(all.pred.end(), s.pred.begin(), s.pred.end());
  }

  std::string csv = "path,prediction,class,score,verdict\n";
  int unknown = 0;
  std::printf("%-48s %-16s %10s  %s\n", "image", "class", "score", "verdict");
  for (size_t i = 0; i < files.size(); ++i) {
    const bool is_unknown = all.score[i] > threshold;
    unknown += is_unknown;
    const std::string& name = dep.class_names[size_t(all.pred[i])];
    const std::string shown = files[i].size() > 48 ? "..." + files[i].substr(files[i].size() - 45) : files[i];
    std::printf("%-48s %-16s %10.4f  %s\n", shown.c_str(), name.c_str(), all.score[i], is_unknown ? "unknown" : "known");
    csv += fmt::format("{},{},{},{:.6g},{}\n", csv_field(files[i]), all.pred[i], csv_field(name), all.score[i],
                       is_unknown ? "unknown" : "known");
  }
  const std::string why = o.threshold >= 0 ? std::string("--threshold")
                                           : fmt::format("accepts {:g}% of the validation knowns", 100 * dep.accept);
  std::printf("%zu images: %zu known, %d unknown (threshold %.4f: %s)\n", files.size(), files.size() - size_t(unknown),
              unknown, threshold, why.c_str());
  if (!o.csv.empty()) write_file_atomic(o.csv, csv);
  return 0;
}

}  // namespace cac::app
