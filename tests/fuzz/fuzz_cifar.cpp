// The CIFAR-10 and CIFAR-100 binary readers on one test-set file.
#include "data/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string c10 = cac::fuzz::write_input("test_batch.bin", data, size);
  const std::string c100 = cac::fuzz::write_input("test.bin", data, size);
  const std::string dir = cac::fuzz::scratch_dir().string();
  cac::fuzz::expect_success_or_clean_error("test_batch.bin", [&] {
    const cac::data::ImageSet s = cac::data::read_cifar10(dir, false);
    for (int64_t i = 0; i < s.size(); ++i)
      if (s.labels.data<int64_t>()[i] < 0 || s.labels.data<int64_t>()[i] > 9) std::abort();
  });
  cac::fuzz::expect_success_or_clean_error("test.bin", [&] {
    std::vector<int64_t> coarse;
    const cac::data::ImageSet s = cac::data::read_cifar100(dir, false, &coarse);
    if (int64_t(coarse.size()) != s.size()) std::abort();
  });
  return 0;
}
