// read_idx on an images file and a labels file cut from one input: the first byte says where
// (as a fraction of the rest), so the fuzzer can grow and shrink either file.
#include "data/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t rest = size - 1, cut = rest * data[0] / 255;
  const std::string images = cac::fuzz::write_input("images-idx3-ubyte", data + 1, cut);
  const std::string labels = cac::fuzz::write_input("labels-idx1-ubyte", data + 1 + cut, rest - cut);
  // The error names whichever file is bad; both paths share this folder.
  cac::fuzz::expect_success_or_clean_error(cac::fuzz::scratch_dir().string(), [&] {
    const cac::data::ImageSet s = cac::data::read_idx(images, labels, "fuzz");
    if (s.images.dim(0) != s.labels.numel()) std::abort();
  });
  return 0;
}
