#include "core/files.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace cac {

namespace {
// The pid in a temporary's name "<target>.tmp.<pid>.<n>", or 0 where `name` is not one (of `target`).
long temp_owner(const std::string& name, const std::string& target) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || at == 0 || (!target.empty() && name.compare(0, at, target) != 0)) return 0;
  if (!target.empty() && at != target.size()) return 0;
  const char* p = name.c_str() + at + 5;
  const char* end = name.c_str() + name.size();
  long pid = 0;
  const auto [dot, ec] = std::from_chars(p, end, pid);
  if (ec != std::errc() || dot == end || *dot != '.' || pid <= 0) return 0;
  uint64_t n = 0;
  const auto [rest, ec2] = std::from_chars(dot + 1, end, n);
  return ec2 == std::errc() && rest == end ? pid : 0;
}

bool process_gone(long pid) { return ::kill(pid_t(pid), 0) != 0 && errno == ESRCH; }

// CAC_CRASH_AT, read once: which event kills the process, and at which count.
struct CrashPlan {
  CrashPoint at = CrashPoint::Write;
  long n = 0;  // 0: never
};
CrashPlan crash_plan() {
  CrashPlan plan;
  const char* env = std::getenv("CAC_CRASH_AT");
  if (!env) return plan;
  const std::string s(env);
  const size_t colon = s.find(':');
  const std::string kind = s.substr(0, colon);
  if (colon == std::string::npos || (kind != "write" && kind != "rename")) return plan;
  plan.at = kind == "write" ? CrashPoint::Write : CrashPoint::Rename;
  const auto [end, ec] = std::from_chars(s.data() + colon + 1, s.data() + s.size(), plan.n);
  if (ec != std::errc() || end != s.data() + s.size()) plan.n = 0;
  return plan;
}
}  // namespace

void crash_point(CrashPoint at) {
  static const CrashPlan plan = crash_plan();
  static std::atomic<long> seen[2] = {0, 0};
  if (plan.n == 0 || plan.at != at) return;
  if (++seen[int(at)] == plan.n) ::kill(::getpid(), SIGKILL);
}

TempFile::TempFile(std::string path) : path_(std::move(path)) {
  static std::atomic<uint64_t> counter{0};
  tmp_ = fmt::format("{}.tmp.{}.{}", path_, ::getpid(), counter++);
}

TempFile::~TempFile() {
  if (committed_) return;
  std::error_code ignored;
  fs::remove(tmp_, ignored);
}

void TempFile::commit() {
  crash_point(CrashPoint::Rename);
  std::error_code ec;
  fs::rename(tmp_, path_, ec);
  if (ec) fail("{}: cannot move the finished file into place ({})", path_, ec.message());
  committed_ = true;
  const fs::path p(path_);
  remove_stale_temps(p.has_parent_path() ? p.parent_path().string() : ".", p.filename().string());
}

void write_file_atomic(const std::string& path, const std::string& text) {
  TempFile tmp(path);
  {
    std::ofstream f(tmp.path(), std::ios::binary | std::ios::trunc);
    CAC_CHECK(f.good(), "{}: cannot write (check the folder exists and is writable)", path);
    f.write(text.data(), std::streamsize(text.size() / 2));
    f.flush();
    crash_point(CrashPoint::Write);
    f.write(text.data() + text.size() / 2, std::streamsize(text.size() - text.size() / 2));
    f.flush();
    CAC_CHECK(f.good(), "{}: write failed (disk full?)", path);
  }
  tmp.commit();
}

int remove_stale_temps(const std::string& dir, const std::string& target) {
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const long pid = temp_owner(it->path().filename().string(), target);
    if (pid == 0 || pid == long(::getpid()) || !process_gone(pid)) continue;
    std::error_code ignored;
    removed += fs::remove(it->path(), ignored) ? 1 : 0;
  }
  return removed;
}

std::string csv_field(const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) return field;
  std::string out = "\"";
  for (char ch : field) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

}  // namespace cac
