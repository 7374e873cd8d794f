#pragma once
// Checkpoints in the safetensors format: an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw little-endian data. Tensor names
// are PyTorch state_dict keys (encoder.conv1.weight, ..., anchors), so the file loads into the
// authors' PyTorch model; "__metadata__" holds string metadata (epoch, settings, RNG counters).
// Writes are atomic (temporary file + rename).
#include <map>
#include <string>
#include <vector>

#include "core/files.h"  // write_file_atomic, used with checkpoints by the apps
#include "core/tensor.h"

namespace cac {

using NamedTensorList = std::vector<std::pair<std::string, Tensor>>;

void save_safetensors(const std::string& path, const NamedTensorList& tensors,
                      const std::map<std::string, std::string>& metadata);

struct Safetensors {
  std::map<std::string, Tensor> tensors;  // CPU tensors
  std::map<std::string, std::string> metadata;
};
// Validates the header (length, JSON, dtypes, shapes, byte ranges that tile the data section: no
// overlap, no unused bytes) and throws cac::Error naming the file and the problem.
Safetensors load_safetensors(const std::string& path);

// The name of the first floating-point tensor holding NaN or Inf ("" when all are finite): what must
// never be written as a checkpoint or loaded into a model.
std::string first_non_finite(const NamedTensorList& tensors);

// Copies every tensor of `into` from `from` (same names, shapes and dtypes, any device); the error
// names the file, the tensor and the mismatch, or the tensor holding NaN or Inf.
void restore_tensors(const Safetensors& from, const NamedTensorList& into, const std::string& path);

}  // namespace cac
