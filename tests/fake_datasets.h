#pragma once
// Writers of tiny datasets in the benchmarks' real file formats (CIFAR binary, SVHN MATLAB v5,
// raw/gzip bytes), shared by the reader tests and the end-to-end experiment tests.
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace cac::testing {

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes, bool gzip);

// A fresh folder under the system's temporary directory, removed with everything in it at the end
// of the scope; `dir / "name"` is a path inside it.
struct TempDir {
  std::filesystem::path p;
  explicit TempDir(const std::string& tag = "cac-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return (p / name).string(); }
};

// MNIST in its IDX files (gzip), train and t10k: 10 classes x per_class images of 28x28, image i
// of class i % 10 with a bright bar in rows 3c..3c+2 and a little texture.
void write_mnist_idx(const std::string& dir, int per_class);

// CIFAR-10 records: 10 * per_class images, label r % 10, pixel p of record r = (p + r) mod 256.
std::vector<uint8_t> cifar10_records(int per_class);
// CIFAR-100 test records: one image per fine class 0..99, coarse label = fine / 5.
std::vector<uint8_t> cifar100_one_per_class();
// The folders load_fp_operating_points expects under `dir`: cifar-10-batches-bin (5 training
// batches of train_per_class images per class each, a test batch of test_per_class),
// cifar-100-binary/test.bin, and test_32x32.mat with `svhn` images.
void write_fp_operating_point_files(const std::string& dir, int train_per_class, int test_per_class, int svhn);

// SVHN: X 32x32x3xN uint8 (column-major, X[i] = i mod 251), y as given (1..10; 10 = digit 0).
// `compressed`: zlib-compressed variables, as MATLAB's own -v7 files have. Returns false when matio
// could not create the file.
bool write_svhn(const std::string& path, int n, const std::vector<double>& y, bool with_y = true,
                bool compressed = false);

// A JPEG of w x h pixels, every sample = base (RGB or greyscale). Returns false if it can't write.
bool write_jpeg(const std::string& path, int w, int h, bool grey, uint8_t base);
// PNG assembly for the reader tests: wraps given scanlines (each a filter byte and the row's bytes,
// already filtered, concatenated over the passes) in a PNG with the given header fields. Nothing is
// validated, so tests can build exactly the broken file they want. `palette`: RGB triples (PLTE
// chunk if not empty); `extra`: chunks (type + data) written before IDAT; `idat`, if not empty,
// replaces the compressed scanlines.
struct PngParts {
  uint32_t width = 1, height = 1;
  uint8_t depth = 8, colour = 2, interlace = 0;
  std::vector<uint8_t> scanlines, palette, idat;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> extra;
};
std::vector<uint8_t> png_bytes(const PngParts& p);
// Scanlines of a w x h 8-bit image with `channels` samples per pixel: every row filter type 0 and
// every byte = fill.
std::vector<uint8_t> plain_scanlines(int w, int h, int channels, uint8_t fill);
// An 8-bit RGB PNG (filter type 0) of w x h pixels, every sample = base.
bool write_png(const std::string& path, int w, int h, uint8_t base);

// A user image folder: dir/train/<name>/*.jpg (per_class_train each) and dir/test/<name>/*.jpg
// (per_class_test each), images w x h with a class-dependent brightness.
void write_image_folder(const std::string& dir, const std::vector<std::string>& classes, int per_class_train,
                        int per_class_test, int w, int h);

}  // namespace cac::testing
