#pragma once
// SIGINT (Ctrl-C) and SIGTERM (a batch scheduler's time limit, `kill`) as a request to stop: the
// programs' long loops check it once per batch and wind down, so every file stays whole and no
// temporary is left behind. A second signal of the same kind is handled the same way.
#include "core/error.h"

namespace cac {

// Installs the handlers (SIGINT, SIGTERM); from then on a signal is recorded, not fatal.
void install_stop_handlers();
// The signal received since then, or 0.
int stop_signal();
// The shell's exit code for death by that signal: 130 (SIGINT), 143 (SIGTERM).
inline int stop_exit_code(int sig) { return 128 + sig; }
// "interrupted" (SIGINT) or "terminated (SIGTERM)".
const char* stop_words(int sig);

// Thrown by a pass that a stop signal cut short.
class Stopped : public Error {
 public:
  explicit Stopped(int sig);
  int signal() const { return sig_; }

 private:
  int sig_;
};
// Throws Stopped when a stop signal has arrived.
inline void throw_if_stopped() {
  if (const int sig = stop_signal()) throw Stopped(sig);
}

}  // namespace cac
