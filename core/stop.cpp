#include "core/stop.h"

#include <atomic>
#include <csignal>

namespace cac {

namespace {
// Lock-free, so the handler may write it.
std::atomic<int> g_stop{0};
static_assert(std::atomic<int>::is_always_lock_free);
extern "C" void on_stop_signal(int sig) { g_stop = sig; }
}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

int stop_signal() { return g_stop.load(); }

const char* stop_words(int sig) { return sig == SIGTERM ? "terminated (SIGTERM)" : "interrupted"; }

Stopped::Stopped(int sig) : Error(fmt::format("{}; stopped before finishing", stop_words(sig))), sig_(sig) {}

}  // namespace cac
