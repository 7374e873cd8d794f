#include "tests/fake_datasets.h"

#include <jpeglib.h>
#include <matio.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <unistd.h>

namespace fs = std::filesystem;

namespace cac::testing {

void write_bytes(const std::string& path, const std::vector<uint8_t>& b, bool gzip) {
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, b.data(), unsigned(b.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  }
}

TempDir::TempDir(const std::string& tag) {
  static int counter = 0;
  p = fs::temp_directory_path() / (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::create_directories(p);
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(p, ec);
}

void write_mnist_idx(const std::string& dir, int per_class) {
  for (std::string part : {"train", "t10k"}) {
    const uint32_t n = uint32_t(10 * per_class);
    std::vector<uint8_t> img, lab;
    auto put = [](std::vector<uint8_t>& v, uint32_t x) {
      for (int s = 24; s >= 0; s -= 8) v.push_back(uint8_t(x >> s));
    };
    put(img, 0x803), put(img, n), put(img, 28), put(img, 28);
    put(lab, 0x801), put(lab, n);
    for (uint32_t i = 0; i < n; ++i) {
      const int c = int(i % 10);
      lab.push_back(uint8_t(c));
      for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) img.push_back(uint8_t((y / 3 == c ? 200 : 20) + (i * 7 + x) % 13));
    }
    write_bytes(dir + "/" + part + "-images-idx3-ubyte.gz", img, true);
    write_bytes(dir + "/" + part + "-labels-idx1-ubyte.gz", lab, true);
  }
}

std::vector<uint8_t> cifar10_records(int per_class) {
  std::vector<uint8_t> v;
  for (int r = 0; r < 10 * per_class; ++r) {
    v.push_back(uint8_t(r % 10));
    for (int p = 0; p < 3072; ++p) v.push_back(uint8_t(p + r));
  }
  return v;
}

std::vector<uint8_t> cifar100_one_per_class() {
  std::vector<uint8_t> v;
  for (int r = 0; r < 100; ++r) {
    v.push_back(uint8_t(r / 5));
    v.push_back(uint8_t(r));
    for (int p = 0; p < 3072; ++p) v.push_back(uint8_t(p));
  }
  return v;
}

bool write_svhn(const std::string& path, int n, const std::vector<double>& y, bool with_y, bool compressed) {
  mat_t* mat = Mat_CreateVer(path.c_str(), nullptr, MAT_FT_MAT5);
  if (mat == nullptr) return false;
  std::vector<uint8_t> x(size_t(n) * 3072);
  for (size_t i = 0; i < x.size(); ++i) x[i] = uint8_t(i % 251);
  size_t xd[4] = {32, 32, 3, size_t(n)};
  matvar_t* xv = Mat_VarCreate("X", MAT_C_UINT8, MAT_T_UINT8, 4, xd, x.data(), 0);
  const matio_compression how = compressed ? MAT_COMPRESSION_ZLIB : MAT_COMPRESSION_NONE;
  Mat_VarWrite(mat, xv, how);
  Mat_VarFree(xv);
  if (with_y) {
    size_t yd[2] = {y.size(), 1};
    std::vector<double> yy = y;
    matvar_t* yv = Mat_VarCreate("y", MAT_C_DOUBLE, MAT_T_DOUBLE, 2, yd, yy.data(), 0);
    Mat_VarWrite(mat, yv, how);
    Mat_VarFree(yv);
  }
  Mat_Close(mat);
  return true;
}

void write_fp_operating_point_files(const std::string& dir, int train_per_class, int test_per_class, int svhn) {
  for (int b = 1; b <= 5; ++b)
    write_bytes(dir + "/cifar-10-batches-bin/data_batch_" + std::to_string(b) + ".bin", cifar10_records(train_per_class), false);
  write_bytes(dir + "/cifar-10-batches-bin/test_batch.bin", cifar10_records(test_per_class), false);
  write_bytes(dir + "/cifar-100-binary/test.bin", cifar100_one_per_class(), false);
  std::vector<double> y;
  for (int i = 0; i < svhn; ++i) y.push_back(1 + i % 10);
  write_svhn(dir + "/test_32x32.mat", svhn, y);
}

bool write_jpeg(const std::string& path, int w, int h, bool grey, uint8_t base) {
  fs::create_directories(fs::path(path).parent_path());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, f);
  c.image_width = JDIMENSION(w);
  c.image_height = JDIMENSION(h);
  c.input_components = grey ? 1 : 3;
  c.in_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 100, TRUE);
  jpeg_start_compress(&c, TRUE);
  std::vector<uint8_t> row(size_t(w) * (grey ? 1 : 3), base);
  while (c.next_scanline < c.image_height) {
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::fclose(f);
  return true;
}

namespace {
void png_chunk(std::vector<uint8_t>& out, const std::string& type, const std::vector<uint8_t>& data) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(data.size() >> s));
  const size_t start = out.size();
  out.insert(out.end(), type.begin(), type.end());
  out.insert(out.end(), data.begin(), data.end());
  const uint32_t crc = uint32_t(crc32(0, out.data() + start, uInt(out.size() - start)));
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(crc >> s));
}
}  // namespace

std::vector<uint8_t> png_bytes(const PngParts& p) {
  std::vector<uint8_t> out{137, 80, 78, 71, 13, 10, 26, 10};
  std::vector<uint8_t> ihdr;
  for (uint32_t v : {p.width, p.height})
    for (int s = 24; s >= 0; s -= 8) ihdr.push_back(uint8_t(v >> s));
  ihdr.insert(ihdr.end(), {p.depth, p.colour, 0, 0, p.interlace});
  png_chunk(out, "IHDR", ihdr);
  for (const auto& [type, data] : p.extra) png_chunk(out, type, data);
  if (!p.palette.empty()) png_chunk(out, "PLTE", p.palette);
  std::vector<uint8_t> idat = p.idat;
  if (idat.empty()) {
    uLongf n = compressBound(uLong(p.scanlines.size()));
    idat.resize(n);
    compress2(idat.data(), &n, p.scanlines.data(), uLong(p.scanlines.size()), 6);
    idat.resize(n);
  }
  png_chunk(out, "IDAT", idat);
  png_chunk(out, "IEND", {});
  return out;
}

std::vector<uint8_t> plain_scanlines(int w, int h, int channels, uint8_t fill) {
  std::vector<uint8_t> s;
  for (int y = 0; y < h; ++y) {
    s.push_back(0);
    s.insert(s.end(), size_t(w) * channels, fill);
  }
  return s;
}

bool write_png(const std::string& path, int w, int h, uint8_t base) {
  PngParts p;
  p.width = uint32_t(w), p.height = uint32_t(h);
  p.scanlines = plain_scanlines(w, h, 3, base);
  const std::vector<uint8_t> b = png_bytes(p);
  write_bytes(path, b, false);
  std::error_code ec;
  return fs::file_size(path, ec) == b.size() && !ec;
}

void write_image_folder(const std::string& dir, const std::vector<std::string>& classes, int per_class_train,
                        int per_class_test, int w, int h) {
  for (size_t k = 0; k < classes.size(); ++k)
    for (auto [part, n] : {std::pair<const char*, int>{"train", per_class_train}, {"test", per_class_test}})
      for (int i = 0; i < n; ++i)
        write_jpeg(dir + "/" + part + "/" + classes[k] + "/img" + std::to_string(i) + ".jpg", w, h, false,
                   uint8_t(30 + 60 * k + 3 * i));
}

}  // namespace cac::testing
