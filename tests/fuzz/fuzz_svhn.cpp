// The SVHN reader (MATLAB v5 .mat through matio) on one file; a successful read must hold labels
// 0..9 for every image.
#include "data/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cac::fuzz::write_input("test_32x32.mat", data, size);
  cac::fuzz::expect_success_or_clean_error(path, [&] {
    const cac::data::ImageSet s = cac::data::read_svhn(path, "fuzz");
    if (s.labels.numel() != s.images.dim(0)) std::abort();
    for (int64_t i = 0; i < s.size(); ++i)
      if (s.labels.data<int64_t>()[i] < 0 || s.labels.data<int64_t>()[i] > 9) std::abort();
  });
  return 0;
}
