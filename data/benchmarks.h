#pragma once
// The benchmark protocol as data: per-dataset defaults (configs/datasets.json) and the standard
// known/unknown trials (configs/splits.json), both compiled into the binary and overridable by the
// user's own JSON files; seeded per-class train/validation splits; normalisation statistics.
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"

namespace cac::data {

struct DatasetDefaults {
  std::string name;
  int image_size = 32, channels = 3, batch = 128;
  std::vector<int> cac_epochs, learnt_epochs;
  std::vector<double> lrs;
  double weight_decay = 5e-6, dropout = 0.2, flip_p = 0, rotate_deg = 0, crop_scale_min = 1;
  double val_fraction = 0.2;
  bool flip_for_class_means = false;
  std::string arch = "classifier32";  // the network the benchmark is run with by default
  std::vector<std::string> class_names;  // of labels 0, 1, ... where the table gives them
};

// Names: MNIST, FashionMNIST, SVHN, CIFAR10, CIFAR+10, CIFAR+50, TinyImageNet, CIFAR10-FP (the
// experiment at false-positive operating points: one fixed split, no trials) and ImageFolder (the
// user's own JPEG folders; a --split file is required).
const std::vector<std::string>& benchmark_names();
// From the built-in table, or from `json_path` when given (same format as configs/datasets.json).
DatasetDefaults dataset_defaults(const std::string& benchmark, const std::string& json_path = "");

struct Trial {
  std::vector<int64_t> known, unknown;  // dataset label indices, sorted
};
// Trials 0-4 of the standard splits (FashionMNIST uses MNIST's; TinyImageNet's unknowns are the
// other 180 classes).
// Which table of standard trials: the current one (configs/splits.json) or the authors' splits
// before November 2021 (configs/splits-2020.json), which their released weights were trained on.
enum class SplitSet { Current, Y2020 };
const char* split_set_name(SplitSet s);  // "current" | "2020"
SplitSet parse_split_set(const std::string& s);
Trial standard_trial(const std::string& benchmark, int trial, SplitSet set = SplitSet::Current);
// A user split: {"known": [...], "unknown": [...]}; validated (no overlap, non-empty known).
// Classes are indices, or names when `class_names` is given (an image folder's sub-folders).
Trial read_trial_json(const std::string& path, const std::vector<std::string>* class_names = nullptr);

// Network class index = rank of the dataset label among the sorted known classes; -1 if unknown.
std::vector<int64_t> known_class_map(const Trial& t, int64_t num_dataset_classes);

// Seeded per-class split of `set` restricted to the known classes: for each class, its images in a
// shuffled order, the first round((1 - val_fraction) * n) to train and the rest to validation.
// Labels of both subsets are remapped to 0..K-1.
struct TrainVal {
  Subset train, val;
};
TrainVal split_train_val(const ImageSet& set, const Trial& t, double val_fraction, uint64_t seed);
// All images of `set` whose label is in `classes`; labels remapped through `map` (or kept when
// map is empty).
Subset select_classes(const ImageSet& set, const std::vector<int64_t>& classes,
                      const std::vector<int64_t>& map = {});

// Per-channel mean and standard deviation of pixel/255 over a subset (population std).
struct Normalisation {
  std::vector<float> mean, std;
};
Normalisation compute_normalisation(const Subset& s);
// The same, remembered in a small JSON file (`cache_path`; "" = $XDG_CACHE_HOME or
// ~/.cache/cac-engine/normalisation.json) under a key that names the benchmark, trial and seed and
// fingerprints the subset, so a changed split is never served stale values. Cache trouble (an
// unwritable or corrupt file) only costs the recomputation.
Normalisation cached_normalisation(const Subset& s, const std::string& key, const std::string& cache_path = "");

// The protocol's training augmentation (random resized crop, flip, rotation, then normalise).
Augment training_augment(int size, double crop_scale_min, double flip_p, double rotate_deg,
                         const Normalisation& n, Interpolation rotate_interp = Interpolation::Nearest);

// CIFAR-100 coarse label number of a superclass name ("large man-made outdoor things", ...).
int64_t cifar100_superclass(const std::string& name);
// The nine superclasses of the FP-operating-points experiment's unknowns (supplementary section 4).
std::vector<int64_t> fp_operating_point_superclasses();

}  // namespace cac::data
