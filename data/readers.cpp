#include "data/readers.h"

#include "core/files.h"
#include "core/progress.h"
#include "data/png.h"

#include <jpeglib.h>
#include <jerror.h>  // after jpeglib.h: JWRN_JPEG_EOF
#include <matio.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

namespace fs = std::filesystem;

namespace cac::data {

const uint8_t* ImageSet::image(int64_t i) const {
  const int64_t per = int64_t(height()) * width() * channels();
  return images.data<uint8_t>() + i * per;
}

void rgb_to_grey(const uint8_t* rgb, size_t pixels, uint8_t* grey) {
  for (size_t p = 0; p < pixels; ++p)
    grey[p] = uint8_t(std::lround(0.299 * rgb[3 * p] + 0.587 * rgb[3 * p + 1] + 0.114 * rgb[3 * p + 2]));
}

ImageSet with_channels(const ImageSet& set, int channels) {
  const int have = set.channels();
  CAC_CHECK((channels == 1 || channels == 3) && (have == 1 || have == 3),
            "{}: cannot convert images of {} channels to {} (1 or 3 only)", set.name, have, channels);
  if (have == channels) return set;
  const int64_t n = set.size(), pixels = n * set.height() * set.width();
  ImageSet out;
  out.name = set.name;
  out.labels = set.labels;
  out.images = Tensor::empty({n, set.height(), set.width(), channels}, DType::U8);
  const uint8_t* src = set.images.data<uint8_t>();
  uint8_t* dst = out.images.data<uint8_t>();
  if (channels == 1) {
    rgb_to_grey(src, size_t(pixels), dst);
  } else {
    for (int64_t p = 0; p < pixels; ++p) dst[3 * p] = dst[3 * p + 1] = dst[3 * p + 2] = src[p];
  }
  return out;
}

ImageSet concat(const std::vector<ImageSet>& parts, const std::string& name) {
  CAC_CHECK(!parts.empty(), "concat: no parts for {}", name);
  int64_t n = 0;
  for (const ImageSet& p : parts) {
    CAC_CHECK(p.images.dim(1) == parts[0].images.dim(1) && p.images.dim(2) == parts[0].images.dim(2) &&
                  p.images.dim(3) == parts[0].images.dim(3),
              "concat {}: image shapes {} and {} differ", name, shape_str(parts[0].images.shape()),
              shape_str(p.images.shape()));
    n += p.size();
  }
  ImageSet out;
  out.name = name;
  Shape s = parts[0].images.shape();
  s[0] = n;
  out.images = Tensor::empty(s, DType::U8);
  out.labels = Tensor::empty({n}, DType::I64);
  int64_t at = 0;
  for (const ImageSet& p : parts) {
    std::memcpy(out.images.data<uint8_t>() + at * (p.images.numel() / std::max<int64_t>(p.size(), 1)),
                p.images.data<uint8_t>(), p.images.nbytes());
    std::memcpy(out.labels.data<int64_t>() + at, p.labels.data<int64_t>(), p.labels.nbytes());
    at += p.size();
  }
  return out;
}

namespace {

// Whole file through zlib: gzread reads gzip and plain files alike.
std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
  CAC_CHECK(fs::exists(path), "{}: file not found", path);
  gzFile f = gzopen(path.c_str(), "rb");
  CAC_CHECK(f, "{}: cannot open", path);
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    const int n = gzread(f, buf.data(), unsigned(buf.size()));
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      fail("{}: corrupt or truncated gzip data ({})", path, msg);
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  int err = 0;
  const char* msg = gzerror(f, &err);
  const bool bad = err != Z_OK && err != Z_STREAM_END;
  const std::string m = bad ? msg : "";
  gzclose(f);
  CAC_CHECK(!bad, "{}: corrupt or truncated gzip data ({})", path, m);
  return out;
}

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

std::string first_existing(const std::string& dir, const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (fs::exists(fs::path(dir) / n)) return (fs::path(dir) / n).string();
  fail("{}: none of {} found (is this the dataset folder?)", dir, fmt::join(names, ", "));
}

}  // namespace

// ---- IDX ------------------------------------------------------------------------------------------
ImageSet read_idx(const std::string& images_path, const std::string& labels_path, const std::string& name) {
  std::vector<uint8_t> img = read_maybe_gzip(images_path);
  CAC_CHECK(img.size() >= 16, "{}: truncated IDX header ({} bytes)", images_path, img.size());
  CAC_CHECK(be32(img.data()) == 0x00000803, "{}: wrong magic number 0x{:08x} (expected 0x00000803 for "
            "IDX images)", images_path, be32(img.data()));
  const uint32_t n = be32(img.data() + 4), rows = be32(img.data() + 8), cols = be32(img.data() + 12);
  CAC_CHECK(rows > 0 && cols > 0 && rows <= 4096 && cols <= 4096, "{}: implausible image size {}x{}",
            images_path, rows, cols);
  const uint64_t want = 16 + uint64_t(n) * rows * cols;
  CAC_CHECK(img.size() == want, "{}: {} bytes for {} images of {}x{} (expected {}): truncated or corrupt",
            images_path, img.size(), n, rows, cols, want);
  std::vector<uint8_t> lab = read_maybe_gzip(labels_path);
  CAC_CHECK(lab.size() >= 8, "{}: truncated IDX header ({} bytes)", labels_path, lab.size());
  CAC_CHECK(be32(lab.data()) == 0x00000801, "{}: wrong magic number 0x{:08x} (expected 0x00000801 for "
            "IDX labels)", labels_path, be32(lab.data()));
  const uint32_t nl = be32(lab.data() + 4);
  CAC_CHECK(nl == n, "{} has {} labels but {} has {} images", labels_path, nl, images_path, n);
  CAC_CHECK(lab.size() == 8 + uint64_t(n), "{}: {} bytes for {} labels: truncated or corrupt",
            labels_path, lab.size(), n);
  ImageSet s;
  s.name = name;
  s.images = Tensor::empty({int64_t(n), int64_t(rows), int64_t(cols), 1}, DType::U8);
  std::memcpy(s.images.data<uint8_t>(), img.data() + 16, size_t(n) * rows * cols);
  s.labels = Tensor::empty({int64_t(n)}, DType::I64);
  int64_t* y = s.labels.data<int64_t>();
  for (uint32_t i = 0; i < n; ++i) {
    y[i] = lab[8 + i];
    CAC_CHECK(y[i] <= 9, "{}: label {} of item {} is outside 0..9", labels_path, y[i], i);
  }
  return s;
}

ImageSet read_mnist_dir(const std::string& dir, bool train, const std::string& name) {
  CAC_CHECK(fs::is_directory(dir), "{}: dataset folder not found", dir);
  const std::string p = train ? "train" : "t10k";
  const std::string images = first_existing(dir, {p + "-images-idx3-ubyte.gz", p + "-images-idx3-ubyte", p + "-images.idx3-ubyte"});
  const std::string labels = first_existing(dir, {p + "-labels-idx1-ubyte.gz", p + "-labels-idx1-ubyte", p + "-labels.idx1-ubyte"});
  return read_idx(images, labels, name + (train ? " train" : " test"));
}

// ---- CIFAR ----------------------------------------------------------------------------------------
namespace {
// Records of `label_bytes` label bytes then 3072 bytes of planar RGB 32x32 -> NHWC.
void read_cifar_file(const std::string& path, int label_bytes, int label_index, int64_t max_label,
                     std::vector<uint8_t>& images, std::vector<int64_t>& labels,
                     std::vector<int64_t>* other_labels) {
  std::vector<uint8_t> raw = read_maybe_gzip(path);
  const size_t rec = size_t(label_bytes) + 3072;
  CAC_CHECK(!raw.empty() && raw.size() % rec == 0, "{}: {} bytes is not a whole number of {}-byte "
            "records: truncated or not a CIFAR binary file", path, raw.size(), rec);
  const size_t n = raw.size() / rec;
  const size_t base = images.size();
  images.resize(base + n * 3072);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* r = raw.data() + i * rec;
    const int64_t l = r[label_index];
    CAC_CHECK(l <= max_label, "{}: label {} of record {} is outside 0..{}", path, l, i, max_label);
    labels.push_back(l);
    if (other_labels) other_labels->push_back(r[1 - label_index]);
    const uint8_t* px = r + label_bytes;
    uint8_t* out = images.data() + base + i * 3072;
    for (int p = 0; p < 1024; ++p)
      for (int c = 0; c < 3; ++c) out[p * 3 + c] = px[c * 1024 + p];
  }
}

ImageSet make_set(std::string name, const std::vector<uint8_t>& images, const std::vector<int64_t>& labels,
                  int h, int w, int c) {
  ImageSet s;
  s.name = std::move(name);
  const int64_t n = int64_t(labels.size());
  s.images = Tensor::empty({n, h, w, c}, DType::U8);
  std::memcpy(s.images.data<uint8_t>(), images.data(), images.size());
  s.labels = Tensor::from_vector(labels, {n});
  return s;
}
}  // namespace

ImageSet read_cifar10(const std::string& dir, bool train) {
  CAC_CHECK(fs::is_directory(dir), "{}: CIFAR-10 folder not found", dir);
  std::vector<uint8_t> images;
  std::vector<int64_t> labels;
  if (train) {
    for (int b = 1; b <= 5; ++b)
      read_cifar_file(first_existing(dir, {fmt::format("data_batch_{}.bin", b)}), 1, 0, 9, images, labels, nullptr);
  } else {
    read_cifar_file(first_existing(dir, {"test_batch.bin"}), 1, 0, 9, images, labels, nullptr);
  }
  return make_set(train ? "CIFAR10 train" : "CIFAR10 test", images, labels, 32, 32, 3);
}

ImageSet read_cifar100(const std::string& dir, bool train, std::vector<int64_t>* coarse) {
  CAC_CHECK(fs::is_directory(dir), "{}: CIFAR-100 folder not found", dir);
  std::vector<uint8_t> images;
  std::vector<int64_t> fine, coarse_l;
  read_cifar_file(first_existing(dir, {train ? "train.bin" : "test.bin"}), 2, 1, 99, images, fine, &coarse_l);
  for (size_t i = 0; i < coarse_l.size(); ++i)
    CAC_CHECK(coarse_l[i] <= 19, "{}/{}: coarse label {} of record {} is outside 0..19", dir,
              train ? "train.bin" : "test.bin", coarse_l[i], i);
  if (coarse) *coarse = coarse_l;
  return make_set(train ? "CIFAR100 train" : "CIFAR100 test", images, fine, 32, 32, 3);
}

std::vector<std::string> read_cifar100_fine_names(const std::string& dir) {
  const fs::path path = fs::path(dir) / "fine_label_names.txt";
  if (!fs::exists(path)) return {};
  std::ifstream f(path);
  std::vector<std::string> names;
  for (std::string line; std::getline(f, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  CAC_CHECK(names.size() == 100, "{}: expected the 100 CIFAR-100 class names, one per line, found {} (remove the "
            "file to show class numbers instead)", path.string(), names.size());
  return names;
}

// ---- SVHN (.mat, MATLAB v5 through matio) ---------------------------------------------------------
namespace {
// matio 1.5.23 allocates whatever a variable's header claims for its dimensions and name before it
// reads them, so a corrupt header of a few bytes asks for gigabytes.
// The MATLAB v5 element headers are walked here first, inflating the start of compressed ones, and
// those sizes checked. Other formats (v4, v7.3) are left to matio.
void check_mat5_headers(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::error_code ec;
  const uint64_t file_bytes = fs::file_size(path, ec);
  uint8_t head[128];
  if (ec || !f.read(reinterpret_cast<char*>(head), sizeof head)) return;  // matio names this
  const bool native = head[126] == 'I' && head[127] == 'M', swapped = head[126] == 'M' && head[127] == 'I';
  if (!native && !swapped) return;
  auto u32 = [&](const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return swapped ? __builtin_bswap32(v) : v;
  };
  auto pad8 = [](uint64_t n) { return (n + 7) / 8 * 8; };
  // A matrix's first sub-elements: array flags, dimensions, name (n bytes of it at p). `capacity`:
  // the most elements the variable's stored bytes can hold (at least one byte each).
  auto check_matrix = [&](const uint8_t* p, size_t n, uint64_t offset, uint64_t capacity) {
    enum Part { kFlags, kDims, kName };
    static const char* const part_names[] = {"array flags", "dimensions", "name"};
    size_t at = 0;
    for (int part = kFlags; part <= kName; ++part) {
      if (at + 8 > n) return;
      const uint32_t word = u32(p + at);
      uint64_t bytes = word >> 16, skip = 8;  // small element: size in the upper half, data in the tag
      if (bytes == 0) bytes = u32(p + at + 4), skip = 8 + pad8(bytes);
      // 64 dimensions and 4 KiB of name are far beyond any real variable.
      CAC_CHECK(bytes <= (part == kDims ? 64 * 8 : 4096), "{}: the variable at byte {} claims {} bytes of {}: corrupt "
                ".mat file", path, offset, bytes, part_names[part]);
      // matio reads the flags and dimensions at fixed places (the dimensions' tag 16 bytes into the
      // matrix, its size in the tag's second word) whatever the tags say, so the walk must not read
      // them differently (flags of another size, or a dimensions tag in the small format, would hide
      // a gigabyte-sized dimensions claim from this walk). MATLAB writes both in the full format, the
      // flags in 8 bytes; anything else is corrupt.
      CAC_CHECK(part == kName || (word >> 16) == 0, "{}: the variable at byte {} has its {} in the small-element "
                "format (at most 4 bytes), which MATLAB never writes for them: corrupt .mat file", path, offset, part_names[part]);
      CAC_CHECK(part != kFlags || bytes == 8, "{}: the variable at byte {} has {} bytes of array flags where "
                "MATLAB writes 8: corrupt .mat file", path, offset, bytes);
      const size_t data_at = skip == 8 ? at + 4 : at + 8;  // where the sub-element's data starts
      if (part == kFlags && skip > 8 && data_at + 4 <= n) {
        // matio also reads a struct's field names and a cell's elements, sized by their own headers,
        // while looking for X. SVHN files hold numeric arrays only, so only character (4) and
        // numeric (6..15) classes are read.
        const uint32_t cls = u32(p + data_at) & 0xff;
        CAC_CHECK(cls == 4 || (cls >= 6 && cls <= 15), "{}: the variable at byte {} is of MATLAB class {} (a cell, "
                  "struct, object or sparse array); an SVHN file holds only the numeric arrays X and y", path, offset,
                  cls);
      }
      if (part == kDims) {
        // matio allocates the product of the dimensions while looking for X, so it must fit what
        // the variable stores.
        if (data_at + bytes > n) return;
        uint64_t elements = 1;
        bool overflow = false;
        std::string shape;
        for (uint64_t k = 0; k + 4 <= bytes; k += 4) {
          const int32_t d = int32_t(u32(p + data_at + k));
          CAC_CHECK(d >= 0, "{}: the variable at byte {} has a negative dimension: corrupt .mat file", path, offset);
          overflow = overflow || __builtin_mul_overflow(elements, uint64_t(d), &elements);
          shape += (k ? "x" : "") + std::to_string(d);
        }
        CAC_CHECK(!overflow && elements <= capacity, "{}: the variable at byte {} claims {} elements but can hold at "
                  "most {}: corrupt or truncated .mat file", path, offset, shape, capacity);
      }
      at += size_t(skip);
    }
  };
  std::vector<uint8_t> buf, out;
  for (uint64_t offset = 128; offset + 8 <= file_bytes;) {
    uint8_t tag[8];
    f.seekg(std::streamoff(offset));
    if (!f.read(reinterpret_cast<char*>(tag), 8)) return;
    const uint32_t type = u32(tag);
    const uint64_t bytes = u32(tag + 4);
    if (type >> 16) {  // a small element at the top level: 8 bytes in all
      offset += 8;
      continue;
    }
    CAC_CHECK(bytes <= file_bytes - offset - 8, "{}: the variable at byte {} claims {} bytes but the file ends "
              "{} bytes later: truncated or corrupt", path, offset, bytes, file_bytes - offset - 8);
    buf.resize(size_t(std::min<uint64_t>(bytes, type == 15 ? 1 << 16 : 2048)));
    if (!f.read(reinterpret_cast<char*>(buf.data()), std::streamsize(buf.size()))) return;
    if (type == 14) {  // miMATRIX
      check_matrix(buf.data(), buf.size(), offset, bytes);
    } else if (type == 15) {  // miCOMPRESSED: a zlib stream holding one miMATRIX element
      out.assign(2048, 0);
      z_stream z{};
      if (inflateInit(&z) == Z_OK) {
        z.next_in = buf.data();
        z.avail_in = uInt(buf.size());
        z.next_out = out.data();
        z.avail_out = uInt(out.size());
        inflate(&z, Z_SYNC_FLUSH);
        const size_t got = out.size() - z.avail_out;
        inflateEnd(&z);
        // zlib cannot expand data more than 1032-fold.
        if (got >= 8 && u32(out.data()) == 14) check_matrix(out.data() + 8, got - 8, offset, bytes * 1032);
      }
    }
    offset += 8 + (type == 15 ? bytes : pad8(bytes));
  }
}
}  // namespace

ImageSet read_svhn(const std::string& path, const std::string& name) {
  CAC_CHECK(fs::exists(path), "{}: file not found", path);
  check_mat5_headers(path);
  mat_t* mat = Mat_Open(path.c_str(), MAT_ACC_RDONLY);
  CAC_CHECK(mat, "{}: not a readable MATLAB .mat file", path);
  struct Closer {
    mat_t* m;
    matvar_t* x = nullptr;
    matvar_t* y = nullptr;
    ~Closer() {
      if (x) Mat_VarFree(x);
      if (y) Mat_VarFree(y);
      Mat_Close(m);
    }
  } c{mat};
  // Headers first: the dimensions they claim are checked against the file's size before matio
  // allocates anything for the data (a corrupt header can claim terabytes in a few bytes).
  std::error_code ec;
  const uint64_t file_bytes = fs::file_size(path, ec);
  auto header = [&](const char* name, const char* what) {
    matvar_t* v = Mat_VarReadInfo(mat, name);
    CAC_CHECK(v, "{}: no variable '{}' ({})", path, name, what);
    return v;
  };
  // zlib cannot expand data more than 1032-fold, so a compressed variable can hold at most that.
  auto plausible = [&](const matvar_t* v, uint64_t bytes) {
    return bytes <= (v->compression == MAT_COMPRESSION_NONE ? file_bytes : file_bytes * 1032);
  };
  c.x = header("X", "expected SVHN cropped digits, X of 32x32x3xN");
  CAC_CHECK(c.x->rank == 4 && c.x->dims[0] == 32 && c.x->dims[1] == 32 && c.x->dims[2] == 3,
            "{}: X has rank {} and dims {}x{}x...; expected 32x32x3xN", path, c.x->rank,
            c.x->rank > 0 ? c.x->dims[0] : 0, c.x->rank > 1 ? c.x->dims[1] : 0);
  CAC_CHECK(c.x->class_type == MAT_C_UINT8 && !c.x->isComplex, "{}: X must be real uint8", path);
  const size_t n = c.x->dims[3];
  CAC_CHECK(n <= (uint64_t(1) << 40) / 3072 && plausible(c.x, uint64_t(n) * 3072),
            "{}: X claims {} images, more than the file's {} bytes can hold: corrupt or truncated", path, n, file_bytes);
  c.y = header("y", "the labels");
  size_t y_entries = 0;
  CAC_CHECK(c.y->rank == 2 && !__builtin_mul_overflow(c.y->dims[0], c.y->dims[1], &y_entries) && y_entries == n &&
                !c.y->isComplex && !c.y->isLogical,
            "{}: y must be a real Nx1 array with one label per image ({} images)", path, n);
  size_t label_bytes = 0;
  switch (c.y->class_type) {
    case MAT_C_DOUBLE: label_bytes = 8; break;
    case MAT_C_SINGLE: label_bytes = 4; break;
    case MAT_C_UINT8: label_bytes = 1; break;
    case MAT_C_INT32: label_bytes = 4; break;
    default: fail("{}: y has an unsupported numeric class {}", path, int(c.y->class_type));
  }
  CAC_CHECK(plausible(c.y, uint64_t(n) * label_bytes), "{}: y claims more labels than the file can hold: corrupt", path);
  const size_t c_y_dims[2] = {c.y->dims[0], c.y->dims[1]};
  Mat_VarFree(c.x);
  Mat_VarFree(c.y);
  c.x = c.y = nullptr;
  // Now the data, with the header checked again on what was actually read.
  c.x = Mat_VarRead(mat, "X");
  CAC_CHECK(c.x && c.x->rank == 4 && c.x->dims[3] == n && c.x->class_type == MAT_C_UINT8 && !c.x->isComplex &&
                c.x->data && c.x->nbytes >= n * 3072,
            "{}: X could not be read in full ({} images expected): truncated or corrupt", path, n);
  c.y = Mat_VarRead(mat, "y");
  CAC_CHECK(c.y && c.y->rank == 2 && c.y->dims[0] == c_y_dims[0] && c.y->dims[1] == c_y_dims[1] && !c.y->isComplex &&
                c.y->data_size == int(label_bytes) && (n == 0 || c.y->data) && c.y->nbytes >= n * label_bytes,
            "{}: y could not be read in full ({} labels expected): truncated or corrupt", path, n);
  std::vector<int64_t> labels(n);
  for (size_t i = 0; i < n; ++i) {
    double v = 0;
    switch (c.y->class_type) {
      case MAT_C_DOUBLE: v = static_cast<const double*>(c.y->data)[i]; break;
      case MAT_C_SINGLE: v = static_cast<const float*>(c.y->data)[i]; break;
      case MAT_C_UINT8: v = static_cast<const uint8_t*>(c.y->data)[i]; break;
      case MAT_C_INT32: v = static_cast<const int32_t*>(c.y->data)[i]; break;
      default: fail("{}: y has an unsupported numeric class {}", path, int(c.y->class_type));
    }
    CAC_CHECK(v >= 1 && v <= 10 && v == double(int64_t(v)), "{}: label {} of image {} is outside 1..10",
              path, v, i);
    labels[i] = int64_t(v) % 10;  // SVHN writes digit 0 as 10
  }
  // X is column-major: X(row, col, channel, n) at row + 32*col + 1024*channel + 3072*n.
  std::vector<uint8_t> images(n * 3072);
  const uint8_t* x = static_cast<const uint8_t*>(c.x->data);
  for (size_t i = 0; i < n; ++i)
    for (int r = 0; r < 32; ++r)
      for (int col = 0; col < 32; ++col)
        for (int ch = 0; ch < 3; ++ch)
          images[((i * 32 + r) * 32 + col) * 3 + ch] = x[r + 32 * col + 1024 * ch + 3072 * i];
  return make_set(name, images, labels, 32, 32, 3);
}

// ---- JPEG -----------------------------------------------------------------------------------------
namespace {
// Larger images are refused before anything is allocated: a corrupt or hostile header can claim
// 65535 x 65535 pixels (12 GiB of RGB) in a few hundred bytes. 100 megapixels is above any camera
// photo a user would feed a 32x32 or 64x64 network.
constexpr uint64_t kMaxJpegPixels = 100'000'000;

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};
void jpeg_fail(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->message);
  std::longjmp(e->jump, 1);
}
// Warnings are ignored (libjpeg's default), except running out of data: libjpeg then pads the image
// with grey and carries on, which would train on a half-grey picture. PIL refuses truncated files too.
void jpeg_message(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}
// Plain C control flow between setjmp and the decode (no destructors skipped by longjmp).
bool decode_into(FILE* f, std::vector<uint8_t>* out, int* w, int* h, char* err) {
  jpeg_decompress_struct cinfo;
  JpegError jerr;
  cinfo.err = jpeg_std_error(&jerr.mgr);
  jerr.mgr.error_exit = jpeg_fail;
  jerr.mgr.emit_message = jpeg_message;
  if (setjmp(jerr.jump)) {
    std::snprintf(err, JMSG_LENGTH_MAX, "%s", jerr.message);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  if (uint64_t(cinfo.image_width) * cinfo.image_height > kMaxJpegPixels) {
    std::snprintf(err, JMSG_LENGTH_MAX, "%ux%u pixels is over the reader's limit of %llu megapixels; resize it first",
                  cinfo.image_width, cinfo.image_height, (unsigned long long)(kMaxJpegPixels / 1'000'000));
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  cinfo.out_color_space = JCS_RGB;  // greyscale and YCbCr alike come out as RGB
  jpeg_start_decompress(&cinfo);
  *w = int(cinfo.output_width);
  *h = int(cinfo.output_height);
  out->resize(size_t(*w) * *h * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->data() + size_t(cinfo.output_scanline) * *w * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

// Runs fn(i) for i in [0, n) on `threads` threads (0 = hardware concurrency); rethrows the first error.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& fn) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::string first_error;
  auto work = [&] {
    for (int64_t i; (i = next++) < n;) {
      try {
        fn(i);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_error.empty()) first_error = e.what();
        next = n;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  CAC_CHECK(first_error.empty(), "{}", first_error);
}

// Bilinear resize of an RGB image (align_corners = false, as PIL/torchvision do for upsampling).
std::vector<uint8_t> resize_rgb(const std::vector<uint8_t>& src, int w, int h, int size) {
  std::vector<uint8_t> out(size_t(size) * size * 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x) {
      const float sy = std::clamp((y + 0.5f) * h / size - 0.5f, 0.f, float(h - 1));
      const float sx = std::clamp((x + 0.5f) * w / size - 0.5f, 0.f, float(w - 1));
      const int y0 = int(sy), x0 = int(sx), y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
      const float fy = sy - y0, fx = sx - x0;
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int yy, int xx) { return float(src[(size_t(yy) * w + xx) * 3 + c]); };
        const float v = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
        out[(size_t(y) * size + x) * 3 + c] = uint8_t(std::clamp(v + 0.5f, 0.f, 255.f));
      }
    }
  return out;
}

// The images that decoded, the others reported on stderr (how many, and the first's reason).
ImageSet without_unreadable(const std::string& name, std::vector<uint8_t>& images, const std::vector<int64_t>& labels,
                            const std::vector<std::string>& errors, int size) {
  const size_t px = size_t(size) * size * 3;
  std::vector<int64_t> kept_labels;
  size_t kept = 0, skipped = 0;
  const std::string* first = nullptr;
  for (size_t i = 0; i < errors.size(); ++i) {
    if (!errors[i].empty()) {
      if (!first) first = &errors[i];
      ++skipped;
      continue;
    }
    if (kept != i) std::memmove(images.data() + kept * px, images.data() + i * px, px);
    kept_labels.push_back(labels[i]);
    ++kept;
  }
  CAC_CHECK(kept > 0, "{}: none of its {} images could be read (the first: {})", name, errors.size(),
            first ? *first : std::string());
  if (skipped > 0)
    std::fprintf(stderr, "%s: skipped %zu of %zu images that could not be read (--skip-bad-images); the first: %s\n",
                 name.c_str(), skipped, errors.size(), first->c_str());
  images.resize(kept * px);
  return make_set(name, images, kept_labels, size, size, 3);
}

// The first of `files` that decodes (every one with BadImages::Stop): its width and height.
std::pair<int, int> first_image_size(const std::string& name, const std::vector<std::string>& files, BadImages bad) {
  for (const std::string& f : files) {
    int w = 0, h = 0;
    try {
      decode_image_rgb(f, &w, &h);
      return {w, h};
    } catch (const Error&) {
      if (bad == BadImages::Stop) throw;
    }
  }
  fail("{}: none of its {} images could be read", name, files.size());
}

// Decodes `files` into one NHWC RGB set of size x size (size 0: all must share the first's size).
// With BadImages::Skip an image that cannot be read is left out and counted (on stderr).
ImageSet decode_set(const std::string& name, const std::vector<std::string>& files,
                    const std::vector<int64_t>& labels, int size, int threads, BadImages bad = BadImages::Stop) {
  CAC_CHECK(!files.empty(), "{}: no images found", name);
  if (size <= 0) {
    const auto [w0, h0] = first_image_size(name, files, bad);
    CAC_CHECK(w0 == h0, "{}: images must be square to be used without resizing ({} is {}x{})", name,
              files[0], w0, h0);
    size = w0;
  }
  std::vector<uint8_t> images(files.size() * size_t(size) * size * 3);
  std::vector<std::string> errors(files.size());  // per image, written by its own worker
  // Large folders (TinyImageNet's 110,000 JPEGs, users' own) take minutes: a progress line on
  // stderr, silent for sets that decode within 2 s.
  ProgressLine::Options po;
  po.quiet_below_s = 2;
  ProgressLine progress("", "decoding " + name, int64_t(files.size()), po);
  std::atomic<int64_t> decoded{0};
  parallel_for(int64_t(files.size()), threads, [&](int64_t i) {
    int w = 0, h = 0;
    std::vector<uint8_t> px;
    try {
      px = decode_image_rgb(files[size_t(i)], &w, &h);
    } catch (const Error& e) {
      if (bad == BadImages::Stop) throw;
      errors[size_t(i)] = e.what();
      return;
    }
    if (w != size || h != size) px = resize_rgb(px, w, h, size);
    std::memcpy(images.data() + size_t(i) * size * size * 3, px.data(), px.size());
    progress.update(++decoded);
  });
  return bad == BadImages::Skip ? without_unreadable(name, images, labels, errors, size)
                                : make_set(name, images, labels, size, size, 3);
}

}  // namespace

std::vector<std::string> list_images(const std::string& root) {
  std::vector<std::string> files;
  // Symbolic links to folders are not followed (no cycles); an entry whose status cannot be read (a
  // link loop, a dangling link) is no image file and is passed over.
  std::error_code ec;
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  CAC_CHECK(!ec, "{}: cannot read this folder ({})", root, ec.message());
  for (const fs::recursive_directory_iterator end; it != end;) {
    std::error_code status;
    if (is_image_name(it->path()) && it->is_regular_file(status) && !status) files.push_back(it->path().string());
    it.increment(ec);
    CAC_CHECK(!ec, "{}: cannot read a folder below it ({})", root, ec.message());
  }
  std::sort(files.begin(), files.end());
  return files;
}

ImageSet read_image_tree(const std::string& root, int size, const std::string& name, int threads) {
  CAC_CHECK(fs::is_directory(root), "{}: image folder not found", root);
  const std::vector<std::string> files = list_images(root);
  CAC_CHECK(!files.empty(), "{}: no JPEG or PNG images in this folder or below it", root);
  return decode_set(name, files, std::vector<int64_t>(files.size(), 0), size, threads);
}

bool is_image_name(const std::filesystem::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), ::tolower);
  return e == ".jpg" || e == ".jpeg" || e == ".png";
}

std::vector<uint8_t> decode_jpeg_rgb(const std::string& path, int* width, int* height) {
  FILE* f = std::fopen(path.c_str(), "rb");
  CAC_CHECK(f, "{}: cannot open", path);
  std::vector<uint8_t> out;
  char err[JMSG_LENGTH_MAX] = {0};
  const bool ok = decode_into(f, &out, width, height, err);
  std::fclose(f);
  CAC_CHECK(ok, "{}: not a decodable JPEG ({})", path, err);
  return out;
}

std::vector<uint8_t> decode_image_rgb(const std::string& path, int* width, int* height) {
  uint8_t head[8] = {0};
  size_t got = 0;
  {
    std::ifstream f(path, std::ios::binary);
    CAC_CHECK(f.good(), "{}: cannot open", path);
    f.read(reinterpret_cast<char*>(head), sizeof head);
    got = size_t(f.gcount());
  }
  if (has_png_signature(head, got)) return decode_png_rgb(path, width, height);
  CAC_CHECK(got >= 3 && head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff,
            "{}: neither a JPEG nor a PNG image (the first bytes are neither format's signature)", path);
  return decode_jpeg_rgb(path, width, height);
}

// ---- TinyImageNet ---------------------------------------------------------------------------------
namespace {
constexpr char kCacheMagic[8] = {'C', 'A', 'C', 'T', 'I', 'N', '1', '\0'};

void write_cache(const std::string& path, const TinyImageNet& t, uint64_t signature) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  TempFile tmp(path);
  {
    std::ofstream f(tmp.path(), std::ios::binary);
    CAC_CHECK(f.good(), "{}: cannot write the decoded-image cache (choose another --cache-dir)", tmp.path());
    const uint64_t header[4] = {signature, uint64_t(t.wnids.size()), uint64_t(t.train.size()), uint64_t(t.val.size())};
    f.write(kCacheMagic, 8);
    f.write(reinterpret_cast<const char*>(header), sizeof header);
    for (const auto& w : t.wnids) f.write(w.c_str(), std::streamsize(w.size() + 1));
    for (const ImageSet* s : {&t.train, &t.val}) {
      f.write(reinterpret_cast<const char*>(s->labels.data<int64_t>()), std::streamsize(s->labels.nbytes()));
      f.write(reinterpret_cast<const char*>(s->images.data<uint8_t>()), std::streamsize(s->images.nbytes()));
    }
    CAC_CHECK(f.good(), "{}: write failed (disk full?)", tmp.path());
  }
  tmp.commit();  // a crash never leaves a half-written cache under the real name
}

bool read_cache(const std::string& path, uint64_t signature, TinyImageNet* t) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  char magic[8];
  uint64_t header[4];
  if (!f.read(magic, 8) || std::memcmp(magic, kCacheMagic, 8) != 0) return false;
  if (!f.read(reinterpret_cast<char*>(header), sizeof header) || header[0] != signature) return false;
  if (header[1] == 0 || header[1] > 1000 || header[2] > 10'000'000 || header[3] > 10'000'000) return false;
  const uint64_t expect = 8 + sizeof header + (header[2] + header[3]) * (8 + 64 * 64 * 3);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec || size < expect) return false;
  t->wnids.clear();
  for (uint64_t i = 0; i < header[1]; ++i) {
    std::string w;
    if (!std::getline(f, w, '\0')) return false;
    t->wnids.push_back(w);
  }
  if (size != expect + [&] { uint64_t s = 0; for (auto& w : t->wnids) s += w.size() + 1; return s; }()) return false;
  for (auto [set, n, name] : {std::tuple{&t->train, header[2], "TinyImageNet train"}, std::tuple{&t->val, header[3], "TinyImageNet val"}}) {
    set->name = name;
    set->labels = Tensor::empty({int64_t(n)}, DType::I64);
    set->images = Tensor::empty({int64_t(n), 64, 64, 3}, DType::U8);
    if (!f.read(reinterpret_cast<char*>(set->labels.data<int64_t>()), std::streamsize(set->labels.nbytes()))) return false;
    if (!f.read(reinterpret_cast<char*>(set->images.data<uint8_t>()), std::streamsize(set->images.nbytes()))) return false;
    for (int64_t i = 0; i < int64_t(n); ++i)
      if (set->labels.data<int64_t>()[i] < 0 || set->labels.data<int64_t>()[i] >= int64_t(header[1])) return false;
  }
  return true;
}
}  // namespace

TinyImageNet read_tinyimagenet(const std::string& root, const std::string& cache_dir, int threads) {
  CAC_CHECK(fs::is_directory(root), "{}: TinyImageNet folder not found (expected tiny-imagenet-200/)", root);
  const fs::path wn = fs::path(root) / "wnids.txt";
  CAC_CHECK(fs::exists(wn), "{}: missing (not a TinyImageNet folder?)", wn.string());
  TinyImageNet t;
  {
    std::ifstream f(wn);
    for (std::string line; std::getline(f, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (!line.empty()) t.wnids.push_back(line);
    }
  }
  CAC_CHECK(!t.wnids.empty(), "{}: lists no classes", wn.string());
  std::sort(t.wnids.begin(), t.wnids.end());
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < t.wnids.size(); ++i) index[t.wnids[i]] = int64_t(i);

  std::vector<std::string> train_files, val_files;
  std::vector<int64_t> train_labels, val_labels;
  for (const auto& w : t.wnids) {
    const fs::path dir = fs::path(root) / "train" / w / "images";
    CAC_CHECK(fs::is_directory(dir), "{}: missing training folder for class {}", dir.string(), w);
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir))
      if (is_image_name(e.path())) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    for (auto& f : files) {
      train_files.push_back(f);
      train_labels.push_back(index[w]);
    }
  }
  const fs::path ann = fs::path(root) / "val" / "val_annotations.txt";
  CAC_CHECK(fs::exists(ann), "{}: missing", ann.string());
  {
    std::ifstream f(ann);
    int line_no = 0;
    for (std::string line; std::getline(f, line);) {
      ++line_no;
      if (line.empty()) continue;
      const size_t tab = line.find('\t'), tab2 = line.find('\t', tab + 1);
      CAC_CHECK(tab != std::string::npos, "{}:{}: expected '<file>\\t<wnid>...'", ann.string(), line_no);
      const std::string file = line.substr(0, tab), w = line.substr(tab + 1, tab2 - tab - 1);
      auto it = index.find(w);
      CAC_CHECK(it != index.end(), "{}:{}: class {} is not in wnids.txt", ann.string(), line_no, w);
      val_files.push_back((fs::path(root) / "val" / "images" / file).string());
      val_labels.push_back(it->second);
    }
  }
  // The cache is valid for exactly this listing: signature = hash of counts and file names.
  uint64_t sig = 1469598103934665603ull;
  for (const auto* list : {&train_files, &val_files})
    for (const auto& f : *list)
      for (char ch : fs::path(f).filename().string()) sig = (sig ^ uint8_t(ch)) * 1099511628211ull;
  sig ^= train_files.size() * 31 + val_files.size();
  const fs::path cache = fs::path(cache_dir.empty() ? root : cache_dir) / "tinyimagenet-decoded.cache";
  if (read_cache(cache.string(), sig, &t)) return t;
  t.train = decode_set("TinyImageNet train", train_files, train_labels, 64, threads);
  t.val = decode_set("TinyImageNet val", val_files, val_labels, 64, threads);
  write_cache(cache.string(), t, sig);
  return t;
}

std::vector<std::string> tinyimagenet_class_names(const std::string& root, const std::vector<std::string>& wnids) {
  std::map<std::string, std::string> first_name;
  std::ifstream f(fs::path(root) / "words.txt");
  for (std::string line; std::getline(f, line);) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) continue;
    std::string name = line.substr(tab + 1);
    name = name.substr(0, name.find(','));
    while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
    if (!name.empty()) first_name[line.substr(0, tab)] = name;
  }
  std::map<std::string, int> uses;
  for (const auto& w : wnids)
    if (first_name.count(w)) ++uses[first_name[w]];
  std::vector<std::string> names;
  for (const auto& w : wnids) {
    const auto it = first_name.find(w);
    names.push_back(it == first_name.end() ? w : uses[it->second] > 1 ? it->second + " (" + w + ")" : it->second);
  }
  return names;
}

ImageSet read_image_folder(const std::string& root, int size, std::vector<std::string>* classes, int threads,
                           BadImages bad) {
  CAC_CHECK(fs::is_directory(root), "{}: image folder not found", root);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root)) {
    std::error_code ec;  // a link loop or dangling link is no class folder
    if (e.is_directory(ec) && !ec) names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  CAC_CHECK(!names.empty(), "{}: no class sub-folders (expected root/<class>/*.jpg or *.png)", root);
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  for (size_t k = 0; k < names.size(); ++k) {
    std::vector<std::string> f;
    for (const auto& e : fs::directory_iterator(fs::path(root) / names[k]))
      if (is_image_name(e.path())) f.push_back(e.path().string());
    std::sort(f.begin(), f.end());
    CAC_CHECK(!f.empty(), "{}/{}: no JPEG or PNG images", root, names[k]);
    for (auto& x : f) {
      files.push_back(x);
      labels.push_back(int64_t(k));
    }
  }
  if (classes) *classes = names;
  return decode_set(fs::path(root).filename().string(), files, labels, size, threads, bad);
}

}  // namespace cac::data
