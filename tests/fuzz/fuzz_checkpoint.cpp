// Checkpoints: load_safetensors, then restoring a small model's tensors from what it read (as
// cac_train --resume and cac_eval do).
#include "core/tensor.h"
#include "models/checkpoint.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cac::fuzz::write_input("last.safetensors", data, size);
  cac::fuzz::expect_success_or_clean_error(path, [&] {
    const cac::Safetensors st = cac::load_safetensors(path);
    for (const auto& [name, t] : st.tensors)
      if (int64_t(t.nbytes()) != t.numel() * int64_t(cac::dtype_size(t.dtype()))) std::abort();
    cac::Tensor w = cac::Tensor::zeros({2, 3});
    cac::Tensor b = cac::Tensor::zeros({3});
    cac::restore_tensors(st, {{"fc.weight", w}, {"fc.bias", b}}, path);
  });
  return 0;
}
