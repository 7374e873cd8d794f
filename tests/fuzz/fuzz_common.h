#pragma once
// What every fuzz target checks: a parser fed arbitrary bytes either succeeds or throws cac::Error
// whose message names the file it read. Anything else (a crash, a sanitizer report, another
// exception type, a message that does not say which file is bad) aborts, so libFuzzer keeps the
// input as a finding. Inputs are written to a private folder in /dev/shm because the readers take
// paths, as the programs do.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "data/dataset.h"
#include "data/readers.h"

namespace cac::fuzz {

inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    auto d = base / ("cac-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  if (!f.good()) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path;
}

// Runs fn; a cac::Error must mention `must_name` (the file the user would have to fix).
template <class Fn>
void expect_success_or_clean_error(const std::string& must_name, Fn&& fn) {
  try {
    fn();
  } catch (const cac::Error& e) {
    if (std::string(e.what()).find(must_name) == std::string::npos) {
      std::fprintf(stderr, "fuzz: the error does not name %s: %s\n", must_name.c_str(), e.what());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: an exception other than cac::Error escaped: %s\n", e.what());
    std::abort();
  }
}

// The image targets (fuzz_jpeg, fuzz_png): the input as `file` in a one-class folder, decoded by
// `decode` (which must give w x h RGB), then read by the image-folder reader, resizing to 20x20.
template <class Decode>
void image_file_target(const uint8_t* data, size_t size, const std::string& folder, const std::string& file,
                       Decode&& decode) {
  std::filesystem::create_directories(scratch_dir() / folder / "cls");
  const std::string path = write_input(folder + "/cls/" + file, data, size);
  expect_success_or_clean_error(path, [&] {
    int w = 0, h = 0;
    const std::vector<uint8_t> px = decode(path, &w, &h);
    if (w <= 0 || h <= 0 || px.size() != size_t(w) * h * 3) std::abort();
  });
  expect_success_or_clean_error(path, [&] {
    const cac::data::ImageSet s = cac::data::read_image_folder((scratch_dir() / folder).string(), 20, nullptr, 1);
    if (s.size() != 1 || s.images.dim(1) != 20 || s.images.dim(2) != 20) std::abort();
  });
}

// fuzz_records' normalisation cache is keyed by this subset (four 2x2 RGB images); the seed
// corpus holds a valid cache entry for it.
inline const cac::data::Subset& normalisation_subset() {
  static const cac::data::ImageSet set = [] {
    cac::data::ImageSet s;
    s.name = "fuzz";
    s.images = cac::Tensor::empty({4, 2, 2, 3}, cac::DType::U8);
    for (int64_t i = 0; i < s.images.numel(); ++i) s.images.data<uint8_t>()[i] = uint8_t(i * 37);
    s.labels = cac::Tensor::from_vector(std::vector<int64_t>{0, 1, 0, 1}, {4});
    return s;
  }();
  static const cac::data::Subset sub{&set, {0, 1, 2, 3}, {0, 1, 0, 1}};
  return sub;
}

}  // namespace cac::fuzz
