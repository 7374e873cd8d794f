#include "data/openset.h"

#include <algorithm>
#include <filesystem>

#include "data/readers.h"

namespace fs = std::filesystem;

namespace cac::data {

std::string find_dataset_dir(const std::string& data_dir, const std::string& marker,
                             const std::vector<std::string>& subs) {
  CAC_CHECK(fs::is_directory(data_dir), "{}: data folder not found", data_dir);
  if (fs::exists(fs::path(data_dir) / marker)) return data_dir;
  for (const auto& s : subs)
    if (fs::exists(fs::path(data_dir) / s / marker)) return (fs::path(data_dir) / s).string();
  fail("{}: cannot find {} (looked in the folder itself and in {}); see docs/reproduce.md for where "
       "each dataset's files go", data_dir, marker, fmt::join(subs, ", "));
}

namespace {
std::shared_ptr<ImageSet> keep(OpenSetData& d, ImageSet s) {
  d.storage.push_back(std::make_shared<ImageSet>(std::move(s)));
  return d.storage.back();
}

// Every class of `classes` must have images in `set`: a split naming a class the dataset lacks
// (class 57 of MNIST, or 3000000000, which the label maps below would size themselves by) fails here,
// naming the split. The standard trials never do.
void require_images(const ImageSet& set, const std::vector<int64_t>& classes, const char* role,
                    const std::string& split_json) {
  const int64_t* labels = set.labels.data<int64_t>();
  std::vector<int64_t> present(labels, labels + set.size());
  std::sort(present.begin(), present.end());
  const int64_t top = present.empty() ? 0 : present.back();
  for (int64_t c : classes)
    CAC_CHECK(std::binary_search(present.begin(), present.end(), c),
              "{}: {} class {} has no images in {} (its classes are 0..{})",
              split_json.empty() ? "the standard split" : split_json, role, c, set.name, top);
}

// val_set: a validation set of its own (all of train_set then trains); none: a seeded split of
// the training images.
void finish(OpenSetData& d, const ImageSet& train_set, const ImageSet& test_set, uint64_t seed,
            const std::string& split_json, bool cache_norm = true, const ImageSet* val_set = nullptr) {
  require_images(train_set, d.classes.known, "known", split_json);
  const std::vector<int64_t> map = known_class_map(d.classes, d.classes.known.back() + 1);
  if (val_set) {
    d.train = select_classes(train_set, d.classes.known, map);
    d.val = select_classes(*val_set, d.classes.known, map);
  } else {
    TrainVal tv = split_train_val(train_set, d.classes, d.defaults.val_fraction, seed);
    d.train = std::move(tv.train);
    d.val = std::move(tv.val);
  }
  d.test_known = select_classes(test_set, d.classes.known, map);
  d.norm = cache_norm ? cached_normalisation(d.train, fmt::format("{}/trial{}/seed{}/val{}{}", d.benchmark, d.trial, seed,
                                                                  d.defaults.val_fraction,
                                                                  d.split_set == SplitSet::Y2020 ? "/splits2020" : ""))
                      : compute_normalisation(d.train);
}

// The test images of the unknown classes (labels kept: the dataset's own).
Subset unknown_classes(const ImageSet& test, const std::vector<int64_t>& classes, const std::string& split_json) {
  require_images(test, classes, "unknown", split_json);
  return select_classes(test, classes);
}

}  // namespace

OpenSetData load_benchmark(const std::string& benchmark, int trial, const std::string& data_dir,
                           uint64_t seed, const std::string& split_json, int image_size, SplitSet split_set,
                           BadImages bad_images) {
  if (dataset_defaults(benchmark).name == "CIFAR10-FP") {
    CAC_CHECK(trial == 0 && split_json.empty(), "CIFAR10-FP has one fixed split (all ten classes known): "
              "no --trial or --split (got trial {}{})", trial, split_json.empty() ? "" : ", split " + split_json);
    return load_fp_operating_points(data_dir, seed);
  }
  OpenSetData d;
  d.defaults = dataset_defaults(benchmark);
  d.benchmark = d.defaults.name;
  d.trial = trial;
  if (d.benchmark == "ImageFolder") {
    CAC_CHECK(!split_json.empty(), "ImageFolder: pass --split FILE naming the known and unknown classes, e.g. "
              "{{\"known\": [\"cat\", \"dog\"], \"unknown\": [\"car\"]}} (sub-folder names of {}/train)", data_dir);
    const int size = image_size > 0 ? image_size : d.defaults.image_size;
    std::vector<std::string> train_names, test_names, val_names;
    auto train = keep(d, read_image_folder((fs::path(data_dir) / "train").string(), size, &train_names, 0, bad_images));
    auto test = keep(d, read_image_folder((fs::path(data_dir) / "test").string(), size, &test_names, 0, bad_images));
    CAC_CHECK(train_names == test_names, "{}: train/ and test/ must hold the same class folders (train: {}; test: {})",
              data_dir, fmt::join(train_names, ", "), fmt::join(test_names, ", "));
    d.class_names = train_names;
    d.classes = read_trial_json(split_json, &d.class_names);
    const fs::path val_dir = fs::path(data_dir) / "val";
    if (!fs::exists(val_dir)) {
      finish(d, *train, *test, seed, split_json, /*cache_norm=*/false);
    } else {
      // A validation folder of the user's own: all of train/ trains, val/ validates (its known
      // classes; the unknown ones need no folder there).
      auto val = keep(d, read_image_folder(val_dir.string(), size, &val_names, 0, bad_images));
      std::vector<int64_t> to_train;  // val/'s labels are its own folders' ranks: val/ folder k -> train/'s class
      for (const std::string& n : val_names) {
        const auto it = std::find(train_names.begin(), train_names.end(), n);
        CAC_CHECK(it != train_names.end(), "{}: class folder '{}' is not in train/ (its classes: {})", val_dir.string(),
                  n, fmt::join(train_names, ", "));
        to_train.push_back(it - train_names.begin());
      }
      for (int64_t c : d.classes.known)
        CAC_CHECK(std::find(to_train.begin(), to_train.end(), c) != to_train.end(),
                  "{}: no folder for the known class '{}' (a val/ folder must hold every known class)",
                  val_dir.string(), train_names[size_t(c)]);
      int64_t* labels = val->labels.data<int64_t>();
      for (int64_t i = 0; i < val->size(); ++i) labels[i] = to_train[size_t(labels[i])];
      finish(d, *train, *test, seed, split_json, /*cache_norm=*/false, val.get());
      d.val_folder = val_dir.string();
    }
    d.test_unknown.push_back({"unknown", unknown_classes(*test, d.classes.unknown, split_json)});
    d.unknown_label_names["unknown"] = d.class_names;
    return d;
  }
  // Where the protocol table names the labels, a split file may use the names, and reports and
  // cac_predict show them (CIFAR+N has none: its unknowns are CIFAR-100 labels).
  const std::vector<std::string>& names = d.defaults.class_names;
  d.split_set = split_set;
  d.classes = split_json.empty() ? standard_trial(d.benchmark, trial, split_set)
                                 : read_trial_json(split_json, names.empty() ? nullptr : &names);
  d.class_names = names;
  const std::string& b = d.benchmark;
  if (b == "MNIST" || b == "FashionMNIST") {
    const std::string dir = data_dir;  // read_mnist_dir names the missing files itself
    auto train = keep(d, read_mnist_dir(dir, true, b)), test = keep(d, read_mnist_dir(dir, false, b));
    finish(d, *train, *test, seed, split_json);
    d.test_unknown.push_back({"unknown", unknown_classes(*test, d.classes.unknown, split_json)});
  } else if (b == "SVHN") {
    const std::string dir = find_dataset_dir(data_dir, "train_32x32.mat", {"svhn", "SVHN"});
    auto train = keep(d, read_svhn((fs::path(dir) / "train_32x32.mat").string(), "SVHN train"));
    auto test = keep(d, read_svhn((fs::path(dir) / "test_32x32.mat").string(), "SVHN test"));
    finish(d, *train, *test, seed, split_json);
    d.test_unknown.push_back({"unknown", unknown_classes(*test, d.classes.unknown, split_json)});
  } else if (b == "CIFAR10" || b == "CIFAR+10" || b == "CIFAR+50") {
    const std::string dir = find_dataset_dir(data_dir, "test_batch.bin", {"cifar-10-batches-bin"});
    auto train = keep(d, read_cifar10(dir, true)), test = keep(d, read_cifar10(dir, false));
    finish(d, *train, *test, seed, split_json);
    if (b == "CIFAR10") {
      d.test_unknown.push_back({"unknown", unknown_classes(*test, d.classes.unknown, split_json)});
    } else {  // unknowns: CIFAR-100 test images of the trial's fine classes
      const std::string dir100 = find_dataset_dir(data_dir, "test.bin", {"cifar-100-binary"});
      auto test100 = keep(d, read_cifar100(dir100, false));
      d.test_unknown.push_back({"unknown", unknown_classes(*test100, d.classes.unknown, split_json)});
      d.unknown_label_names["unknown"] = read_cifar100_fine_names(dir100);
    }
  } else if (b == "TinyImageNet") {
    const std::string dir = find_dataset_dir(data_dir, "wnids.txt", {"tiny-imagenet-200"});
    TinyImageNet t = read_tinyimagenet(dir);
    d.class_names = tinyimagenet_class_names(dir, t.wnids);  // shown in reports and by cac_predict
    auto train = keep(d, std::move(t.train)), test = keep(d, std::move(t.val));
    finish(d, *train, *test, seed, split_json);
    d.test_unknown.push_back({"unknown", unknown_classes(*test, d.classes.unknown, split_json)});
  }
  // The standard benchmarks' unknowns are classes of the same dataset (CIFAR+N's are CIFAR-100's, above).
  if (!d.unknown_label_names.count("unknown")) d.unknown_label_names["unknown"] = d.class_names;
  return d;
}

OpenSetData load_fp_operating_points(const std::string& data_dir, uint64_t seed) {
  OpenSetData d;
  d.defaults = dataset_defaults("CIFAR10-FP");
  d.benchmark = "CIFAR10-FP";
  d.class_names = d.defaults.class_names;
  for (int64_t c = 0; c < 10; ++c) d.classes.known.push_back(c);
  const std::string dir10 = find_dataset_dir(data_dir, "test_batch.bin", {"cifar-10-batches-bin"});
  auto train = keep(d, read_cifar10(dir10, true)), test = keep(d, read_cifar10(dir10, false));
  finish(d, *train, *test, seed, "");
  const std::string svhn_dir = find_dataset_dir(data_dir, "test_32x32.mat", {"svhn", "SVHN"});
  auto svhn = keep(d, read_svhn((fs::path(svhn_dir) / "test_32x32.mat").string(), "SVHN test"));
  Subset all_svhn = select_classes(*svhn, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  d.test_unknown.push_back({"SVHN test", all_svhn});
  // The CIFAR-100 test images of the nine superclasses (coarse labels), kept with fine labels.
  const std::string dir100 = find_dataset_dir(data_dir, "test.bin", {"cifar-100-binary"});
  std::vector<int64_t> coarse;
  auto c100 = keep(d, read_cifar100(dir100, false, &coarse));
  Subset sub;
  sub.source = c100.get();
  const std::vector<int64_t> want = fp_operating_point_superclasses();
  for (size_t i = 0; i < coarse.size(); ++i)
    if (std::find(want.begin(), want.end(), coarse[i]) != want.end()) {
      sub.indices.push_back(int64_t(i));
      sub.labels.push_back(c100->labels.data<int64_t>()[i]);
    }
  d.test_unknown.push_back({"CIFAR-100 superclasses", sub});
  d.unknown_label_names["CIFAR-100 superclasses"] = read_cifar100_fine_names(dir100);
  return d;
}

const std::vector<std::string>& unknown_source_datasets() {
  static const std::vector<std::string> names = {"MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "SVHN", "TinyImageNet"};
  return names;
}

UnknownSource parse_unknown_source(const std::string& spec) {
  UnknownSource u;
  std::string source = spec;
  // NAME=SOURCE; an '=' inside a path after a ':' or '/' belongs to the path.
  if (const size_t eq = spec.find('='); eq != std::string::npos && spec.find_first_of(":/") > eq) {
    u.name = spec.substr(0, eq);
    source = spec.substr(eq + 1);
    CAC_CHECK(!u.name.empty(), "--unknown '{}': empty name before '='", spec);
  }
  CAC_CHECK(!source.empty(), "--unknown '{}': no source (a folder of images, or DATASET:PATH)", spec);
  const size_t colon = source.find(':');
  if (colon != std::string::npos && colon > 0 && source.find('/') > colon) {
    std::string want = source.substr(0, colon), lower = want;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    for (const std::string& d : unknown_source_datasets()) {
      std::string dl = d;
      std::transform(dl.begin(), dl.end(), dl.begin(), ::tolower);
      if (dl == lower || (dl == "fashionmnist" && lower == "fashion-mnist")) u.dataset = d;
    }
    CAC_CHECK(!u.dataset.empty(), "--unknown '{}': unknown dataset '{}' (one of {}, or a folder of images)", spec, want,
              fmt::join(unknown_source_datasets(), ", "));
    u.path = source.substr(colon + 1);
    CAC_CHECK(!u.path.empty(), "--unknown '{}': no path after '{}:'", spec, want);
  } else {
    u.path = source;
  }
  if (u.name.empty()) {
    if (!u.dataset.empty()) {
      u.name = u.dataset + " test";
    } else {
      // The folder's own name: "photos/" -> "photos", "." -> the current folder's name (fuzz_records).
      fs::path p = fs::absolute(u.path).lexically_normal();
      if (!p.has_filename()) p = p.parent_path();
      u.name = p.filename().string();
      if (u.name.empty()) u.name = "images";  // the root folder
    }
  }
  // The name is a column of scores.csv and a key of eval.json: no separators or line breaks.
  CAC_CHECK(u.name.find_first_of(",\"\n\r") == std::string::npos && u.name != "unknown",
            "--unknown '{}': the set's name '{}' may not contain commas, quotes or line breaks, nor be 'unknown' "
            "(give one with NAME=...)", spec, u.name);
  return u;
}

ImageSet read_unknown_source(const UnknownSource& u, int image_size, int channels,
                             std::vector<std::string>* label_names) {
  ImageSet set;
  std::vector<std::string> names;
  const std::string& b = u.dataset;
  if (b.empty()) {
    set = read_image_tree(u.path, image_size, u.name);
    names = {u.name};
  } else if (b == "MNIST" || b == "FashionMNIST") {
    set = read_mnist_dir(u.path, false, u.name);
    names = dataset_defaults(b).class_names;
  } else if (b == "CIFAR10") {
    set = read_cifar10(find_dataset_dir(u.path, "test_batch.bin", {"cifar-10-batches-bin"}), false);
    names = dataset_defaults(b).class_names;
  } else if (b == "CIFAR100") {
    const std::string dir = find_dataset_dir(u.path, "test.bin", {"cifar-100-binary"});
    set = read_cifar100(dir, false);
    names = read_cifar100_fine_names(dir);
  } else if (b == "SVHN") {
    const std::string mat = fs::is_regular_file(u.path)
                                ? u.path
                                : (fs::path(find_dataset_dir(u.path, "test_32x32.mat", {"svhn", "SVHN"})) / "test_32x32.mat").string();
    set = read_svhn(mat, u.name);
  } else if (b == "TinyImageNet") {
    const std::string dir = find_dataset_dir(u.path, "wnids.txt", {"tiny-imagenet-200"});
    TinyImageNet t = read_tinyimagenet(dir);
    names = tinyimagenet_class_names(dir, t.wnids);
    set = std::move(t.val);
  } else {
    fail("--unknown: no reader for dataset '{}'", b);
  }
  set.name = u.name;
  if (label_names) *label_names = names;
  return with_channels(set, channels);
}

}  // namespace cac::data
