#include "apps/run.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/cuda_runtime.h"
#include "data/benchmarks.h"

namespace cac::app {

using json = nlohmann::json;

std::string RunConfig::to_json() const {
  json j = {{"dataset", dataset}, {"trial", trial}, {"data_dir", data_dir}, {"split_json", split_json},
            {"method", method}, {"arch", arch}, {"alpha", alpha}, {"lambda", lambda}, {"epochs", epochs}, {"lrs", lrs},
            {"batch", batch}, {"weight_decay", weight_decay}, {"dropout", dropout}, {"momentum", momentum},
            {"image_size", image_size}, {"channels", channels}, {"flip_p", flip_p}, {"rotate_deg", rotate_deg},
            {"crop_scale_min", crop_scale_min}, {"flip_for_class_means", flip_for_class_means},
            {"device", device}, {"seed", seed}, {"train_limit", train_limit}, {"workers", workers}, {"out", out}};
  return j.dump(2) + "\n";
}

RunConfig RunConfig::from_json(const std::string& text, const std::string& where) {
  RunConfig c;
  try {
    const json j = json::parse(text);
    c.dataset = j.at("dataset");
    c.trial = j.at("trial");
    c.data_dir = j.at("data_dir");
    c.split_json = j.at("split_json");
    c.method = j.at("method");
    c.arch = j.value("arch", std::string("classifier32"));  // runs made before --arch existed
    c.alpha = j.at("alpha");
    c.lambda = j.at("lambda");
    c.epochs = j.at("epochs").get<std::vector<int>>();
    c.lrs = j.at("lrs").get<std::vector<double>>();
    c.batch = j.at("batch");
    c.weight_decay = j.at("weight_decay");
    c.dropout = j.at("dropout");
    c.momentum = j.at("momentum");
    c.image_size = j.at("image_size");
    c.channels = j.at("channels");
    c.flip_p = j.at("flip_p");
    c.rotate_deg = j.at("rotate_deg");
    c.crop_scale_min = j.at("crop_scale_min");
    c.flip_for_class_means = j.at("flip_for_class_means");
    c.device = j.at("device");
    c.seed = j.at("seed");
    c.train_limit = j.at("train_limit");
    c.workers = j.at("workers");
    c.out = j.at("out");
  } catch (const json::exception& e) {
    fail("{}: not a valid run configuration ({})", where, e.what());
  }
  return c;
}

void apply_dataset_defaults(RunConfig& c, bool epochs_set, bool lrs_set, bool batch_set, bool wd_set,
                            bool image_size_set) {
  const data::DatasetDefaults d = data::dataset_defaults(c.dataset);
  c.dataset = d.name;
  if (c.arch.empty()) c.arch = d.arch;
  CAC_CHECK(c.arch == "classifier32" || c.arch == "resnet18", "--arch must be classifier32 or resnet18 (got '{}')", c.arch);
  if (!epochs_set) c.epochs = c.method == "cac-learnt" ? d.learnt_epochs : d.cac_epochs;
  if (!lrs_set) c.lrs = d.lrs;
  if (!batch_set) c.batch = d.batch;
  if (!wd_set) c.weight_decay = d.weight_decay;
  c.dropout = d.dropout;
  if (!image_size_set) c.image_size = d.image_size;
  CAC_CHECK(c.image_size >= 8 && c.image_size <= 1024, "--image-size {} is outside 8..1024", c.image_size);
  c.channels = d.channels;
  c.flip_p = d.flip_p;
  c.rotate_deg = d.rotate_deg;
  c.crop_scale_min = d.crop_scale_min;
  c.flip_for_class_means = d.flip_for_class_means;
  CAC_CHECK(c.epochs.size() == c.lrs.size(), "--epochs has {} stages but --lr has {}", c.epochs.size(), c.lrs.size());
}

std::string read_text(const std::string& path, const std::string& hint) {
  std::ifstream f(path);
  CAC_CHECK(f.good(), "{}: not found{}", path, hint);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

Device resolve_device(const std::string& d) {
  std::string why;
  const bool gpu = cuda::device_available(&why);
  if (d == "cpu") return Device::CPU;
  if (d == "cuda") {
    CAC_CHECK(gpu, "--device cuda: {}", why);
    return Device::CUDA;
  }
  CAC_CHECK(d == "auto", "--device must be auto, cpu or cuda (got '{}')", d);
  return gpu ? Device::CUDA : Device::CPU;
}

std::shared_ptr<OpenSetClassifier> build_model(const RunConfig& c, int num_classes) {
  const bool learnt = c.method == "cac-learnt";
  if (c.arch == "resnet18") {
    ResNet18Config cfg;
    cfg.in_channels = c.channels;
    cfg.image_size = c.image_size;
    cfg.seed = c.seed;
    return make_resnet18(cfg, num_classes, c.alpha, learnt);
  }
  CAC_CHECK(c.arch == "classifier32" || c.arch.empty(), "unknown architecture '{}' (classifier32 or resnet18)", c.arch);
  Classifier32Config cfg;
  cfg.in_channels = c.channels;
  cfg.image_size = c.image_size;
  cfg.dropout = c.dropout;
  cfg.seed = c.seed;
  return make_classifier32(cfg, num_classes, c.alpha, learnt);
}

data::OpenSetData load_run_data(const RunConfig& c) {
  data::OpenSetData d = data::load_benchmark(c.dataset, c.trial, c.data_dir, c.seed, c.split_json, c.image_size);
  if (c.train_limit > 0 && c.train_limit < d.train.size()) {
    Generator g(c.seed, 77);
    std::vector<size_t> order(size_t(d.train.size()));
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[g.below(i)]);
    data::Subset lim;
    lim.source = d.train.source;
    for (int64_t i = 0; i < c.train_limit; ++i) {
      lim.indices.push_back(d.train.indices[order[size_t(i)]]);
      lim.labels.push_back(d.train.labels[order[size_t(i)]]);
    }
    d.train = lim;
  }
  return d;
}

}  // namespace cac::app
