#pragma once
// Files written whole or not at all: into a temporary beside the destination, then renamed over it
// (atomic on POSIX filesystems), so a crash or Ctrl-C never leaves half a checkpoint or cache. The
// temporary's name is unique per process and call: concurrent writers of one file (trials run in
// parallel sharing the normalisation or TinyImageNet cache) never write into each other's. Every
// exit that unwinds (an error, a stop signal) removes the temporary; what a killed process leaves,
// remove_stale_temps clears once that process is gone.
#include <string>

namespace cac {

// A temporary "<path>.tmp.<pid>.<n>" for `path`: removed by the destructor unless committed.
class TempFile {
 public:
  explicit TempFile(std::string path);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return tmp_; }    // where to write
  const std::string& target() const { return path_; }  // where commit() puts it
  // Renames the temporary over the target; on failure removes it and throws cac::Error naming the target.
  void commit();

 private:
  std::string path_, tmp_;
  bool committed_ = false;
};

// `text` to `path` through a temporary; cac::Error naming the file if it cannot be written.
void write_file_atomic(const std::string& path, const std::string& text);

// Removes the temporaries under `dir` (not below) that a process no longer running left behind
// (killed mid-write); with `target`, only those of that file name. Returns how many it removed.
int remove_stale_temps(const std::string& dir, const std::string& target = "");

// Crash injection for the robustness tests: with CAC_CRASH_AT=write:N the process kills itself
// (SIGKILL) halfway through writing the Nth file written through a temporary; with rename:N, just
// before the Nth rename of a finished temporary into place. Unset: nothing happens.
enum class CrashPoint { Write, Rename };
void crash_point(CrashPoint at);

// One field of a CSV row as RFC 4180 writes it: as it is, or, where it holds a comma, a double
// quote or a line break, in double quotes with its quotes doubled.
std::string csv_field(const std::string& field);

}  // namespace cac
