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

void finish(OpenSetData& d, const ImageSet& train_set, const ImageSet& test_set, uint64_t seed,
            const std::string& split_json, bool cache_norm = true) {
  require_images(train_set, d.classes.known, "known", split_json);
  TrainVal tv = split_train_val(train_set, d.classes, d.defaults.val_fraction, seed);
  d.train = std::move(tv.train);
  d.val = std::move(tv.val);
  const int64_t max_label = d.classes.known.back();
  d.test_known = select_classes(test_set, d.classes.known, known_class_map(d.classes, max_label + 1));
  d.norm = cache_norm ? cached_normalisation(d.train, fmt::format("{}/trial{}/seed{}/val{}", d.benchmark, d.trial, seed,
                                                                  d.defaults.val_fraction))
                      : compute_normalisation(d.train);
}

// The test images of the unknown classes (labels kept: the dataset's own).
Subset unknown_classes(const ImageSet& test, const std::vector<int64_t>& classes, const std::string& split_json) {
  require_images(test, classes, "unknown", split_json);
  return select_classes(test, classes);
}

}  // namespace

OpenSetData load_benchmark(const std::string& benchmark, int trial, const std::string& data_dir,
                           uint64_t seed, const std::string& split_json, int image_size) {
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
    std::vector<std::string> train_names, test_names;
    auto train = keep(d, read_image_folder((fs::path(data_dir) / "train").string(), size, &train_names));
    auto test = keep(d, read_image_folder((fs::path(data_dir) / "test").string(), size, &test_names));
    CAC_CHECK(train_names == test_names, "{}: train/ and test/ must hold the same class folders (train: {}; test: {})",
              data_dir, fmt::join(train_names, ", "), fmt::join(test_names, ", "));
    d.class_names = train_names;
    d.classes = read_trial_json(split_json, &d.class_names);
    finish(d, *train, *test, seed, split_json, /*cache_norm=*/false);
    d.test_unknown.push_back({"unknown", unknown_classes(*test, d.classes.unknown, split_json)});
    return d;
  }
  // Where the protocol table names the labels, a split file may use the names, and reports and
  // cac_predict show them (CIFAR+N has none: its unknowns are CIFAR-100 labels).
  const std::vector<std::string>& names = d.defaults.class_names;
  d.classes = split_json.empty() ? standard_trial(d.benchmark, trial)
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
    }
  } else if (b == "TinyImageNet") {
    const std::string dir = find_dataset_dir(data_dir, "wnids.txt", {"tiny-imagenet-200"});
    TinyImageNet t = read_tinyimagenet(dir);
    d.class_names = tinyimagenet_class_names(dir, t.wnids);  // shown in reports and by cac_predict
    auto train = keep(d, std::move(t.train)), test = keep(d, std::move(t.val));
    finish(d, *train, *test, seed, split_json);
    d.test_unknown.push_back({"unknown", unknown_classes(*test, d.classes.unknown, split_json)});
  }
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
  return d;
}

}  // namespace cac::data
