#include "models/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>
#include <type_traits>
#include <nlohmann/json.hpp>

#include "data/json_fields.h"  // header-only: typed fields and bounded parsing

namespace cac {

using json = nlohmann::json;

namespace {
const char* st_dtype(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::BF16: return "BF16";
  }
  return "?";
}
DType parse_dtype(const std::string& s, const std::string& path, const std::string& name) {
  if (s == "F32") return DType::F32;
  if (s == "F64") return DType::F64;
  if (s == "I64") return DType::I64;
  if (s == "U8") return DType::U8;
  if (s == "BF16") return DType::BF16;
  fail("{}: tensor {} has unsupported dtype {}", path, name, s);
}
// A JSON array of integers as T; a float (1e300) or negative where T is unsigned would otherwise be
// converted with undefined behaviour rather than rejected.
template <class T>
std::vector<T> integers(const json& j, const std::string& path, const std::string& name, const char* field) {
  CAC_CHECK(j.is_array(), "{}: tensor {}: {} is not a list", path, name, field);
  std::vector<T> out;
  for (const json& v : j) {
    CAC_CHECK(std::is_signed_v<T> ? v.is_number_integer() : v.is_number_unsigned(),
              "{}: tensor {}: {} holds {}, not a{} integer", path, name, field, v.dump(),
              std::is_signed_v<T> ? "n" : " non-negative");
    out.push_back(v.get<T>());
  }
  return out;
}
}  // namespace

void save_safetensors(const std::string& path, const NamedTensorList& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  size_t offset = 0;
  std::vector<Tensor> host;
  for (const auto& [name, t] : tensors) {
    Tensor h = t.to(Device::CPU);
    header[name] = {{"dtype", st_dtype(h.dtype())}, {"shape", h.shape()}, {"data_offsets", {offset, offset + h.nbytes()}}};
    offset += h.nbytes();
    host.push_back(h);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string head = header.dump();
  while ((8 + head.size()) % 8 != 0) head.push_back(' ');  // align the data to 8 bytes
  std::string out(8, '\0');
  const uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  out += head;
  for (const Tensor& h : host) out.append(static_cast<const char*>(h.raw()), h.nbytes());
  write_file_atomic(path, out);
}

namespace {
// The tensors' byte ranges must cover the data section exactly once, in some order (the
// safetensors rule): overlapping ranges would read one tensor's bytes as another's.
void check_ranges_tile(std::vector<std::tuple<uint64_t, uint64_t, std::string>> ranges, size_t data_size,
                       const std::string& path) {
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  std::string previous;
  for (const auto& [start, end, name] : ranges) {
    CAC_CHECK(start >= covered, "{}: tensors {} and {} overlap (bytes {}-{} of the data): corrupt file", path, previous,
              name, start, covered);
    CAC_CHECK(start == covered, "{}: unused bytes {}-{} of the data before tensor {}: corrupt file", path, covered,
              start, name);
    covered = end;
    if (end > start) previous = name;
  }
  CAC_CHECK(covered == data_size, "{}: unused bytes {}-{} at the end of the data: corrupt or not a safetensors file",
            path, covered, data_size);
}
}  // namespace

std::string first_non_finite(const NamedTensorList& tensors) {
  for (const auto& [name, t] : tensors) {
    if (t.dtype() != DType::F32 && t.dtype() != DType::F64 && t.dtype() != DType::BF16) continue;
    const std::vector<double> v = t.to(DType::F64).to_vector<double>();
    for (double x : v)
      if (!std::isfinite(x)) return name;
  }
  return "";
}

Safetensors load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  CAC_CHECK(f.good(), "{}: checkpoint not found or unreadable", path);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CAC_CHECK(bytes.size() >= 8, "{}: {} bytes is too short for a safetensors file (corrupt or truncated)",
            path, bytes.size());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[size_t(i)])) << (8 * i);
  CAC_CHECK(n <= bytes.size() - 8, "{}: header length {} exceeds the file ({} bytes): corrupt or truncated",
            path, n, bytes.size());
  const json header = jsonf::parse(bytes.substr(8, n), path + " (its header)");
  CAC_CHECK(header.is_object(), "{}: corrupt header (not a JSON object)", path);
  const size_t data_size = bytes.size() - 8 - n;
  Safetensors st;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    try {
      if (it.key() == "__metadata__") {
        CAC_CHECK(it.value().is_object(), "{}: corrupt header (__metadata__ is not an object)", path);
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          st.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
        continue;
      }
      const DType dt = parse_dtype(it.value().at("dtype").get<std::string>(), path, it.key());
      const Shape shape = integers<int64_t>(it.value().at("shape"), path, it.key(), "shape");
      const auto off = integers<uint64_t>(it.value().at("data_offsets"), path, it.key(), "data_offsets");
      CAC_CHECK(off.size() == 2 && off[0] <= off[1] && off[1] <= data_size,
                "{}: tensor {} points outside the data section (truncated file?)", path, it.key());
      // The shape's byte count, checked against the data it points at before anything is allocated
      // (a corrupt shape must not ask for terabytes, nor wrap around to a small number).
      for (int64_t d : shape) CAC_CHECK(d >= 0, "{}: tensor {} has a negative dimension", path, it.key());
      int64_t need = 0;
      CAC_CHECK(shape_nbytes(shape, dt, &need), "{}: tensor {} has an impossible shape {}", path, it.key(),
                shape_str(shape));
      CAC_CHECK(off[1] - off[0] == uint64_t(need), "{}: tensor {} holds {} bytes but {} of {} needs {}", path, it.key(),
                off[1] - off[0], dtype_name(dt), shape_str(shape), need);
      Tensor t = Tensor::empty(shape, dt);
      std::memcpy(t.raw(), bytes.data() + 8 + n + off[0], t.nbytes());
      st.tensors[it.key()] = t;
      ranges.emplace_back(off[0], off[1], it.key());
    } catch (const json::exception& e) {
      fail("{}: entry {} is malformed ({})", path, it.key(), e.what());
    }
  }
  check_ranges_tile(ranges, data_size, path);
  return st;
}

void restore_tensors(const Safetensors& from, const NamedTensorList& into, const std::string& path) {
  for (const auto& [name, t] : into) {
    auto it = from.tensors.find(name);
    CAC_CHECK(it != from.tensors.end(), "{}: tensor {} is missing (a checkpoint of another model?)", path, name);
    CAC_CHECK(it->second.shape() == t.shape() && it->second.dtype() == t.dtype(),
              "{}: tensor {} is {} but the model needs {}", path, name, it->second.str(), t.str());
    CAC_CHECK(first_non_finite({{name, it->second}}).empty(),
              "{}: tensor {} holds NaN or Inf (a diverged run's checkpoint?)", path, name);
    Tensor dst = t;
    dst.copy_from(it->second.to(t.device()));
  }
}

}  // namespace cac
