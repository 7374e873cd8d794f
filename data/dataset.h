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

// Concatenates sets of the same image shape (e.g. the five CIFAR-10 training batches).
ImageSet concat(const std::vector<ImageSet>& parts, const std::string& name);

}  // namespace cac::data
