// PNG decoding as the image-folder reader and cac_predict use it: decode_image_rgb (which tells PNG
// from JPEG by the first bytes), then the folder reader, which also resizes (to 20x20 here).
#include "data/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string folder = [] {
    std::filesystem::create_directories(cac::fuzz::scratch_dir() / "png-images" / "cls");
    return (cac::fuzz::scratch_dir() / "png-images").string();
  }();
  const std::string path = cac::fuzz::write_input("png-images/cls/a.png", data, size);
  cac::fuzz::expect_success_or_clean_error(path, [&] {
    int w = 0, h = 0;
    const std::vector<uint8_t> px = cac::data::decode_image_rgb(path, &w, &h);
    if (w <= 0 || h <= 0 || px.size() != size_t(w) * h * 3) std::abort();
  });
  cac::fuzz::expect_success_or_clean_error(path, [&] {
    const cac::data::ImageSet s = cac::data::read_image_folder(folder, 20, nullptr, 1);
    if (s.size() != 1 || s.images.dim(1) != 20 || s.images.dim(2) != 20) std::abort();
  });
  return 0;
}
