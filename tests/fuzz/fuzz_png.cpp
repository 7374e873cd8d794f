// PNG decoding as the image-folder reader and cac_predict use it: decode_image_rgb (which tells PNG
// from JPEG by the first bytes), then the folder reader, which also resizes (to 20x20 here).
#include "data/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cac::fuzz::image_file_target(data, size, "png-images", "a.png", cac::data::decode_image_rgb);
  return 0;
}
