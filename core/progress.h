#pragma once
// Progress of long work, one line: on a terminal a bar redrawn in place (at most 4 times a second),
// elsewhere (a log file, a pipe) a plain line every 10 s, so logs stay short; then a closing line
// with the rate. Work that finishes quickly says nothing unless asked to (quiet_below_s).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace cac {

// "#####......" of `width` characters, filled in proportion to done / total.
std::string progress_bar(int64_t done, int64_t total, int width = 24);

class ProgressLine {
 public:
  struct Options {
    FILE* out = stderr;
    int tty = -1;               // 1: redraw in place, 0: plain lines; -1: whether `out` is a terminal
    double interval_s = -1;     // between lines; -1: 0.25 s on a terminal, 10 s elsewhere
    double quiet_below_s = 0;   // work done sooner than this, with no line shown yet, stays silent
    std::string unit = "images";
  };
  // Lines read "PREFIX WHAT [bar] done/total UNIT  eta Ns" and "PREFIX WHAT: total UNIT in S s (R UNIT/s)".
  ProgressLine(std::string prefix, std::string what, int64_t total, Options options);
  ProgressLine(std::string prefix, std::string what, int64_t total) : ProgressLine(std::move(prefix), std::move(what), total, Options{}) {}
  // Safe from several threads: one of them draws while the others go on.
  void update(int64_t done);
  // The closing line (once; also when done < total, e.g. after an error was caught).
  void finish();

 private:
  std::string prefix_, what_;
  int64_t total_;
  Options o_;
  bool tty_;
  double interval_;
  std::mutex mu_;
  double last_ = -1e9;
  bool shown_ = false, finished_ = false;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
  double elapsed() const;
};

}  // namespace cac
