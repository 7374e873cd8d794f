#include "data/benchmarks.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/files.h"
#include "core/rng.h"
#include "data/embedded_configs.h"  // generated: kDatasetsJson, kSplitsJson
#include "data/json_fields.h"

namespace cac::data {

using json = nlohmann::json;

namespace {
json parse(const std::string& text, const std::string& what) { return jsonf::parse(text, what); }
json load_file(const std::string& path) {
  std::ifstream f(path);
  CAC_CHECK(f.good(), "{}: cannot open", path);
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return parse(text, path);
}
std::string canonical(const std::string& name) {
  for (const auto& n : benchmark_names())
    if (n == name) return n;
  fail("unknown dataset '{}': expected one of {}", name, fmt::join(benchmark_names(), ", "));
}
}  // namespace

const std::vector<std::string>& benchmark_names() {
  static const std::vector<std::string> names = {"MNIST", "FashionMNIST", "SVHN", "CIFAR10", "CIFAR+10", "CIFAR+50", "TinyImageNet", "CIFAR10-FP", "ImageFolder"};
  return names;
}

DatasetDefaults dataset_defaults(const std::string& benchmark, const std::string& json_path) {
  const std::string name = canonical(benchmark);
  const json all = json_path.empty() ? parse(kDatasetsJson, "built-in configs/datasets.json") : load_file(json_path);
  const std::string where = json_path.empty() ? "configs/datasets.json" : json_path;
  CAC_CHECK(all.contains(name), "{}: no entry for {}", where, name);
  const json& j = all.at(name);
  DatasetDefaults d;
  d.name = name;
  const std::string entry = fmt::format("{} (entry {})", where, name);
  using jsonf::field;
  using jsonf::list;
  d.image_size = field<int>(j, "image_size", entry);
  d.channels = field<int>(j, "channels", entry);
  d.batch = field<int>(j, "batch", entry);
  d.cac_epochs = list<int>(j, "cac_epochs", entry);
  d.learnt_epochs = list<int>(j, "learnt_epochs", entry);
  d.lrs = list<double>(j, "lrs", entry);
  d.weight_decay = field<double>(j, "weight_decay", entry);
  d.dropout = field<double>(j, "dropout", entry);
  d.flip_p = field<double>(j, "flip_p", entry);
  d.rotate_deg = field<double>(j, "rotate_deg", entry);
  d.crop_scale_min = field<double>(j, "crop_scale_min", entry);
  d.val_fraction = field<double>(j, "val_fraction", entry);
  d.flip_for_class_means = field<bool>(j, "flip_for_class_means", entry);
  if (j.contains("arch")) d.arch = field<std::string>(j, "arch", entry);
  if (j.contains("class_names")) d.class_names = list<std::string>(j, "class_names", entry);
  const auto non_negative = [](const std::vector<int>& v) { return std::all_of(v.begin(), v.end(), [](int e) { return e >= 0; }); };
  CAC_CHECK(d.image_size >= 8 && d.image_size <= 1024 && (d.channels == 1 || d.channels == 3) && d.batch > 0 &&
                d.batch <= 65536 && d.val_fraction > 0 && d.val_fraction < 1 && d.crop_scale_min > 0 &&
                d.crop_scale_min <= 1 && d.flip_p >= 0 && d.flip_p <= 1 && d.rotate_deg >= 0 && d.rotate_deg <= 180 &&
                d.weight_decay >= 0 && d.dropout >= 0 && d.dropout < 1 && !d.lrs.empty() &&
                std::all_of(d.lrs.begin(), d.lrs.end(), [](double v) { return v > 0; }) &&
                d.cac_epochs.size() == d.lrs.size() && d.learnt_epochs.size() == d.lrs.size() &&
                non_negative(d.cac_epochs) && non_negative(d.learnt_epochs) &&
                (d.arch == "classifier32" || d.arch == "resnet18"),
            "{}: entry {} has out-of-range values (see configs/datasets.json for the expected ranges)", where, name);
  return d;
}

const char* split_set_name(SplitSet s) { return s == SplitSet::Y2020 ? "2020" : "current"; }

SplitSet parse_split_set(const std::string& s) {
  if (s == "current") return SplitSet::Current;
  if (s == "2020") return SplitSet::Y2020;
  fail("unknown split set '{}': expected current or 2020", s);
}

Trial standard_trial(const std::string& benchmark, int trial, SplitSet set) {
  std::string name = canonical(benchmark);
  if (name == "FashionMNIST") name = "MNIST";
  CAC_CHECK(trial >= 0 && trial <= 4, "trial {} of {}: the standard splits have trials 0-4", trial, benchmark);
  const bool old = set == SplitSet::Y2020;
  const json all = old ? parse(kSplits2020Json, "built-in configs/splits-2020.json")
                       : parse(kSplitsJson, "built-in configs/splits.json");
  CAC_CHECK(all.contains(name), "the 2020 split set has no {} trials (configs/splits-2020.json: the authors' old "
            "CIFAR+50 unknown lists are not recorded); give the split with --split", name);
  const json& j = all.at(name).at(size_t(trial));
  Trial t;
  t.known = j.at("known").get<std::vector<int64_t>>();
  if (j.contains("unknown")) {
    t.unknown = j.at("unknown").get<std::vector<int64_t>>();
  } else {  // TinyImageNet: the other classes of the 200
    std::set<int64_t> known(t.known.begin(), t.known.end());
    for (int64_t c = 0; c < 200; ++c)
      if (!known.count(c)) t.unknown.push_back(c);
  }
  std::sort(t.known.begin(), t.known.end());
  std::sort(t.unknown.begin(), t.unknown.end());
  return t;
}

Trial read_trial_json(const std::string& path, const std::vector<std::string>* class_names) {
  const json j = load_file(path);
  Trial t;
  // A class is its index, or (for image folders) its sub-folder's name.
  auto index_of = [&](const json& v) -> int64_t {
    if (v.is_string()) {
      const std::string name = v.get<std::string>();
      const std::string shown = name.size() <= 80 ? name : name.substr(0, 80) + "...";  // a readable error
      CAC_CHECK(class_names != nullptr, "{}: class '{}' given by name; this dataset's classes are numbers", path, shown);
      const auto it = std::find(class_names->begin(), class_names->end(), name);
      CAC_CHECK(it != class_names->end(), "{}: no class named '{}' (the classes are: {})", path, shown,
                fmt::join(*class_names, ", "));
      return int64_t(it - class_names->begin());
    }
    const int64_t c = jsonf::as<int64_t>(v, path, "a class");
    if (class_names)  // an image folder's classes: an index must name one of its sub-folders
      CAC_CHECK(c >= 0 && c < int64_t(class_names->size()), "{}: class {} is outside 0..{} (the classes are: {})",
                path, c, class_names->size() - 1, fmt::join(*class_names, ", "));
    return c;
  };
  try {
    for (const json& v : j.at("known")) t.known.push_back(index_of(v));
    for (const json& v : j.at("unknown")) t.unknown.push_back(index_of(v));
  } catch (const json::exception& e) {
    fail("{}: expected {{\"known\": [...], \"unknown\": [...]}} ({})", path, e.what());
  }
  std::sort(t.known.begin(), t.known.end());
  std::sort(t.unknown.begin(), t.unknown.end());
  CAC_CHECK(t.known.size() >= 2, "{}: need at least two known classes", path);
  CAC_CHECK(std::adjacent_find(t.known.begin(), t.known.end()) == t.known.end(), "{}: repeated known class", path);
  for (int64_t u : t.unknown)
    CAC_CHECK(!std::binary_search(t.known.begin(), t.known.end(), u), "{}: class {} is both known and unknown", path, u);
  for (int64_t c : t.known) CAC_CHECK(c >= 0, "{}: negative class {}", path, c);
  for (int64_t c : t.unknown) CAC_CHECK(c >= 0, "{}: negative class {}", path, c);
  CAC_CHECK(std::adjacent_find(t.unknown.begin(), t.unknown.end()) == t.unknown.end(), "{}: repeated unknown class", path);
  return t;
}

std::vector<int64_t> known_class_map(const Trial& t, int64_t num_dataset_classes) {
  std::vector<int64_t> map(size_t(num_dataset_classes), -1);
  for (size_t i = 0; i < t.known.size(); ++i) {
    CAC_CHECK(t.known[i] >= 0 && t.known[i] < num_dataset_classes, "known class {} is outside the dataset's 0..{}",
              t.known[i], num_dataset_classes - 1);
    map[size_t(t.known[i])] = int64_t(i);
  }
  return map;
}

Subset select_classes(const ImageSet& set, const std::vector<int64_t>& classes, const std::vector<int64_t>& map) {
  std::set<int64_t> want(classes.begin(), classes.end());
  Subset s;
  s.source = &set;
  const int64_t* y = set.labels.data<int64_t>();
  for (int64_t i = 0; i < set.size(); ++i)
    if (want.count(y[i])) {
      s.indices.push_back(i);
      s.labels.push_back(map.empty() ? y[i] : map.at(size_t(y[i])));
    }
  return s;
}

TrainVal split_train_val(const ImageSet& set, const Trial& t, double val_fraction, uint64_t seed) {
  CAC_CHECK(val_fraction >= 0 && val_fraction < 1, "validation fraction {} outside [0, 1)", val_fraction);
  const int64_t max_label = t.known.empty() ? 0 : t.known.back();
  const std::vector<int64_t> map = known_class_map(t, std::max<int64_t>(max_label + 1, 1));
  TrainVal out;
  out.train.source = out.val.source = &set;
  const int64_t* y = set.labels.data<int64_t>();
  for (size_t k = 0; k < t.known.size(); ++k) {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < set.size(); ++i)
      if (y[i] == t.known[k]) idx.push_back(i);
    CAC_CHECK(!idx.empty(), "{}: no images of known class {}", set.name, t.known[k]);
    Generator g(seed, 1000 + uint64_t(t.known[k]));  // per-class stream: independent of other classes
    for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[g.below(i)]);  // Fisher-Yates
    const size_t n_train = size_t(std::llround((1.0 - val_fraction) * double(idx.size())));
    for (size_t i = 0; i < idx.size(); ++i) {
      Subset& dst = i < n_train ? out.train : out.val;
      dst.indices.push_back(idx[i]);
      dst.labels.push_back(map[size_t(t.known[k])]);
    }
  }
  return out;
}

Normalisation compute_normalisation(const Subset& s) {
  CAC_CHECK(s.source && s.size() > 0, "normalisation: empty subset");
  const ImageSet& set = *s.source;
  const int C = set.channels();
  const int64_t per = int64_t(set.height()) * set.width();
  std::vector<double> sum(size_t(C), 0), sq(size_t(C), 0);
  for (int64_t i : s.indices) {
    const uint8_t* p = set.image(i);
    for (int64_t k = 0; k < per; ++k)
      for (int c = 0; c < C; ++c) {
        const double v = p[k * C + c] / 255.0;
        sum[size_t(c)] += v;
        sq[size_t(c)] += v * v;
      }
  }
  Normalisation n;
  const double count = double(per) * double(s.size());
  for (int c = 0; c < C; ++c) {
    const double m = sum[size_t(c)] / count;
    n.mean.push_back(float(m));
    n.std.push_back(float(std::sqrt(std::max(sq[size_t(c)] / count - m * m, 1e-12))));
  }
  return n;
}

Normalisation cached_normalisation(const Subset& s, const std::string& key, const std::string& cache_path) {
  std::string path = cache_path;
  if (path.empty()) {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    if (xdg && *xdg) path = std::string(xdg) + "/cac-engine/normalisation.json";
    else if (home && *home) path = std::string(home) + "/.cache/cac-engine/normalisation.json";
  }
  uint64_t fp = mix64(uint64_t(s.size()));
  for (size_t i = 0; i < s.indices.size(); ++i) fp = mix64(fp ^ uint64_t(s.indices[i]) ^ (uint64_t(s.labels[i]) << 40));
  const std::string full_key = fmt::format("{}#{:016x}", key, fp);
  json db = json::object();
  if (!path.empty()) {
    std::ifstream f(path);
    if (f) {
      // A corrupt or foreign cache is recomputed and overwritten; only an entry with one finite
      // mean and one positive std per channel of these images is served.
      try {
        db = jsonf::parse(std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), path);
        if (!db.is_object()) db = json::object();
        if (db.contains(full_key)) {
          Normalisation n;
          n.mean = jsonf::list<float>(db.at(full_key), "mean", path);
          n.std = jsonf::list<float>(db.at(full_key), "std", path);
          const size_t channels = size_t(s.source->channels());
          if (n.mean.size() == channels && n.std.size() == channels &&
              std::all_of(n.std.begin(), n.std.end(), [](float v) { return v > 0; }))
            return n;
        }
      } catch (const json::exception&) {
        db = json::object();
      } catch (const Error&) {  // a mistyped entry (jsonf)
        db.erase(full_key);
      }
    }
  }
  Normalisation n = compute_normalisation(s);
  if (!path.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    db[full_key] = {{"mean", n.mean}, {"std", n.std}};
    try {
      write_file_atomic(path, db.dump(1));
    } catch (const Error&) {  // an unwritable cache only costs the recomputation next time
    }
  }
  return n;
}

Augment training_augment(int size, double crop_scale_min, double flip_p, double rotate_deg,
                         const Normalisation& n, Interpolation rotate_interp) {
  Augment a;
  a.size = size;
  a.train = true;
  a.crop_scale_min = crop_scale_min;
  a.flip_p = flip_p;
  a.rotate_deg = rotate_deg;
  a.rotate_interp = rotate_interp;
  a.mean = n.mean;
  a.std = n.std;
  return a;
}

int64_t cifar100_superclass(const std::string& name) {
  // CIFAR-100's coarse label order (its meta file's coarse_label_names).
  static const std::vector<std::string> names = {
      "aquatic mammals", "fish", "flowers", "food containers", "fruit and vegetables",
      "household electrical devices", "household furniture", "insects", "large carnivores",
      "large man-made outdoor things", "large natural outdoor scenes", "large omnivores and herbivores",
      "medium-sized mammals", "non-insect invertebrates", "people", "reptiles", "small mammals", "trees",
      "vehicles 1", "vehicles 2"};
  std::string n = name;
  std::replace(n.begin(), n.end(), '_', ' ');
  if (n == "medium mammals") n = "medium-sized mammals";
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == n) return int64_t(i);
  fail("unknown CIFAR-100 superclass '{}'", name);
}

std::vector<int64_t> fp_operating_point_superclasses() {
  std::vector<int64_t> out;
  for (const char* n : {"large man-made outdoor things", "large natural outdoor scenes", "large omnivores and herbivores",
                        "medium-sized mammals", "non-insect invertebrates", "people", "reptiles", "small mammals", "trees"})
    out.push_back(cifar100_superclass(n));
  return out;
}

}  // namespace cac::data
