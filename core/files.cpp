#include "core/files.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace cac {

std::string temp_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
}

void commit_file(const std::string& tmp, const std::string& path) {
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    fail("{}: cannot move the finished file into place ({})", path, ec.message());
  }
}

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = temp_path_for(path);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    CAC_CHECK(f.good(), "{}: cannot write (check the folder exists and is writable)", path);
    f.write(text.data(), std::streamsize(text.size()));
    f.flush();
    if (!f.good()) {
      f.close();
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      fail("{}: write failed (disk full?)", path);
    }
  }
  commit_file(tmp, path);
}

std::string csv_field(const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) return field;
  std::string out = "\"";
  for (char ch : field) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

}  // namespace cac
