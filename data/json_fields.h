#pragma once
// Typed fields of the JSON files users and earlier runs hand the programs (config.json,
// deploy.json, split and dataset tables, the normalisation cache). nlohmann's get<T> converts a
// float to an int, or 1e300 to a float, with undefined behaviour instead of failing; these reject
// what T cannot hold, with the file and the field in the message. Include from .cpp files only.
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace cac::jsonf {

// What an error message shows of a value: at most `limit` characters of its JSON text.
inline std::string shown(const nlohmann::json& value, size_t limit = 80) {
  std::string text = value.dump();
  return text.size() <= limit ? text : text.substr(0, limit) + "... (" + std::to_string(text.size()) + " characters)";
}

// The files these programs read nest a few levels; a hostile one nested 100,000 deep overflowed the
// stack when its value was printed. Parsing stops at this depth with an error naming the file.
inline constexpr int kMaxDepth = 64;
// `text` parsed, or cac::Error "WHERE: not valid JSON (...)" / "nested deeper than 64 levels".
inline nlohmann::json parse(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      CAC_CHECK(depth <= kMaxDepth, "{}: JSON nested deeper than {} levels: not a file these programs read", where,
                kMaxDepth);
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();
    if (why.size() > 200) why = why.substr(0, 200) + "...";
    fail("{}: not valid JSON ({})", where, why);
  }
}

// `value` as T, or cac::Error "WHERE: FIELD must be ...".
template <class T>
T as(const nlohmann::json& value, const std::string& where, const std::string& field) {
  if constexpr (std::is_same_v<T, bool>) {
    CAC_CHECK(value.is_boolean(), "{}: {} must be true or false (found {})", where, field, shown(value));
    return value.get<bool>();
  } else if constexpr (std::is_same_v<T, std::string>) {
    CAC_CHECK(value.is_string(), "{}: {} must be a string (found {})", where, field, shown(value));
    return value.get<std::string>();
  } else if constexpr (std::is_integral_v<T>) {
    bool fits = false;
    if (value.is_number_unsigned()) {
      fits = value.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max());
    } else if (value.is_number_integer()) {  // negative
      fits = std::is_signed_v<T> && value.get<int64_t>() >= int64_t(std::numeric_limits<T>::min());
    }
    CAC_CHECK(fits, "{}: {} must be an integer in {}..{} (found {})", where, field, std::numeric_limits<T>::min(),
              std::numeric_limits<T>::max(), shown(value));
    return value.is_number_unsigned() ? T(value.get<uint64_t>()) : T(value.get<int64_t>());
  } else {
    static_assert(std::is_floating_point_v<T>, "jsonf::as: unsupported type");
    CAC_CHECK(value.is_number(), "{}: {} must be a number (found {})", where, field, shown(value));
    const double v = value.get<double>();
    CAC_CHECK(std::isfinite(v) && std::fabs(v) <= double(std::numeric_limits<T>::max()),
              "{}: {} must be a finite number (found {})", where, field, shown(value));
    return T(v);
  }
}

// j[key]; a missing key (or j not an object) is an error naming the file and the key.
inline const nlohmann::json& member(const nlohmann::json& j, const char* key, const std::string& where) {
  CAC_CHECK(j.is_object(), "{}: expected a JSON object (found {})", where, j.type_name());
  const auto it = j.find(key);
  CAC_CHECK(it != j.end(), "{}: missing field '{}'", where, key);
  return *it;
}

// j[key] as T.
template <class T>
T field(const nlohmann::json& j, const char* key, const std::string& where) {
  return as<T>(member(j, key, where), where, key);
}

// `value` (the field `key`) as a list of T.
template <class T>
std::vector<T> as_list(const nlohmann::json& v, const std::string& where, const char* key) {
  CAC_CHECK(v.is_array(), "{}: {} must be a list (found {})", where, key, v.type_name());
  std::vector<T> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) out.push_back(as<T>(v[i], where, fmt::format("{}[{}]", key, i)));
  return out;
}

// j[key] as a list of T.
template <class T>
std::vector<T> list(const nlohmann::json& j, const char* key, const std::string& where) {
  return as_list<T>(member(j, key, where), where, key);
}

}  // namespace cac::jsonf
