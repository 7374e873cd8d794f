#pragma once
// A whole open-set benchmark assembled from the files on disk: the known classes' training and
// validation splits, the known and unknown test sets, and the normalisation computed from the
// known-class training images. Also the experiment at false-positive operating points (CIFAR10
// all known; unknowns = SVHN test and the nine-superclass CIFAR-100 test subset).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/benchmarks.h"
#include "data/readers.h"  // BadImages

namespace cac::data {

struct OpenSetData {
  std::string benchmark;
  int trial = 0;
  SplitSet split_set = SplitSet::Current;
  Trial classes;
  DatasetDefaults defaults;
  Subset train, val;    // labels remapped to 0..K-1
  std::string val_folder;  // where val comes from when it is not a seeded split of the training images
  Subset test_known;    // labels remapped to 0..K-1
  // Unknown test sets by name ("unknown", or "SVHN test" / "CIFAR-100 superclasses"); labels are
  // the source dataset's own.
  std::vector<std::pair<std::string, Subset>> test_unknown;
  Normalisation norm;
  int num_classes() const { return int(classes.known.size()); }
  // Names of the dataset's labels, in label order: ImageFolder's sub-folders, the protocol
  // table's (configs/datasets.json: Fashion-MNIST, CIFAR-10) or TinyImageNet's words.txt; empty
  // where labels are numbers.
  std::vector<std::string> class_names;
  // Names of the labels of each unknown set (by set name; indexed by label), where known: the
  // dataset's own for its "unknown" set, CIFAR-100's for CIFAR+N and the FP experiment (from
  // fine_label_names.txt, when present). Absent or empty: labels are shown as numbers.
  std::map<std::string, std::vector<std::string>> unknown_label_names;
  std::vector<std::shared_ptr<ImageSet>> storage;  // owns the image sets the subsets point into
};

// data_dir holds the dataset's files directly or in its usual folder (cifar-10-batches-bin,
// cifar-100-binary, tiny-imagenet-200); CIFAR+N needs both CIFAR folders under data_dir.
// split_json: a user split instead of the standard trial (trial is then only a label).
// ImageFolder: data_dir/train/<class>/*.{jpg,png} and data_dir/test/<class>/*.{jpg,png} (the same class folders;
// classes in name order), split_json required (classes by name or index); image_size > 0 resizes
// every image on decoding (else the dataset default), and the normalisation is never cached (the
// folder's content is the user's and may change); bad_images: what an unreadable image there does.
OpenSetData load_benchmark(const std::string& benchmark, int trial, const std::string& data_dir,
                           uint64_t seed, const std::string& split_json = "", int image_size = 0,
                           SplitSet split_set = SplitSet::Current, BadImages bad_images = BadImages::Stop);

// data_dir must contain cifar-10-batches-bin, cifar-100-binary and test_32x32.mat (SVHN).
OpenSetData load_fp_operating_points(const std::string& data_dir, uint64_t seed);

// An extra set of unknowns to evaluate a run against (cac_eval --unknown [NAME=]SOURCE): SOURCE is
// a folder of JPEG/PNG images (searched recursively) or DATASET:PATH for the test split of MNIST,
// FashionMNIST, CIFAR10, CIFAR100, SVHN (PATH: the folder, or test_32x32.mat itself) or
// TinyImageNet (its val images). NAME defaults to "DATASET test" or the folder's name.
struct UnknownSource {
  std::string name, dataset, path;  // dataset empty: an image folder
};
UnknownSource parse_unknown_source(const std::string& spec);  // errors name the spec
const std::vector<std::string>& unknown_source_datasets();
// All of the source's images, labels as the dataset has them (0 for a folder), with `channels`
// channels (with_channels); a folder's images are resized to image_size x image_size on decoding
// (the datasets' keep their size: the loader resizes them as it does the run's own).
// label_names (optional) receives the names of its labels where the dataset has them (the folder's:
// its own name for label 0).
ImageSet read_unknown_source(const UnknownSource& source, int image_size, int channels,
                             std::vector<std::string>* label_names = nullptr);

// The folder holding `marker` (data_dir itself or data_dir/<sub> for one of `subs`).
std::string find_dataset_dir(const std::string& data_dir, const std::string& marker,
                             const std::vector<std::string>& subs);

}  // namespace cac::data
