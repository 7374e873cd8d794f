/* Writes the PNG fixtures of DataPng.DecodesEveryFormatWrittenByLibpng with libpng, an encoder
 * independent of data/png.cpp: every colour type and bit depth, plain and Adam7-interlaced, all five
 * row filters allowed (libpng picks one per row). Not part of the build; the .png files are
 * committed. Rebuild them with:
 *   cc -O2 tests/data/png/make_fixtures.c -lpng -o /tmp/make_fixtures && /tmp/make_fixtures tests/data/png
 * Sample (x, y, c) of a d-bit image is fixture_sample(); tests/test_data.cpp computes the same. */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>

enum { W = 37, H = 29 };

static unsigned fixture_sample(int x, int y, int c, int depth) {
  if (depth == 16) return (unsigned)(x * 2039 + y * 4099 + c * 8191 + x * y * 37) % 65536u;
  return (unsigned)(x * 7 + y * 13 + c * 29 + (x * y) % 5) % (1u << depth);
}
static int palette_entries(int depth) { return depth == 8 ? 200 : depth == 4 ? 11 : 1 << depth; }

static int write_one(const char *dir, int colour, int depth, int interlace) {
  const int channels = colour == 0 || colour == 3 ? 1 : colour == 4 ? 2 : colour == 2 ? 3 : 4;
  char path[512];
  snprintf(path, sizeof path, "%s/c%d-d%d%s.png", dir, colour, depth, interlace ? "-adam7" : "");
  FILE *f = fopen(path, "wb");
  if (!f) return 1;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) return 1;
  png_init_io(png, f);
  png_set_filter(png, 0, PNG_ALL_FILTERS);
  png_set_IHDR(png, info, W, H, depth, colour, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (colour == 3) {
    png_color pal[256];
    for (int k = 0; k < palette_entries(depth); ++k) {
      pal[k].red = (png_byte)((k * 37 + 11) % 256);
      pal[k].green = (png_byte)((k * 91 + 3) % 256);
      pal[k].blue = (png_byte)((k * 53 + 200) % 256);
    }
    png_set_PLTE(png, info, pal, palette_entries(depth));
  }
  png_write_info(png, info);
  const size_t row_bytes = ((size_t)W * channels * depth + 7) / 8;
  png_bytep rows[H];
  for (int y = 0; y < H; ++y) {
    rows[y] = calloc(row_bytes, 1);
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < channels; ++c) {
        unsigned v = fixture_sample(x, y, c, depth);
        if (colour == 3) v %= (unsigned)palette_entries(depth);
        const size_t i = (size_t)x * channels + c;
        if (depth == 16) {
          rows[y][2 * i] = (png_byte)(v >> 8);
          rows[y][2 * i + 1] = (png_byte)(v & 255);
        } else if (depth == 8) {
          rows[y][i] = (png_byte)v;
        } else {
          const size_t bit = i * depth;
          rows[y][bit / 8] |= (png_byte)(v << (8 - depth - bit % 8));
        }
      }
  }
  png_write_image(png, rows);
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  for (int y = 0; y < H; ++y) free(rows[y]);
  return fclose(f) != 0;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  static const int combos[][2] = {{0, 1}, {0, 2}, {0, 4}, {0, 8}, {0, 16}, {2, 8}, {2, 16}, {3, 1},
                                  {3, 2}, {3, 4}, {3, 8}, {4, 8}, {4, 16}, {6, 8}, {6, 16}};
  for (size_t i = 0; i < sizeof combos / sizeof combos[0]; ++i)
    for (int interlace = 0; interlace < 2; ++interlace)
      if (write_one(argv[1], combos[i][0], combos[i][1], interlace)) return 1;
  return 0;
}
