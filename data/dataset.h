#pragma once
// In-memory image sets. Images are uint8, N x H x W x C (channels last): the layout JPEG decoders,
// IDX and the transforms work in; the loader converts to normalised float N x C x H x W for the
// network. Labels are int64 in the dataset's own numbering until a benchmark remaps them.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace cac::data {

struct ImageSet {
  std::string name;       // e.g. "FashionMNIST train"
  Tensor images;          // u8 [N, H, W, C]
  Tensor labels;          // i64 [N]
  int64_t size() const { return labels.defined() ? labels.numel() : 0; }
  int height() const { return int(images.dim(1)); }
  int width() const { return int(images.dim(2)); }
  int channels() const { return int(images.dim(3)); }
  const uint8_t* image(int64_t i) const;  // H*W*C bytes
};

// A subset as indices into a set, with labels already remapped (e.g. to 0..K-1).
struct Subset {
  const ImageSet* source = nullptr;
  std::vector<int64_t> indices;
  std::vector<int64_t> labels;  // one per index
  int64_t size() const { return int64_t(indices.size()); }
};

// `pixels` RGB pixels to grey: ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B, rounded), as PIL's
// convert("L") does, for greyscale networks (MNIST-style) shown colour images.
void rgb_to_grey(const uint8_t* rgb, size_t pixels, uint8_t* grey);
// The set with `channels` (1 or 3) channels per pixel: grey replicated to RGB, RGB to luma; the
// set itself where it has them already. Other channel counts are an error naming the set.
ImageSet with_channels(const ImageSet& set, int channels);

// Concatenates sets of the same image shape (e.g. the five CIFAR-10 training batches).
ImageSet concat(const std::vector<ImageSet>& parts, const std::string& name);

}  // namespace cac::data
