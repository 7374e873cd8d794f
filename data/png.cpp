#include "data/png.h"

#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace cac::data {

namespace {
constexpr uint8_t kSignature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
// As for JPEG: a header may claim any size, so the claim is checked before anything is allocated.
constexpr uint64_t kMaxPngPixels = 100'000'000;
// deflate's best case is about 1032:1, so less compressed data than expected / kMaxDeflateRatio
// cannot hold the image: refuse that before allocating what the header claims.
constexpr uint64_t kMaxDeflateRatio = 1032;

uint32_t be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

struct Header {
  uint32_t width = 0, height = 0;
  int depth = 0, colour = 0, interlace = 0;
  int channels = 0;  // samples per pixel
};

// Samples per pixel of each colour type, or 0 for a type the specification does not define.
int channels_of(int colour) {
  switch (colour) {
    case 0: return 1;  // greyscale
    case 2: return 3;  // RGB
    case 3: return 1;  // palette index
    case 4: return 2;  // greyscale + alpha
    case 6: return 4;  // RGBA
    default: return 0;
  }
}

bool depth_allowed(int colour, int depth) {
  switch (colour) {
    case 0: return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case 3: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    default: return depth == 8 || depth == 16;
  }
}

// A sub-image of the pixel grid: pixels (x0 + i*dx, y0 + j*dy). Adam7 stores seven of them.
struct Pass {
  int x0, y0, dx, dy;
};
constexpr Pass kWhole[1] = {{0, 0, 1, 1}};
constexpr Pass kAdam7[7] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                            {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};

uint64_t extent(uint32_t size, int start, int step) {
  return size > uint32_t(start) ? (uint64_t(size) - start + step - 1) / step : 0;
}

uint64_t row_bytes(uint64_t pixels, const Header& h) {
  return (pixels * uint64_t(h.channels) * uint64_t(h.depth) + 7) / 8;
}

// Sample `index` of an unfiltered row; 16-bit samples give their high byte.
unsigned sample(const uint8_t* row, uint64_t index, int depth) {
  if (depth == 8) return row[index];
  if (depth == 16) return row[2 * index];
  const uint64_t bit = index * uint64_t(depth);
  return (row[bit / 8] >> (8 - depth - int(bit % 8))) & ((1u << depth) - 1);
}

uint8_t paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  if (pa <= pb && pa <= pc) return uint8_t(a);
  return uint8_t(pb <= pc ? b : c);
}

// Undoes one row's filter in place. `prev` is the row above, already unfiltered (zeros for the
// first row of a pass); `bpp` is the bytes of one pixel, at least 1.
void unfilter(int type, uint8_t* row, const uint8_t* prev, size_t n, size_t bpp) {
  switch (type) {
    case 0: break;
    case 1:  // Sub
      for (size_t i = bpp; i < n; ++i) row[i] = uint8_t(row[i] + row[i - bpp]);
      break;
    case 2:  // Up
      for (size_t i = 0; i < n; ++i) row[i] = uint8_t(row[i] + prev[i]);
      break;
    case 3:  // Average
      for (size_t i = 0; i < n; ++i) row[i] = uint8_t(row[i] + (((i >= bpp ? row[i - bpp] : 0) + prev[i]) >> 1));
      break;
    case 4:  // Paeth
      for (size_t i = 0; i < n; ++i)
        row[i] = uint8_t(row[i] + paeth(i >= bpp ? row[i - bpp] : 0, prev[i], i >= bpp ? prev[i - bpp] : 0));
      break;
  }
}

Header parse_header(const uint8_t* d, uint32_t len, const std::string& path) {
  CAC_CHECK(len == 13, "{}: the IHDR chunk has {} bytes, not 13 (the file is corrupt)", path, len);
  Header h;
  h.width = be32(d);
  h.height = be32(d + 4);
  h.depth = d[8];
  h.colour = d[9];
  h.interlace = d[12];
  h.channels = channels_of(h.colour);
  CAC_CHECK(h.width > 0 && h.height > 0 && h.width <= 0x7fffffffu && h.height <= 0x7fffffffu,
            "{}: invalid image size {}x{} in the PNG header", path, h.width, h.height);
  CAC_CHECK(h.channels > 0, "{}: unknown PNG colour type {} (the file is corrupt)", path, h.colour);
  CAC_CHECK(depth_allowed(h.colour, h.depth), "{}: bit depth {} is not allowed with PNG colour type {}",
            path, h.depth, h.colour);
  CAC_CHECK(d[10] == 0 && d[11] == 0, "{}: unknown PNG compression or filter method ({}, {})", path, d[10], d[11]);
  CAC_CHECK(h.interlace <= 1, "{}: unknown PNG interlace method {}", path, h.interlace);
  CAC_CHECK(uint64_t(h.width) * h.height <= kMaxPngPixels,
            "{}: the image claims {}x{} pixels, more than this reader's limit of {} megapixels", path, h.width,
            h.height, (unsigned long long)(kMaxPngPixels / 1'000'000));
  return h;
}

std::string chunk_name(const uint8_t* t) {
  std::string s;
  for (int i = 0; i < 4; ++i) s += (t[i] >= 32 && t[i] < 127) ? char(t[i]) : '?';
  return s;
}
}  // namespace

bool has_png_signature(const uint8_t* bytes, size_t size) {
  return size >= 8 && std::memcmp(bytes, kSignature, 8) == 0;
}

std::vector<uint8_t> decode_png_rgb_bytes(const std::vector<uint8_t>& file, const std::string& path,
                                          int* width, int* height) {
  CAC_CHECK(has_png_signature(file.data(), file.size()), "{}: not a PNG file (no PNG signature)", path);
  Header h;
  bool have_header = false, idat_done = false, ended = false;
  std::vector<uint8_t> palette;  // RGB triples
  std::vector<uint8_t> idat;
  size_t pos = 8;
  while (!ended) {
    CAC_CHECK(pos + 8 <= file.size(), "{}: the file ends early, before the IEND chunk (truncated?)", path);
    const uint32_t len = be32(&file[pos]);
    const uint8_t* type = &file[pos + 4];
    const std::string name = chunk_name(type);
    CAC_CHECK(len <= 0x7fffffffu, "{}: the {} chunk claims {} bytes (the file is corrupt)", path, name, len);
    CAC_CHECK(uint64_t(pos) + 12 + len <= file.size(), "{}: the file ends inside the {} chunk (truncated?)", path,
              name);
    const uint8_t* data = type + 4;
    const bool critical = !(type[0] & 0x20);
    const uint32_t crc = uint32_t(crc32(crc32(0, nullptr, 0), type, 4 + len));
    pos += 12 + size_t(len);
    if (crc != be32(data + len)) {
      CAC_CHECK(!critical, "{}: CRC mismatch in the {} chunk (the file is corrupt)", path, name);
      continue;  // a damaged ancillary chunk carries nothing the pixels need
    }
    CAC_CHECK(have_header || name == "IHDR", "{}: the first chunk is {}, not IHDR (the file is corrupt)", path,
              name);
    if (name == "IHDR") {
      CAC_CHECK(!have_header, "{}: a second IHDR chunk (the file is corrupt)", path);
      h = parse_header(data, len, path);
      have_header = true;
    } else if (name == "PLTE") {
      CAC_CHECK(len % 3 == 0 && len >= 3 && len <= 768,
                "{}: the PLTE chunk has {} bytes, not 3 per entry for 1 to 256 entries", path, len);
      palette.assign(data, data + len);
    } else if (name == "IDAT") {
      CAC_CHECK(!idat_done, "{}: IDAT chunks are not consecutive (the file is corrupt)", path);
      idat.insert(idat.end(), data, data + len);
    } else if (name == "IEND") {
      ended = true;
    } else {
      CAC_CHECK(!critical, "{}: unknown critical chunk {} (not a standard PNG)", path, name);
    }
    if (!idat.empty() && name != "IDAT") idat_done = true;
  }
  CAC_CHECK(!idat.empty(), "{}: no image data (IDAT chunk)", path);
  CAC_CHECK(h.colour != 3 || !palette.empty(), "{}: a palette image without a PLTE chunk", path);

  const Pass* passes = h.interlace ? kAdam7 : kWhole;
  const int num_passes = h.interlace ? 7 : 1;
  uint64_t expected = 0;
  for (int p = 0; p < num_passes; ++p) {
    const uint64_t pw = extent(h.width, passes[p].x0, passes[p].dx), ph = extent(h.height, passes[p].y0, passes[p].dy);
    if (pw && ph) expected += ph * (1 + row_bytes(pw, h));
  }
  CAC_CHECK(expected <= uint64_t(idat.size()) * kMaxDeflateRatio + 1024,
            "{}: {} bytes of compressed data cannot hold a {}x{} image (truncated?)", path, idat.size(), h.width,
            h.height);

  std::vector<uint8_t> raw(expected);
  z_stream zs{};
  CAC_CHECK(inflateInit(&zs) == Z_OK, "{}: cannot start zlib", path);
  zs.next_in = idat.data();
  zs.avail_in = uInt(idat.size());  // <= the file's size, which fits: chunks are < 2^31 bytes each
  zs.next_out = raw.data();
  uint64_t out_left = expected;
  int rc = Z_OK;
  while (out_left > 0) {  // avail_out is 32-bit: feed the output in pieces
    const uInt piece = uInt(std::min<uint64_t>(out_left, 1u << 30));
    zs.avail_out = piece;
    rc = inflate(&zs, Z_NO_FLUSH);
    out_left -= piece - zs.avail_out;
    if (rc != Z_OK) break;  // the stream ended, the input ran out (Z_BUF_ERROR) or the data is damaged
  }
  const std::string zmsg = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  CAC_CHECK(rc != Z_DATA_ERROR && rc != Z_MEM_ERROR && rc != Z_STREAM_ERROR && rc != Z_NEED_DICT,
            "{}: damaged compressed image data ({})", path, zmsg.empty() ? "zlib error" : zmsg);
  // Extra data after the image is ignored, as libpng does; too little is an error.
  CAC_CHECK(out_left == 0, "{}: the image data ends early ({} of {} bytes; truncated?)", path,
            expected - out_left, expected);

  std::vector<uint8_t> out(size_t(h.width) * h.height * 3);
  const size_t bpp = std::max<size_t>(1, size_t(h.channels) * h.depth / 8);
  const unsigned grey_scale = h.depth < 8 ? 255u / ((1u << h.depth) - 1) : 1u;
  const size_t palette_size = palette.size() / 3;
  uint8_t* line = raw.data();
  for (int p = 0; p < num_passes; ++p) {
    const Pass& ps = passes[p];
    const uint64_t pw = extent(h.width, ps.x0, ps.dx), ph = extent(h.height, ps.y0, ps.dy);
    if (!pw || !ph) continue;
    const size_t rb = size_t(row_bytes(pw, h));
    const std::vector<uint8_t> zeros(rb, 0);
    const uint8_t* prev = zeros.data();
    for (uint64_t r = 0; r < ph; ++r) {
      const int filter = line[0];
      uint8_t* row = line + 1;
      CAC_CHECK(filter <= 4, "{}: row {} has filter type {} (0-4 are defined; the file is corrupt)", path,
                ps.y0 + r * ps.dy, filter);
      unfilter(filter, row, prev, rb, bpp);
      const uint64_t y = ps.y0 + r * ps.dy;
      for (uint64_t i = 0; i < pw; ++i) {
        uint8_t* o = &out[(y * h.width + ps.x0 + i * ps.dx) * 3];
        switch (h.colour) {
          case 0:
          case 4:
            o[0] = o[1] = o[2] = uint8_t(sample(row, i * h.channels, h.depth) * grey_scale);
            break;
          case 2:
          case 6:
            for (int c = 0; c < 3; ++c) o[c] = uint8_t(sample(row, i * h.channels + c, h.depth));
            break;
          case 3: {
            const unsigned k = sample(row, i, h.depth);
            CAC_CHECK(k < palette_size, "{}: palette index {} at pixel ({}, {}), but the palette has {} entries",
                      path, k, ps.x0 + i * ps.dx, y, palette_size);
            std::memcpy(o, &palette[3 * k], 3);
            break;
          }
        }
      }
      prev = row;
      line += 1 + rb;
    }
  }
  *width = int(h.width);
  *height = int(h.height);
  return out;
}

std::vector<uint8_t> decode_png_rgb(const std::string& path, int* width, int* height) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  CAC_CHECK(f.good(), "{}: cannot open", path);
  std::vector<uint8_t> bytes(size_t(f.tellg()));
  f.seekg(0);
  f.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
  CAC_CHECK(f.good(), "{}: read error", path);
  return decode_png_rgb_bytes(bytes, path, width, height);
}

}  // namespace cac::data
