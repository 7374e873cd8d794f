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

// One field of a CSV row as RFC 4180 writes it: as it is, or, where it holds a comma, a double
// quote or a line break, in double quotes with its quotes doubled.
std::string csv_field(const std::string& field);

}  // namespace cac
