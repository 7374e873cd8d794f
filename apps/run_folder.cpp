#include "apps/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <fmt/ranges.h>
#include <vector>

#include "core/error.h"
#include "core/files.h"

namespace fs = std::filesystem;

namespace cac::app {

namespace {
constexpr const char* kLockName = ".cac.lock";

// What the lock file says of its holder ("cac_train (PID 1234)"), which writes it just after taking
// the lock: a holder that has only just taken it gets a moment to.
std::string holder_of(int fd) {
  for (int tries = 0; tries < 50; ++tries) {
    char buf[128] = {0};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    std::string s = n > 0 ? std::string(buf, size_t(n)) : std::string();
    if (!s.empty() && s.back() == '\n') return s.substr(0, s.size() - 1);
    ::usleep(10000);
  }
  return "another process";
}

// The files a run and its evaluation write into the run folder, by name. `first_epoch`: those a run
// killed or stopped in its first epoch can have (nothing to resume from, nothing worth keeping).
struct RunFile {
  const char* name;
  bool first_epoch;
};
constexpr RunFile kRunFiles[] = {
    {"config.json", true},       {"train.log", true},     {"metrics.csv", true}, {"best.safetensors", true},
    {"last.safetensors", false}, {"deploy.json", false},  {"eval.json", false},  {"scores.csv", false},
    {"report.html", false},      {"report.png", false},   {"deploy-knn.safetensors", false},
    {"deploy-mahalanobis.safetensors", false},
};
const RunFile* run_file(const std::string& name) {
  for (const RunFile& f : kRunFiles)
    if (name == f.name) return &f;
  return nullptr;
}
// Epoch rows in RUN/metrics.csv (0 where there is none).
int metrics_rows(const fs::path& dir) {
  std::ifstream f(dir / "metrics.csv");
  int lines = 0;
  for (std::string line; std::getline(f, line);) lines += !line.empty();
  return std::max(lines - 1, 0);
}
}  // namespace

RunFolderLock::RunFolderLock(const std::string& dir, const char* program) {
  const std::string path = (fs::path(dir) / kLockName).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  CAC_CHECK(fd_ >= 0, "{}: cannot open the run folder's lock file {} ({})", dir, path, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = holder_of(fd_);
    ::close(fd_);
    CAC_CHECK(err == EWOULDBLOCK, "{}: cannot lock the run folder ({})", dir, std::strerror(err));
    fail("{} is in use by {}: one process at a time may train or evaluate a run folder; wait for it to finish "
         "(or stop it), or use another folder", dir, holder);
  }
  const std::string me = fmt::format("{} (PID {})\n", program, ::getpid());
  // The lock holds without the note too (a second process then names no PID).
  const bool noted = ::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) == ssize_t(me.size());
  (void)noted;
  remove_stale_temps(dir);
}

RunFolderLock::~RunFolderLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

std::string prepare_new_run_folder(const std::string& dir, ExistingRun existing) {
  std::vector<std::string> run, other;  // the run's files; files that are not a run's
  bool first_epoch = metrics_rows(dir) <= 1;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name == kLockName) continue;
    const RunFile* f = run_file(name);
    (f ? run : other).push_back(name);
    first_epoch = first_epoch && (!f || f->first_epoch);
  }
  std::sort(run.begin(), run.end());
  std::sort(other.begin(), other.end());
  CAC_CHECK(other.empty() || !run.empty(), "{} is not empty ({}) and holds no run: a run needs a folder of its own; "
            "choose a new --out", dir, fmt::join(other, ", "));
  if (run.empty()) return "";
  CAC_CHECK(existing == ExistingRun::Overwrite || first_epoch,
            "{} already holds a run ({}): continue it with cac_train --resume {}, train into a new folder, or pass "
            "--overwrite to delete that run's files and start again", dir, fmt::join(run, ", "), dir);
  CAC_CHECK(existing == ExistingRun::Overwrite || other.empty(), "{} holds files that are not a run's ({}): a run "
            "needs a folder of its own; choose a new --out", dir, fmt::join(other, ", "));
  for (const std::string& name : run) fs::remove(fs::path(dir) / name);
  if (existing == ExistingRun::Refuse || first_epoch)
    return fmt::format("{} held a run stopped in its first epoch (no checkpoint to resume); starting it over", dir);
  return fmt::format("--overwrite: deleted the old run's files in {} ({}){}", dir, fmt::join(run, ", "),
                     other.empty() ? "" : fmt::format("; kept: {} (not written by cac_train or cac_eval)",
                                                      fmt::join(other, ", ")));
}

}  // namespace cac::app
