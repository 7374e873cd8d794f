// Writes a small valid starting corpus for each fuzz target under DIR/<target>/, from the same
// writers the reader tests use, so the fuzzer mutates real file formats instead of guessing them.
#include <cstdio>
#include <fstream>
#include <iterator>

#include "apps/run.h"
#include "apps/scoring.h"
#include "data/benchmarks.h"
#include "models/checkpoint.h"
#include "tests/fake_datasets.h"
#include "tests/fuzz/fuzz_common.h"

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

namespace {
Bytes slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void put(const fs::path& dir, const std::string& name, const Bytes& b) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
Bytes tagged(uint8_t tag, const std::string& text) {
  Bytes b{tag};
  b.insert(b.end(), text.begin(), text.end());
  return b;
}
void be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  const fs::path out = argv[1];
  cac::testing::TempDir tmp("cac-fuzz-seeds");

  // IDX: 3 images of 4x5 and their labels; the first byte puts the cut at the images' end.
  {
    Bytes images, labels;
    be32(images, 0x803), be32(images, 3), be32(images, 4), be32(images, 5);
    for (int i = 0; i < 60; ++i) images.push_back(uint8_t(i * 7));
    be32(labels, 0x801), be32(labels, 3);
    for (uint8_t l : {0, 7, 9}) labels.push_back(l);
    Bytes in{uint8_t(255 * images.size() / (images.size() + labels.size()) + 1)};
    in.insert(in.end(), images.begin(), images.end());
    in.insert(in.end(), labels.begin(), labels.end());
    put(out / "idx", "three-images", in);
  }
  // CIFAR: two CIFAR-10 records (also read as CIFAR-100 with a different record size).
  {
    Bytes r = cac::testing::cifar10_records(1);
    r.resize(2 * 3073);
    put(out / "cifar", "two-records", r);
    Bytes r100 = cac::testing::cifar100_one_per_class();
    r100.resize(3074);
    put(out / "cifar", "cifar100-record", r100);
  }
  // SVHN: two images with double labels.
  if (cac::testing::write_svhn(tmp / "svhn.mat", 2, {1, 10})) put(out / "svhn", "two-images", slurp(tmp / "svhn.mat"));
  if (cac::testing::write_svhn(tmp / "svhn-z.mat", 2, {3, 4}, true, /*compressed=*/true))
    put(out / "svhn", "two-images-compressed", slurp(tmp / "svhn-z.mat"));
  // JPEG: RGB and greyscale, square and not.
  if (cac::testing::write_jpeg(tmp / "rgb.jpg", 8, 8, false, 100)) put(out / "jpeg", "rgb-8x8", slurp(tmp / "rgb.jpg"));
  if (cac::testing::write_jpeg(tmp / "grey.jpg", 12, 5, true, 30)) put(out / "jpeg", "grey-12x5", slurp(tmp / "grey.jpg"));
  // PNG: RGB with rows of every filter type, and an interlaced 2-bit palette image (scripts/fuzz.sh
  // adds libpng's fixtures from tests/data/png).
  {
    cac::testing::PngParts p;
    p.width = 6, p.height = 5;
    for (int y = 0; y < 5; ++y) {
      p.scanlines.push_back(uint8_t(y));
      for (int i = 0; i < 18; ++i) p.scanlines.push_back(uint8_t(i * 11 + y));
    }
    put(out / "png", "rgb-6x5-filters", cac::testing::png_bytes(p));
    cac::testing::PngParts q;
    q.width = 3, q.height = 3, q.depth = 2, q.colour = 3, q.interlace = 1;
    q.palette = {255, 0, 0, 0, 255, 0, 0, 0, 255};
    // Adam7 passes of a 3x3 image: pass 1 (1x1), pass 4 (1x1), pass 5 (2x1), pass 6 (1x2), pass 7 (3x1).
    q.scanlines = {0, 0x40, 0, 0x80, 0, 0x50, 0, 0x00, 0, 0x40, 0, 0x24};
    put(out / "png", "palette-3x3-adam7", cac::testing::png_bytes(q));
  }
  // Checkpoint: the tensors fuzz_checkpoint restores, plus resume metadata.
  {
    cac::Tensor w = cac::Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
    cac::Tensor b = cac::Tensor::from_vector(std::vector<float>{7, 8, 9}, {3});
    cac::save_safetensors(tmp / "ckpt.safetensors", {{"fc.weight", w}, {"fc.bias", b}},
                          {{"epochs_done", "3"}, {"best_metric", "0.25"}});
    put(out / "checkpoint", "fc", slurp(tmp / "ckpt.safetensors"));
  }
  // JSON records (tag byte = which reader).
  {
    cac::app::RunConfig c;
    c.data_dir = "/data";
    c.out = "/runs/x";
    c.epochs = {2, 1};
    c.lrs = {0.01, 0.001};
    put(out / "records", "config", tagged(0, c.to_json()));
    cac::app::Deployment d;
    d.method = "cac";
    d.arch = "classifier32";
    d.num_classes = 2;
    d.channels = 3;
    d.mean = {0.5f, 0.5f, 0.5f};
    d.std = {0.25f, 0.25f, 0.25f};
    d.anchors = {10, 0, 0, 10};
    d.threshold = 1.5;
    d.class_names = {"cat", "dog"};
    put(out / "records", "deploy", tagged(1, d.to_json()));
    put(out / "records", "split-indices", tagged(2, R"({"known": [0, 1, 4], "unknown": [2, 3]})"));
    put(out / "records", "split-names", tagged(3, R"({"known": ["cat", "dog"], "unknown": ["car"]})"));
    put(out / "records", "datasets",
        tagged(4, R"({"CIFAR10": {"image_size": 32, "channels": 3, "batch": 128, "cac_epochs": [15, 15],
                     "learnt_epochs": [10], "lrs": [0.01, 0.001], "weight_decay": 0, "dropout": 0.2, "flip_p": 0.5,
                     "rotate_deg": 0, "crop_scale_min": 0.8, "val_fraction": 0.2, "flip_for_class_means": true}})"));
    cac::data::cached_normalisation(cac::fuzz::normalisation_subset(), "fuzz", tmp / "norm.json");
    const Bytes norm = slurp(tmp / "norm.json");
    put(out / "records", "normalisation", tagged(5, std::string(norm.begin(), norm.end())));
  }
  std::printf("fuzz_seeds: wrote the starting corpora under %s\n", out.string().c_str());
  return 0;
}
