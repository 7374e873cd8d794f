#include "apps/run.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
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

namespace {
// The names of the closed sets, one table each.
template <class T>
using Names = std::vector<std::pair<T, const char*>>;
const Names<Stage2>& stage2_names() {
  static const Names<Stage2> n = {{Stage2::Reload, "reload"}, {Stage2::Continue, "continue"}};
  return n;
}
const Names<data::Interpolation>& interpolation_names() {
  static const Names<data::Interpolation> n = {{data::Interpolation::Nearest, "nearest"},
                                               {data::Interpolation::Bilinear, "bilinear"}};
  return n;
}
const Names<CheckpointBy>& checkpoint_by_names() {
  static const Names<CheckpointBy> n = {{CheckpointBy::ValAnchorLoss, "val_anchor_loss"},
                                        {CheckpointBy::ValAccuracy, "val_accuracy"},
                                        {CheckpointBy::ValLoss, "val_loss"}};
  return n;
}
const Names<DataOnDevice>& data_on_device_names() {
  static const Names<DataOnDevice> n = {{DataOnDevice::Auto, "auto"}, {DataOnDevice::Off, "off"}};
  return n;
}
const Names<GraphUse>& graph_use_names() {
  static const Names<GraphUse> n = {{GraphUse::Auto, "auto"}, {GraphUse::Off, "off"}};
  return n;
}
const Names<Precision>& precision_names() {
  static const Names<Precision> n = {{Precision::FP32, "fp32"}, {Precision::TF32, "tf32"}, {Precision::BF16, "bf16"}};
  return n;
}
const Names<LrShape>& lr_shape_names() {
  static const Names<LrShape> n = {{LrShape::Step, "step"}, {LrShape::Cosine, "cosine"}};
  return n;
}
template <class T>
const char* name_of(const Names<T>& names, T v) {
  for (const auto& [value, name] : names)
    if (value == v) return name;
  return "?";
}
template <class T>
T parse_name(const Names<T>& names, const std::string& s, const char* what) {
  std::string all;
  for (const auto& [value, name] : names) {
    if (s == name) return value;
    all += (all.empty() ? "" : ", ") + std::string(name);
  }
  fail("unknown {} '{}': expected {}", what, s, all);
}

// A value as config.json and the messages write it.
std::string shown(const std::string& v) { return v; }
std::string shown(Method m) { return method_name(m); }
std::string shown(DeviceChoice d) { return device_choice_name(d); }
std::string shown(Stage2 s) { return stage2_name(s); }
std::string shown(LrShape s) { return lr_shape_name(s); }
std::string shown(DataOnDevice d) { return data_on_device_name(d); }
std::string shown(GraphUse g) { return graph_use_name(g); }
std::string shown(Precision p) { return precision_name(p); }
std::string shown(data::Interpolation i) { return name_of(interpolation_names(), i); }
std::string shown(data::SplitSet s) { return data::split_set_name(s); }
std::string shown(const std::optional<Arch>& a) { return a ? arch_name(*a) : ""; }
std::string shown(const std::optional<CheckpointBy>& c) { return c ? checkpoint_by_name(*c) : ""; }
template <class T>
std::string shown(const T& v) { return fmt::format("{}", v); }
template <class T>
json to_json_value(const T& v) {
  if constexpr (std::is_enum_v<T> || std::is_same_v<T, std::optional<Arch>> ||
                std::is_same_v<T, std::optional<CheckpointBy>>)
    return shown(v);
  else
    return json(v);
}

// Parses an enum setting by its name; "" is the unset value of the optional ones.
template <class T>
T parse_setting(const std::string& text) {
  if constexpr (std::is_same_v<T, Method>) return parse_method(text);
  else if constexpr (std::is_same_v<T, DeviceChoice>) return parse_device_choice(text);
  else if constexpr (std::is_same_v<T, Stage2>) return parse_stage2(text);
  else if constexpr (std::is_same_v<T, LrShape>) return parse_lr_shape(text);
  else if constexpr (std::is_same_v<T, DataOnDevice>) return parse_data_on_device(text);
  else if constexpr (std::is_same_v<T, GraphUse>) return parse_graph_use(text);
  else if constexpr (std::is_same_v<T, Precision>) return parse_precision(text);
  else if constexpr (std::is_same_v<T, data::SplitSet>) return data::parse_split_set(text);
  else if constexpr (std::is_same_v<T, data::Interpolation>)
    return parse_name(interpolation_names(), text, "rotate_interpolation");
  else if constexpr (std::is_same_v<T, std::optional<Arch>>) return text.empty() ? T() : T(parse_arch(text));
  else return text.empty() ? T() : T(parse_checkpoint_by(text));
}
template <class T>
constexpr bool kNamedSetting = std::is_enum_v<T> || std::is_same_v<T, std::optional<Arch>> ||
                               std::is_same_v<T, std::optional<CheckpointBy>>;

template <class T>
T from_json_value(const json& v, const std::string& where, const char* key) {
  if constexpr (kNamedSetting<T>) {
    const std::string text = jsonf::as<std::string>(v, where, key);
    try {
      return parse_setting<T>(text);
    } catch (const Error& e) {
      fail("{}: {}: {}", where, key, e.what());
    }
  } else if constexpr (std::is_same_v<T, std::vector<int>> || std::is_same_v<T, std::vector<double>>) {
    return jsonf::as_list<typename T::value_type>(v, where, key);
  } else {
    return jsonf::as<T>(v, where, key);
  }
}

// Every setting of a run, once: its config.json key, its cac_train flag ("" where the dataset
// decides it), how it is read and written, and what values are valid (the rule in words; checked
// for config.json files read back and for the merged settings of a new run).
struct RunField {
  const char* key;
  const char* flag;
  json (*get)(const RunConfig&);
  void (*set)(RunConfig&, const json&, const std::string& where);
  std::string (*problem)(const RunConfig&);  // "" when the value is valid
};
#define CAC_RUN_FIELD(name, flag, rule, ok)                                                                     \
  RunField {                                                                                                     \
    #name, flag, [](const RunConfig& c) { return to_json_value(c.name); },                                       \
        [](RunConfig& c, const json& v, const std::string& where) {                                              \
          c.name = from_json_value<decltype(RunConfig::name)>(v, where, #name);                                  \
        },                                                                                                       \
        [](const RunConfig& c) -> std::string {                                                                  \
          const auto& v = c.name;                                                                                \
          (void)v;                                                                                               \
          return (ok) ? std::string() : fmt::format("{} (found {})", rule, shown(v));                            \
        }                                                                                                        \
  }
bool known_benchmark(const std::string& name) {
  const auto& names = data::benchmark_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}
template <class T, class Ok>
bool all_of(const std::vector<T>& v, Ok ok) { return std::all_of(v.begin(), v.end(), ok); }

const std::vector<RunField>& run_fields() {
  static const std::vector<RunField> fields = {
      CAC_RUN_FIELD(dataset, "--dataset", "dataset is not a known benchmark", known_benchmark(v)),
      CAC_RUN_FIELD(trial, "--trial", "trial must be 0-4", v >= 0 && v <= 4),
      CAC_RUN_FIELD(data_dir, "--data-dir", "", true),
      CAC_RUN_FIELD(split_json, "--split", "", true),
      CAC_RUN_FIELD(split_set, "--split-set", "", true),
      CAC_RUN_FIELD(method, "--method", "", true),  // an enum: read checked
      CAC_RUN_FIELD(arch, "--arch", "arch must be classifier32 or resnet18", v.has_value()),
      CAC_RUN_FIELD(alpha, "--alpha", "alpha must be > 0", v > 0 && std::isfinite(v)),
      CAC_RUN_FIELD(lambda, "--lambda", "lambda must be >= 0", v >= 0 && std::isfinite(v)),
      CAC_RUN_FIELD(epochs, "--epochs", "", true),  // checked with the lists' lengths, in check()
      CAC_RUN_FIELD(lrs, "--lr", "", true),
      CAC_RUN_FIELD(batch, "--batch", "batch must be 1-65536", v >= 1 && v <= 65536),
      CAC_RUN_FIELD(weight_decay, "--weight-decay", "weight_decay must be non-negative", v >= 0),
      CAC_RUN_FIELD(dropout, "", "dropout must be in [0, 1)", v >= 0 && v < 1),
      CAC_RUN_FIELD(momentum, "", "momentum must be in [0, 1)", v >= 0 && v < 1),
      CAC_RUN_FIELD(image_size, "--image-size", "image_size must be 8-1024", v >= 8 && v <= 1024),
      CAC_RUN_FIELD(channels, "", "channels must be 1 or 3", v == 1 || v == 3),
      CAC_RUN_FIELD(flip_p, "", "flip_p must be in [0, 1]", v >= 0 && v <= 1),
      CAC_RUN_FIELD(rotate_deg, "", "rotate_deg must be in [0, 180]", v >= 0 && v <= 180),
      CAC_RUN_FIELD(crop_scale_min, "", "crop_scale_min must be in (0, 1]", v > 0 && v <= 1),
      CAC_RUN_FIELD(rotate_interpolation, "", "", true),
      CAC_RUN_FIELD(flip_for_class_means, "", "", true),
      CAC_RUN_FIELD(device, "--device", "", true),  // an enum: read checked
      CAC_RUN_FIELD(seed, "--seed", "", true),
      CAC_RUN_FIELD(train_limit, "--train-limit", "train_limit must be non-negative", v >= 0),
      CAC_RUN_FIELD(workers, "--workers", "workers must be 0-4096", v >= 0 && v <= 4096),
      CAC_RUN_FIELD(out, "", "", true),
      CAC_RUN_FIELD(init, "--init", "", true),
      CAC_RUN_FIELD(skip_bad_images, "--skip-bad-images", "", true),
      CAC_RUN_FIELD(stage2, "--stage2", "", true),
      CAC_RUN_FIELD(checkpoint_by, "", "", true),
      CAC_RUN_FIELD(lr_schedule, "--lr-schedule", "", true),  // an enum: read checked
      CAC_RUN_FIELD(warmup_epochs, "--warmup-epochs", "warmup_epochs must be 0-100000", v >= 0 && v <= 100000),
      CAC_RUN_FIELD(restarts, "--restarts", "restarts must be 0-1000", v >= 0 && v <= 1000),
      CAC_RUN_FIELD(label_smoothing, "--label-smoothing", "label_smoothing must be in [0, 1)", v >= 0 && v < 1),
      CAC_RUN_FIELD(randaugment, "--randaugment", "randaugment must be [] or [N, M] with N 1-14 and M 0-30",
                    v.empty() || (v.size() == 2 && v[0] >= 1 && v[0] <= 14 && v[1] >= 0 && v[1] <= 30)),
      CAC_RUN_FIELD(data_on_device, "--data-on-device", "", true),  // an enum: read checked
      CAC_RUN_FIELD(graph, "--graph", "", true),  // an enum: read checked
      CAC_RUN_FIELD(precision, "--precision", "", true)};  // an enum: read checked
  return fields;
}
#undef CAC_RUN_FIELD

json parse_object(const std::string& text, const std::string& where) {
  const json j = jsonf::parse(text, where + " (a run configuration)");
  CAC_CHECK(j.is_object(), "{}: expected a JSON object of run settings (found {})", where, j.type_name());
  return j;
}
}  // namespace

std::string RunConfig::to_json() const {
  json j = json::object();
  for (const RunField& f : run_fields()) j[f.key] = f.get(*this);
  return j.dump(2) + "\n";
}

std::vector<std::pair<std::string, std::string>> run_config_flags() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const RunField& f : run_fields())
    if (*f.flag) out.emplace_back(f.flag, f.key);
  return out;
}

RunConfig RunConfig::from_json(const std::string& text, const std::string& where) {
  const json j = parse_object(text, where);
  RunConfig c;
  // What runs made before a field existed did: classifier32, no --init, stage 2 continuing, the CE
  // baseline kept by validation loss, bilinear rotation.
  c.arch = Arch::Classifier32;
  c.stage2 = Stage2::Continue;
  c.rotate_interpolation = data::Interpolation::Bilinear;
  const std::set<std::string> optional = {"arch", "init", "stage2", "checkpoint_by", "rotate_interpolation",
                                          "split_set", "skip_bad_images", "lr_schedule", "warmup_epochs",
                                          "restarts", "label_smoothing", "randaugment", "data_on_device",
                                          "graph", "precision"};
  for (const RunField& f : run_fields()) {
    if (!j.contains(f.key) && optional.count(f.key)) continue;
    f.set(c, jsonf::member(j, f.key, where), where);
  }
  if (!j.contains("checkpoint_by"))
    c.checkpoint_by = c.method == Method::CE ? CheckpointBy::ValLoss : CheckpointBy::ValAnchorLoss;
  c.check(where);
  return c;
}

std::vector<std::string> RunConfig::overlay_json(const std::string& text, const std::string& where,
                                                 const std::set<std::string>& keep) {
  const json j = parse_object(text, where);
  std::vector<std::string> known;
  for (const RunField& f : run_fields()) known.push_back(f.key);
  auto check_keys = [&](const json& o, const std::string& in) {
    for (const auto& [key, value] : o.items())
      if (key != "_comment" && (key != "by_dataset" || !in.empty()) &&
          std::find(known.begin(), known.end(), key) == known.end())
        fail("{}: unknown setting '{}'{} (a typo? the settings are those of a run's config.json: {}; and "
             "\"by_dataset\": {{DATASET: {{settings}}}})", where, key, in, fmt::join(known, ", "));
  };
  check_keys(j, "");
  // Settings for one dataset only (e.g. configs/authors-release.json): applied over the file's
  // others when the run's dataset is that one.
  json merged = j;
  merged.erase("by_dataset");
  if (j.contains("by_dataset")) {
    const json& per = j.at("by_dataset");
    CAC_CHECK(per.is_object(), "{}: by_dataset must be an object of dataset names", where);
    for (const auto& [name, settings] : per.items()) {
      CAC_CHECK(settings.is_object(), "{}: by_dataset.{} must be an object of settings", where, name);
      check_keys(settings, " in by_dataset." + name);
    }
    const std::string ds = j.contains("dataset") && !keep.count("dataset") ? jsonf::as<std::string>(j.at("dataset"), where, "dataset")
                                                                            : dataset;
    if (per.contains(ds))
      for (const auto& [key, value] : per.at(ds).items()) merged[key] = value;
  }
  std::vector<std::string> taken;
  for (const RunField& f : run_fields()) {
    if (!merged.contains(f.key) || keep.count(f.key)) continue;
    f.set(*this, merged.at(f.key), where);
    taken.push_back(f.key);
  }
  return taken;
}

void RunConfig::check(const std::string& where) const {
  auto bad = [&](const std::string& what) {
    fail("{}: {}; a hand-edited or corrupt config.json? The cac_train flag of the same name lists what it accepts",
         where, what);
  };
  for (const RunField& f : run_fields())
    if (const std::string p = f.problem(*this); !p.empty()) bad(p);
  if (epochs.empty() || epochs.size() != lrs.size())
    bad(fmt::format("epochs and lrs must be non-empty lists of the same length (found {} and {} entries)", epochs.size(),
                    lrs.size()));
  for (int e : epochs)
    if (e < 0 || e > 100000) bad(fmt::format("epochs must be 0-100000 per stage (found {})", e));
  for (double lr : lrs)
    if (!(lr > 0 && std::isfinite(lr))) bad(fmt::format("lrs must be positive and finite (found {})", lr));
  if (lr_schedule == LrShape::Step && (warmup_epochs > 0 || restarts > 0))
    bad("warmup_epochs and restarts belong to lr_schedule cosine (with step, each stage has its own rate)");
  if (lr_schedule == LrShape::Cosine) {
    try {
      schedule();
    } catch (const Error& e) {
      bad(e.what());
    }
  }
  if (label_smoothing > 0 && method != Method::CE)
    bad(fmt::format("label_smoothing applies to the CE baseline (method ce); this run's method is {}",
                    method_name(method)));
}

LrSchedule RunConfig::schedule() const {
  if (lr_schedule == LrShape::Step) return LrSchedule(epochs, lrs);
  int total = 0;
  for (int e : epochs) total += e;
  return LrSchedule::cosine(total, lrs.empty() ? 0 : lrs[0], warmup_epochs, restarts);
}

void apply_dataset_defaults(RunConfig& c, bool epochs_set, bool lrs_set, bool batch_set, bool wd_set,
                            bool image_size_set) {
  const data::DatasetDefaults d = data::dataset_defaults(c.dataset);
  c.dataset = d.name;
  if (!c.arch) c.arch = parse_arch(d.arch);
  if (!epochs_set) c.epochs = c.method == Method::CACLearnt ? d.learnt_epochs : d.cac_epochs;
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

const char* stage2_name(Stage2 s) { return name_of(stage2_names(), s); }
Stage2 parse_stage2(const std::string& s) { return parse_name(stage2_names(), s, "--stage2"); }
const char* checkpoint_by_name(CheckpointBy c) { return name_of(checkpoint_by_names(), c); }
CheckpointBy parse_checkpoint_by(const std::string& s) { return parse_name(checkpoint_by_names(), s, "checkpoint_by"); }
const char* lr_shape_name(LrShape s) { return name_of(lr_shape_names(), s); }
const char* data_on_device_name(DataOnDevice d) { return name_of(data_on_device_names(), d); }
DataOnDevice parse_data_on_device(const std::string& s) {
  return parse_name(data_on_device_names(), s, "--data-on-device");
}
const char* precision_name(Precision p) { return name_of(precision_names(), p); }
Precision parse_precision(const std::string& s) { return parse_name(precision_names(), s, "--precision"); }
const char* graph_use_name(GraphUse g) { return name_of(graph_use_names(), g); }
GraphUse parse_graph_use(const std::string& s) { return parse_name(graph_use_names(), s, "--graph"); }
LrShape parse_lr_shape(const std::string& s) { return parse_name(lr_shape_names(), s, "--lr-schedule"); }

DeviceChoice parse_device_choice(const std::string& s) {
  const std::string problem = device_problem(s);
  CAC_CHECK(problem.empty(), "--device {}", problem);
  return s == "cpu" ? DeviceChoice::CPU : s == "cuda" ? DeviceChoice::CUDA : DeviceChoice::Auto;
}

const char* device_choice_name(DeviceChoice d) {
  switch (d) {
    case DeviceChoice::Auto: return "auto";
    case DeviceChoice::CPU: return "cpu";
    case DeviceChoice::CUDA: return "cuda";
  }
  return "?";
}

Device resolve_device(DeviceChoice d) {
  if (d == DeviceChoice::CPU) return Device::CPU;
  std::string why;
  const cuda::GpuState gpu = cuda::gpu_state(&why);
  CAC_CHECK(gpu != cuda::GpuState::Absent || d == DeviceChoice::Auto, "--device cuda: {}", why);
  // A GPU that is there but unusable is an error for auto too: falling back to the CPU would
  // turn minutes into days without saying why.
  CAC_CHECK(gpu != cuda::GpuState::Unusable, "--device {}: {}; or --device cpu to run on the CPU",
            device_choice_name(d), why);
  return gpu == cuda::GpuState::Usable ? Device::CUDA : Device::CPU;
}

Device resolve_device(const std::string& d) { return resolve_device(parse_device_choice(d)); }

std::shared_ptr<OpenSetClassifier> build_model(const RunConfig& c, int num_classes) {
  const bool learnt = c.method == Method::CACLearnt;
  if (c.arch_or_default() == Arch::ResNet18) {
    ResNet18Config cfg;
    cfg.bf16 = c.precision == Precision::BF16;
    cfg.in_channels = c.channels;
    cfg.image_size = c.image_size;
    cfg.seed = c.seed;
    return make_resnet18(cfg, num_classes, c.alpha, learnt);
  }
  Classifier32Config cfg;
  cfg.in_channels = c.channels;
  cfg.image_size = c.image_size;
  cfg.dropout = c.dropout;
  cfg.seed = c.seed;
  cfg.bf16 = c.precision == Precision::BF16;
  return make_classifier32(cfg, num_classes, c.alpha, learnt);
}

data::OpenSetData load_run_data(const RunConfig& c) {
  data::OpenSetData d =
      data::load_benchmark(c.dataset, c.trial, c.data_dir, c.seed, c.split_json, c.image_size, c.split_set,
                           c.skip_bad_images ? data::BadImages::Skip : data::BadImages::Stop);
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
