// JPEG decoding as the image-folder reader and cac_predict use it: decode_jpeg_rgb, then the
// folder reader, which also resizes (to 20x20 here).
#include "data/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cac::fuzz::image_file_target(data, size, "images", "a.jpg", cac::data::decode_jpeg_rgb);
  return 0;
}
