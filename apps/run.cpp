#include "apps/run.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "apps/device_option.h"
#include "core/cuda_runtime.h"
#include "data/benchmarks.h"
#include "data/json_fields.h"

namespace cac::app {

using json = nlohmann::json;

std::string RunConfig::to_json() const {
  json j = {{"dataset", dataset}, {"trial", trial}, {"data_dir", data_dir}, {"split_json", split_json},
            {"method", method}, {"arch", arch}, {"alpha", alpha}, {"lambda", lambda}, {"epochs", epochs}, {"lrs", lrs},
            {"batch", batch}, {"weight_decay", weight_decay}, {"dropout", dropout}, {"momentum", momentum},
            {"image_size", image_size}, {"channels", channels}, {"flip_p", flip_p}, {"rotate_deg", rotate_deg},
            {"crop_scale_min", crop_scale_min}, {"flip_for_class_means", flip_for_class_means},
            {"device", device}, {"seed", seed}, {"train_limit", train_limit}, {"workers", workers}, {"out", out},
            {"init", init}};
  return j.dump(2) + "\n";
}

namespace {
// Every config.json field and how it is read (the file and the field named in every error).
struct ConfigField {
  const char* key;
  void (*read)(RunConfig& c, const json& v, const std::string& where);
};
#define CAC_CONFIG_FIELD(name, T)                                                                        \
  ConfigField {                                                                                          \
#name, [](RunConfig& c, const json& v, const std::string& where) { c.name = jsonf::as<T>(v, where, #name); } \
  }
#define CAC_CONFIG_LIST(name, T)                                                                         \
  ConfigField {                                                                                          \
#name, [](RunConfig& c, const json& v, const std::string& where) { c.name = jsonf::as_list<T>(v, where, #name); } \
  }
const std::vector<ConfigField>& config_fields() {
  static const std::vector<ConfigField> fields = {
      CAC_CONFIG_FIELD(dataset, std::string), CAC_CONFIG_FIELD(trial, int),
      CAC_CONFIG_FIELD(data_dir, std::string), CAC_CONFIG_FIELD(split_json, std::string),
      CAC_CONFIG_FIELD(method, std::string), CAC_CONFIG_FIELD(arch, std::string),
      CAC_CONFIG_FIELD(alpha, double), CAC_CONFIG_FIELD(lambda, double),
      CAC_CONFIG_LIST(epochs, int), CAC_CONFIG_LIST(lrs, double),
      CAC_CONFIG_FIELD(batch, int), CAC_CONFIG_FIELD(weight_decay, double),
      CAC_CONFIG_FIELD(dropout, double), CAC_CONFIG_FIELD(momentum, double),
      CAC_CONFIG_FIELD(image_size, int), CAC_CONFIG_FIELD(channels, int),
      CAC_CONFIG_FIELD(flip_p, double), CAC_CONFIG_FIELD(rotate_deg, double),
      CAC_CONFIG_FIELD(crop_scale_min, double), CAC_CONFIG_FIELD(flip_for_class_means, bool),
      CAC_CONFIG_FIELD(device, std::string), CAC_CONFIG_FIELD(seed, uint64_t),
      CAC_CONFIG_FIELD(train_limit, int64_t), CAC_CONFIG_FIELD(workers, int),
      CAC_CONFIG_FIELD(out, std::string), CAC_CONFIG_FIELD(init, std::string)};
  return fields;
}
#undef CAC_CONFIG_FIELD
#undef CAC_CONFIG_LIST

json parse_object(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not a valid run configuration ({})", where, e.what());
  }
  CAC_CHECK(j.is_object(), "{}: expected a JSON object of run settings (found {})", where, j.type_name());
  return j;
}
}  // namespace

RunConfig RunConfig::from_json(const std::string& text, const std::string& where) {
  const json j = parse_object(text, where);
  RunConfig c;
  c.arch = "classifier32";  // runs made before --arch have no "arch"
  for (const ConfigField& f : config_fields()) {
    const std::string key = f.key;
    if (!j.contains(key) && (key == "arch" || key == "init")) continue;  // runs made before --arch / --init
    f.read(c, jsonf::member(j, f.key, where), where);
  }
  c.check(where);
  return c;
}

std::vector<std::string> RunConfig::overlay_json(const std::string& text, const std::string& where,
                                                 const std::set<std::string>& keep) {
  const json j = parse_object(text, where);
  std::vector<std::string> known;
  for (const ConfigField& f : config_fields()) known.push_back(f.key);
  for (const auto& [key, value] : j.items())
    if (std::find(known.begin(), known.end(), key) == known.end())
      fail("{}: unknown setting '{}' (a typo? the settings are those of a run's config.json: {})", where, key,
           fmt::join(known, ", "));
  std::vector<std::string> taken;
  for (const ConfigField& f : config_fields()) {
    if (!j.contains(f.key) || keep.count(f.key)) continue;
    f.read(*this, j.at(f.key), where);
    taken.push_back(f.key);
  }
  return taken;
}

void RunConfig::check(const std::string& where) const {
  auto bad = [&](const char* what, const std::string& value) {
    fail("{}: {} (found {}); a hand-edited or corrupt config.json? The cac_train flag of the same name "
         "lists what it accepts", where, what, value);
  };
  const auto& names = data::benchmark_names();
  if (std::find(names.begin(), names.end(), dataset) == names.end()) bad("dataset is not a known benchmark", dataset);
  if (trial < 0 || trial > 4) bad("trial must be 0-4", std::to_string(trial));
  if (method != "cac" && method != "ce" && method != "cac-learnt") bad("method must be cac, ce or cac-learnt", method);
  if (arch != "classifier32" && arch != "resnet18") bad("arch must be classifier32 or resnet18", arch);
  if (!(alpha > 0)) bad("alpha must be positive", fmt::format("{}", alpha));
  if (!(lambda >= 0)) bad("lambda must be non-negative", fmt::format("{}", lambda));
  if (epochs.empty() || epochs.size() != lrs.size())
    bad("epochs and lrs must be non-empty lists of the same length", fmt::format("{} and {} entries", epochs.size(), lrs.size()));
  for (int e : epochs)
    if (e < 0) bad("epochs must be non-negative", std::to_string(e));
  for (double lr : lrs)
    if (!(lr > 0)) bad("lrs must be positive", fmt::format("{}", lr));
  if (batch < 1 || batch > 65536) bad("batch must be 1-65536", std::to_string(batch));
  if (!(weight_decay >= 0)) bad("weight_decay must be non-negative", fmt::format("{}", weight_decay));
  if (!(dropout >= 0 && dropout < 1)) bad("dropout must be in [0, 1)", fmt::format("{}", dropout));
  if (!(momentum >= 0 && momentum < 1)) bad("momentum must be in [0, 1)", fmt::format("{}", momentum));
  if (image_size < 8 || image_size > 1024) bad("image_size must be 8-1024", std::to_string(image_size));
  if (channels != 1 && channels != 3) bad("channels must be 1 or 3", std::to_string(channels));
  if (!(flip_p >= 0 && flip_p <= 1)) bad("flip_p must be in [0, 1]", fmt::format("{}", flip_p));
  if (!(rotate_deg >= 0 && rotate_deg <= 180)) bad("rotate_deg must be in [0, 180]", fmt::format("{}", rotate_deg));
  if (!(crop_scale_min > 0 && crop_scale_min <= 1)) bad("crop_scale_min must be in (0, 1]", fmt::format("{}", crop_scale_min));
  if (device != "auto" && device != "cpu" && device != "cuda") bad("device must be auto, cpu or cuda", device);
  if (train_limit < 0) bad("train_limit must be non-negative", std::to_string(train_limit));
  if (workers < 0 || workers > 4096) bad("workers must be 0-4096", std::to_string(workers));
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
  if (d == "cpu") return Device::CPU;
  const std::string problem = device_problem(d);
  CAC_CHECK(problem.empty(), "--device {}", problem);
  std::string why;
  const cuda::GpuState gpu = cuda::gpu_state(&why);
  CAC_CHECK(gpu != cuda::GpuState::Absent || d == "auto", "--device cuda: {}", why);
  // A GPU that is there but unusable is an error for auto too: falling back to the CPU would
  // turn minutes into days without saying why.
  CAC_CHECK(gpu != cuda::GpuState::Unusable, "--device {}: {}; or --device cpu to run on the CPU", d, why);
  return gpu == cuda::GpuState::Usable ? Device::CUDA : Device::CPU;
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
