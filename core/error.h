#pragma once
// One exception type for every user-facing error. Messages name the operation and the offending
// values (shapes, files, flags) so the user can act without a debugger.
#include <fmt/format.h>
#include <stdexcept>
#include <string>
#include <utility>

namespace cac {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace cac

#define CAC_CHECK(cond, ...)      \
  do {                            \
    if (!(cond)) ::cac::fail(__VA_ARGS__); \
  } while (0)
