#include "core/progress.h"

#include <unistd.h>

#include <algorithm>

#include <fmt/format.h>

namespace cac {

std::string progress_bar(int64_t done, int64_t total, int width) {
  const int filled = std::clamp(int(width * double(done) / double(std::max<int64_t>(total, 1))), 0, width);
  return std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.');
}

ProgressLine::ProgressLine(std::string prefix, std::string what, int64_t total, Options options)
    : prefix_(std::move(prefix)), what_(std::move(what)), total_(total), o_(std::move(options)) {
  tty_ = o_.tty >= 0 ? o_.tty == 1 : isatty(fileno(o_.out)) != 0;
  interval_ = o_.interval_s >= 0 ? o_.interval_s : tty_ ? 0.25 : 10.0;
}

double ProgressLine::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

void ProgressLine::update(int64_t done) {
  if (done >= total_) return finish();
  std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
  if (!lock.owns_lock() || finished_) return;  // another thread is drawing
  const double secs = elapsed();
  if (secs - last_ < interval_ || secs < o_.quiet_below_s) return;
  last_ = secs;
  shown_ = true;
  const double eta = done > 0 ? secs / double(done) * double(total_ - done) : 0;
  const std::string line = fmt::format("{}{} [{}] {}/{} {}  eta {:.0f}s", prefix_, what_, progress_bar(done, total_), done,
                                       total_, o_.unit, eta);
  std::fprintf(o_.out, "%s%s%s", tty_ ? "\r\033[K" : "", line.c_str(), tty_ ? "" : "\n");
  std::fflush(o_.out);
}

void ProgressLine::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  const double secs = elapsed();
  if (!shown_ && secs < o_.quiet_below_s) return;
  const std::string line = fmt::format("{}{}: {} {} in {:.1f} s ({:.0f} {}/s)", prefix_, what_, total_, o_.unit, secs,
                                       double(total_) / std::max(secs, 1e-9), o_.unit);
  std::fprintf(o_.out, "%s%s\n", tty_ ? "\r\033[K" : "", line.c_str());
  std::fflush(o_.out);
}

}  // namespace cac
