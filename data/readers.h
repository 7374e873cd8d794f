#pragma once
// Readers for the benchmark datasets' real file formats. Every reader validates what it reads
// (magic numbers, sizes, counts, label ranges) and throws cac::Error naming the file and the
// problem; none of them crashes on a truncated or corrupt file.
#include <filesystem>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace cac::data {

// MNIST / Fashion-MNIST IDX: images (magic 0x00000803) and labels (0x00000801), plain or gzip.
ImageSet read_idx(const std::string& images_path, const std::string& labels_path,
                  const std::string& name);
// Finds train-images-idx3-ubyte[.gz] etc. in dir; train or t10k.
ImageSet read_mnist_dir(const std::string& dir, bool train, const std::string& name);

// CIFAR-10 binary: data_batch_1..5.bin (train) or test_batch.bin; records of 1 + 3072 bytes.
ImageSet read_cifar10(const std::string& dir, bool train);
// CIFAR-100 binary: train.bin / test.bin; records of coarse, fine, 3072 bytes. `labels` holds the
// fine labels; `coarse` receives the coarse (superclass) ones.
ImageSet read_cifar100(const std::string& dir, bool train, std::vector<int64_t>* coarse = nullptr);

// CIFAR-100's fine class names from dir/fine_label_names.txt (the binary version ships it: 100 lines
// in label order); empty where the file is absent, an error naming it where it is not 100 names.
std::vector<std::string> read_cifar100_fine_names(const std::string& dir);

// SVHN cropped digits (MATLAB v5 .mat): X is 32x32x3xN uint8, y is Nx1 with 1..10 (10 = digit 0).
ImageSet read_svhn(const std::string& mat_path, const std::string& name);

// TinyImageNet folder layout (wnids.txt, train/<wnid>/images/*.JPEG, val/val_annotations.txt),
// labels = index of the wnid in sorted order. JPEGs are decoded on `threads` threads, greyscale
// expanded to RGB, and the result cached in one binary file in cache_dir (default: next to the
// data) so later runs start in seconds; a stale or corrupt cache is rebuilt.
struct TinyImageNet {
  ImageSet train, val;
  std::vector<std::string> wnids;
};
TinyImageNet read_tinyimagenet(const std::string& root, const std::string& cache_dir = "",
                               int threads = 0);
// Readable names of TinyImageNet's classes, in wnid order: the first name words.txt gives each wnid
// ("n01443537\tgoldfish, Carassius auratus" -> "goldfish"; "name (wnid)" where two classes would
// share one), or the wnid itself where words.txt is missing or lacks it.
std::vector<std::string> tinyimagenet_class_names(const std::string& root, const std::vector<std::string>& wnids);

// What a folder reader does with an image that cannot be read: stop with an error naming it (the
// default), or leave it out and say how many were left out (cac_train --skip-bad-images).
enum class BadImages { Stop, Skip };

// An image folder of the user's own: root/<class>/*.{jpg,jpeg,png} (any case); classes sorted by name.
// Images must share one size (or `size` > 0 resizes them to size x size).
ImageSet read_image_folder(const std::string& root, int size, std::vector<std::string>* classes,
                           int threads = 0, BadImages bad = BadImages::Stop);

// The JPEG and PNG files under root (recursively), in path order; empty where there are none.
std::vector<std::string> list_images(const std::string& root);
// Every JPEG and PNG under root (recursively, in path order) as one set of size x size RGB images
// (size 0: all must share the first's square size), labels 0; e.g. images that are all unknown.
ImageSet read_image_tree(const std::string& root, int size, const std::string& name, int threads = 0);

// Whether a file name ends in .jpg, .jpeg or .png (any case): what the folder readers pick up.
bool is_image_name(const std::filesystem::path& p);

// Decodes one JPEG file to RGB (greyscale expanded); throws naming the file.
std::vector<uint8_t> decode_jpeg_rgb(const std::string& path, int* width, int* height);

// Decodes a JPEG or a PNG (told apart by their first bytes, not the name) to 8-bit RGB, as
// torchvision's default loader would see it (data/png.h); throws naming the file.
std::vector<uint8_t> decode_image_rgb(const std::string& path, int* width, int* height);

}  // namespace cac::data
