#pragma once
// Files written whole or not at all: into a temporary beside the destination, then renamed over it
// (atomic on POSIX filesystems), so a crash or Ctrl-C never leaves half a checkpoint or cache. The
// temporary's name is unique per process and call: concurrent writers of one file (trials run in
// parallel sharing the normalisation or TinyImageNet cache) never write into each other's.
#include <string>

namespace cac {

// "<path>.tmp.<pid>.<n>": where to write before commit_file.
std::string temp_path_for(const std::string& path);
// Renames `tmp` over `path`; on failure removes `tmp` and throws cac::Error naming `path`.
void commit_file(const std::string& tmp, const std::string& path);
// `text` to `path` through a temporary; cac::Error naming the file if it cannot be written.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace cac
